package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// dbscKey is the scripted browser's session key; jwt builds the JWTs the
// way the DBSC draft has a browser build them.
type dbscKey struct{ k *ecdsa.PrivateKey }

func newDBSCKey(t testing.TB) dbscKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return dbscKey{k}
}

func (d dbscKey) jwk(t testing.TB) json.RawMessage {
	b, err := (&jose.JSONWebKey{Key: &d.k.PublicKey}).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func b64json(t testing.TB, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// sign returns header.claims.ES256-signature.
func (d dbscKey) sign(t testing.TB, hdr, claims map[string]any) string {
	t.Helper()
	in := b64json(t, hdr) + "." + b64json(t, claims)
	sum := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, d.k, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// registration is the registration JWT: the key in the header, the
// challenge as jti.
func (d dbscKey) registration(t testing.TB, in *wardtest.Instance, challenge string) string {
	return d.sign(t, map[string]any{"alg": "ES256", "typ": "dbsc+jwt", "jwk": d.jwk(t)},
		map[string]any{"jti": challenge, "aud": in.URL + "/dbsc/register", "iat": in.Clock.Now().Unix()})
}

// refresh is the refresh JWT: signed by the session key, no jwk.
func (d dbscKey) refresh(t testing.TB, in *wardtest.Instance, challenge string) string {
	return d.sign(t, map[string]any{"alg": "ES256", "typ": "dbsc+jwt"},
		map[string]any{"jti": challenge, "aud": in.URL + "/dbsc/refresh", "iat": in.Clock.Now().Unix()})
}

var (
	regHeaderRE = regexp.MustCompile(`^\(ES256\);path="(/dbsc/register)";challenge="([A-Za-z0-9_.-]+)"$`)
	challengeRE = regexp.MustCompile(`^"([A-Za-z0-9_.-]+)";id="([A-Za-z0-9_-]+)"$`)
)

// dbscPost posts to a DBSC endpoint with the given headers.
func dbscPost(t testing.TB, in *wardtest.Instance, b *http.Client, path string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, in.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp, sb.String()
}

func setCookieNamed(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// ssoState says what /authorize with prompt=none does for browser b:
// "code" (signed in) or the error.
func ssoState(t testing.TB, in *wardtest.Instance, b *http.Client) string {
	t.Helper()
	_, ch := wardtest.PKCE()
	resp, body := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("native", ch, url.Values{"prompt": {"none"}}), nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("prompt=none: status %d: %.200s", resp.StatusCode, body)
	}
	u, _ := url.Parse(resp.Header.Get("Location"))
	if u.Query().Get("code") != "" {
		return "code"
	}
	return u.Query().Get("error")
}

// interactiveShowsLogin reports whether /authorize without prompt shows
// the login page (not signed in) rather than redirecting with a code.
func interactiveShowsLogin(t testing.TB, in *wardtest.Instance, b *http.Client) bool {
	t.Helper()
	_, ch := wardtest.PKCE()
	resp, body := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("native", ch, nil), nil)
	return resp.StatusCode == http.StatusOK && strings.Contains(body, `name="password"`)
}

// signInDBSC signs bob in and returns the registration challenge.
func signInDBSC(t testing.TB, in *wardtest.Instance, b *http.Client) string {
	t.Helper()
	_, ch := wardtest.PKCE()
	loc, resp := in.LoginResponse(t, b, in.AuthorizeURL("native", ch, nil), "bob", wardtest.BobPassword, "")
	if loc.Query().Get("code") == "" {
		t.Fatalf("sign-in: no code in %s", loc)
	}
	m := regHeaderRE.FindStringSubmatch(resp.Header.Get("Secure-Session-Registration"))
	if m == nil {
		t.Fatalf("Secure-Session-Registration = %q", resp.Header.Get("Secure-Session-Registration"))
	}
	return m[2]
}

// copyCookie puts browser from's cookie name into a fresh browser.
func stealCookies(t testing.TB, in *wardtest.Instance, from *http.Client, names ...string) *http.Client {
	t.Helper()
	u, _ := url.Parse(in.URL)
	jar, _ := cookiejar.New(nil)
	var cs []*http.Cookie
	for _, c := range from.Jar.Cookies(u) {
		for _, n := range names {
			if c.Name == n {
				cs = append(cs, &http.Cookie{Name: c.Name, Value: c.Value})
			}
		}
	}
	if len(cs) != len(names) {
		t.Fatalf("browser has %d of cookies %v", len(cs), names)
	}
	jar.SetCookies(u, cs)
	b := in.Browser()
	b.Jar = jar
	return b
}

// challenge asks /dbsc/refresh for a challenge and checks its form.
func refreshChallenge(t testing.TB, in *wardtest.Instance, b *http.Client, wantID string) string {
	t.Helper()
	resp, _ := dbscPost(t, in, b, "/dbsc/refresh", map[string]string{"Sec-Secure-Session-Id": wantID})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("refresh without proof: status %d, want 401", resp.StatusCode)
	}
	m := challengeRE.FindStringSubmatch(resp.Header.Get("Secure-Session-Challenge"))
	if m == nil || m[2] != wantID {
		t.Fatalf("Secure-Session-Challenge = %q (want id %q)", resp.Header.Get("Secure-Session-Challenge"), wantID)
	}
	if setCookieNamed(resp, "ward_dbsc") != nil {
		t.Fatal("a challenge response set the bound cookie")
	}
	return m[1]
}

func TestDBSC(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	ctx := context.Background()
	b := in.Browser()
	key := newDBSCKey(t)

	regChallenge := signInDBSC(t, in, b)
	if got := ssoState(t, in, b); got != "code" {
		t.Fatalf("before registration SSO = %q, want code", got)
	}
	sid := sessionOf(t, in, b)

	// Registration.
	regJWT := key.registration(t, in, regChallenge)
	resp, body := dbscPost(t, in, b, "/dbsc/register", map[string]string{"Secure-Session-Response": regJWT})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("register: %d %s", resp.StatusCode, body)
	}
	var cfg struct {
		SessionIdentifier string `json:"session_identifier"`
		RefreshURL        string `json:"refresh_url"`
		Scope             struct {
			Origin string `json:"origin"`
		} `json:"scope"`
		Credentials []struct{ Type, Name, Attributes string } `json:"credentials"`
	}
	if err := json.Unmarshal([]byte(body), &cfg); err != nil {
		t.Fatalf("session config: %v: %s", err, body)
	}
	if cfg.SessionIdentifier == "" || cfg.SessionIdentifier == sid || cfg.RefreshURL != "/dbsc/refresh" || cfg.Scope.Origin != in.URL ||
		len(cfg.Credentials) != 1 || cfg.Credentials[0].Type != "cookie" || cfg.Credentials[0].Name != "ward_dbsc" {
		t.Fatalf("session config: %s", body)
	}
	bc := setCookieNamed(resp, "ward_dbsc")
	if bc == nil || !bc.HttpOnly || bc.MaxAge != 600 || bc.SameSite != http.SameSiteLaxMode {
		t.Fatalf("bound cookie: %+v", bc)
	}
	sess, err := in.App.Store.GetSession(ctx, sid)
	if err != nil || sess.DBSCKeyJKT == "" || len(sess.DBSCKey) == 0 {
		t.Fatalf("session not bound: %+v %v", sess, err)
	}
	var pub jose.JSONWebKey
	if err := pub.UnmarshalJSON(sess.DBSCKey); err != nil || !pub.IsPublic() {
		t.Fatalf("stored key: %s %v", sess.DBSCKey, err)
	}

	// Replayed registration: refused, nothing changes.
	if resp, _ := dbscPost(t, in, b, "/dbsc/register", map[string]string{"Secure-Session-Response": regJWT}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("replayed registration: status %d", resp.StatusCode)
	}
	// A second key cannot take over the bound session.
	other := newDBSCKey(t)
	if resp, _ := dbscPost(t, in, b, "/dbsc/register", map[string]string{"Secure-Session-Response": other.registration(t, in, regChallenge)}); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("re-registration: status %d", resp.StatusCode)
	}
	if s2, _ := in.App.Store.GetSession(ctx, sid); s2.DBSCKeyJKT != sess.DBSCKeyJKT {
		t.Fatal("the session key changed")
	}

	// Both cookies: SSO.
	if got := ssoState(t, in, b); got != "code" {
		t.Fatalf("bound SSO = %q, want code", got)
	}

	// The SSO cookie copied to another browser, without the bound cookie.
	thief := stealCookies(t, in, b, "ward_session")
	if got := ssoState(t, in, thief); got != "login_required" {
		t.Fatalf("stolen SSO cookie: %q, want login_required", got)
	}
	if !interactiveShowsLogin(t, in, thief) {
		t.Fatal("stolen SSO cookie: no login page")
	}
	// The thief can get a challenge but not answer it with its own key.
	ch := refreshChallenge(t, in, thief, cfg.SessionIdentifier)
	if resp, _ := dbscPost(t, in, thief, "/dbsc/refresh", map[string]string{"Secure-Session-Response": other.refresh(t, in, ch)}); resp.StatusCode != http.StatusUnauthorized || setCookieNamed(resp, "ward_dbsc") != nil {
		t.Fatalf("refresh by another key: status %d", resp.StatusCode)
	}
	// ... nor by embedding its own key in the header.
	withJWK := other.sign(t, map[string]any{"alg": "ES256", "typ": "dbsc+jwt", "jwk": other.jwk(t)}, map[string]any{"jti": ch})
	if resp, _ := dbscPost(t, in, thief, "/dbsc/refresh", map[string]string{"Secure-Session-Response": withJWK}); resp.StatusCode != http.StatusUnauthorized || setCookieNamed(resp, "ward_dbsc") != nil {
		t.Fatalf("refresh with a substituted jwk: status %d", resp.StatusCode)
	}
	if got := ssoState(t, in, thief); got != "login_required" {
		t.Fatalf("thief after failed refresh: %q", got)
	}

	// The bound cookie expires: SSO falls back to login until refresh.
	in.Clock.Advance(11 * time.Minute)
	if got := ssoState(t, in, b); got != "login_required" {
		t.Fatalf("expired bound cookie: %q, want login_required", got)
	}
	ch = refreshChallenge(t, in, b, cfg.SessionIdentifier)
	// A stale challenge is refused.
	in.Clock.Advance(6 * time.Minute)
	if resp, _ := dbscPost(t, in, b, "/dbsc/refresh", map[string]string{"Secure-Session-Response": key.refresh(t, in, ch)}); resp.StatusCode != http.StatusUnauthorized || setCookieNamed(resp, "ward_dbsc") != nil {
		t.Fatalf("stale challenge: status %d", resp.StatusCode)
	}
	ch = refreshChallenge(t, in, b, cfg.SessionIdentifier)
	good := key.refresh(t, in, ch)
	resp, body = dbscPost(t, in, b, "/dbsc/refresh", map[string]string{"Secure-Session-Response": good, "Sec-Secure-Session-Id": cfg.SessionIdentifier})
	if resp.StatusCode != http.StatusOK || setCookieNamed(resp, "ward_dbsc") == nil || !strings.Contains(body, cfg.SessionIdentifier) {
		t.Fatalf("refresh: %d %s", resp.StatusCode, body)
	}
	if got := ssoState(t, in, b); got != "code" {
		t.Fatalf("after refresh SSO = %q, want code", got)
	}
	// Replayed refresh proof: refused (challenge used), nothing set.
	if resp, _ := dbscPost(t, in, thief, "/dbsc/refresh", map[string]string{"Secure-Session-Response": good}); resp.StatusCode != http.StatusUnauthorized || setCookieNamed(resp, "ward_dbsc") != nil {
		t.Fatalf("replayed refresh: status %d", resp.StatusCode)
	}
	// A wrong session identifier is refused.
	if resp, _ := dbscPost(t, in, b, "/dbsc/refresh", map[string]string{"Sec-Secure-Session-Id": "nope"}); resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Secure-Session-Challenge") != "" {
		t.Fatalf("wrong session id: status %d", resp.StatusCode)
	}

	// Sign-in log.
	evs, err := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventSessionDBSCRegistered}, SessionID: sid})
	if err != nil {
		t.Fatal(err)
	}
	var ok, failed int
	for _, e := range evs {
		switch {
		case e.Outcome == model.OutcomeSuccess && e.Data["session_binding"] == "dbsc" && e.Data["jkt"] == sess.DBSCKeyJKT:
			ok++
		case e.Outcome == model.OutcomeFailure:
			failed++
		}
	}
	if ok != 1 || failed != 2 || model.EventCodes[model.EventSessionDBSCRegistered] == "" {
		t.Fatalf("dbsc events: %d ok, %d failed of %d", ok, failed, len(evs))
	}
	evs, _ = in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventSignInSucceeded}, SessionID: sid})
	if len(evs) != 1 || evs[0].Data["session_binding"] != "cookie" {
		t.Fatalf("signin event: %+v", evs)
	}
}

// sessionOf returns the sid in browser b's SSO cookie.
func sessionOf(t testing.TB, in *wardtest.Instance, b *http.Client) string {
	t.Helper()
	u, _ := url.Parse(in.URL)
	for _, c := range b.Jar.Cookies(u) {
		if c.Name == "ward_session" {
			sid, _, _ := strings.Cut(c.Value, ".")
			return sid
		}
	}
	t.Fatal("no SSO cookie")
	return ""
}

func TestDBSCRejectsBadRegistrations(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	ctx := context.Background()
	b := in.Browser()
	key := newDBSCKey(t)
	ch := signInDBSC(t, in, b)
	sid := sessionOf(t, in, b)
	other := in.Browser()
	otherCh := signInDBSC(t, in, other)

	hs256 := func() string {
		h := b64json(t, map[string]any{"alg": "HS256", "typ": "dbsc+jwt", "jwk": key.jwk(t)}) + "." + b64json(t, map[string]any{"jti": ch})
		m := hmac.New(sha256.New, []byte("k"))
		m.Write([]byte(h))
		return h + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}()
	none := b64json(t, map[string]any{"alg": "none", "typ": "dbsc+jwt", "jwk": key.jwk(t)}) + "." + b64json(t, map[string]any{"jti": ch}) + "."
	good := key.registration(t, in, ch)
	parts := strings.Split(good, ".")
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[5] ^= 1
	// A private JWK in the header.
	d := key.k.D.FillBytes(make([]byte, 32))
	var priv map[string]any
	json.Unmarshal(key.jwk(t), &priv)
	priv["d"] = base64.RawURLEncoding.EncodeToString(d)
	// High-S twin of a valid signature is still a valid ECDSA signature;
	// not tested here. A signature with r = 0 must fail.
	zero := make([]byte, 64)
	new(big.Int).SetInt64(1).FillBytes(zero[32:])

	for name, jwt := range map[string]string{
		"empty":          "",
		"garbage":        "not-a-jwt",
		"two parts":      parts[0] + "." + parts[1],
		"padded":         parts[0] + "=." + parts[1] + "." + parts[2],
		"alg none":       none,
		"HS256":          hs256,
		"bad signature":  parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig),
		"zero signature": parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(zero),
		"typ JWT":        key.sign(t, map[string]any{"alg": "ES256", "typ": "JWT", "jwk": key.jwk(t)}, map[string]any{"jti": ch}),
		"no typ":         key.sign(t, map[string]any{"alg": "ES256", "jwk": key.jwk(t)}, map[string]any{"jti": ch}),
		"no jwk":         key.sign(t, map[string]any{"alg": "ES256", "typ": "dbsc+jwt"}, map[string]any{"jti": ch}),
		"private jwk":    key.sign(t, map[string]any{"alg": "ES256", "typ": "dbsc+jwt", "jwk": priv}, map[string]any{"jti": ch}),
		"crit":           key.sign(t, map[string]any{"alg": "ES256", "typ": "dbsc+jwt", "jwk": key.jwk(t), "crit": []string{"x"}}, map[string]any{"jti": ch}),
		"wrong aud":      key.sign(t, map[string]any{"alg": "ES256", "typ": "dbsc+jwt", "jwk": key.jwk(t)}, map[string]any{"jti": ch, "aud": "https://evil.example/dbsc/register"}),
		"no jti":         key.sign(t, map[string]any{"alg": "ES256", "typ": "dbsc+jwt", "jwk": key.jwk(t)}, map[string]any{"aud": in.URL + "/dbsc/register"}),
		"forged jti":     key.registration(t, in, "made-up-challenge"),
		"other session":  key.registration(t, in, otherCh),
		"dup claims":     key.signRaw(t, `{"alg":"ES256","typ":"dbsc+jwt","jwk":`+string(key.jwk(t))+`}`, `{"jti":"x","jti":"`+ch+`"}`),
	} {
		resp, _ := dbscPost(t, in, b, "/dbsc/register", map[string]string{"Secure-Session-Response": jwt})
		if resp.StatusCode != http.StatusBadRequest || setCookieNamed(resp, "ward_dbsc") != nil {
			t.Errorf("%s: status %d, want 400", name, resp.StatusCode)
		}
	}
	// Nothing was bound: this browser (as one without DBSC) keeps plain SSO.
	if s, err := in.App.Store.GetSession(ctx, sid); err != nil || s.DBSCKeyJKT != "" {
		t.Fatalf("session bound by a bad registration: %+v %v", s, err)
	}
	if got := ssoState(t, in, b); got != "code" {
		t.Fatalf("unbound SSO = %q, want code", got)
	}
	if resp, _ := dbscPost(t, in, b, "/dbsc/refresh", nil); resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("Secure-Session-Challenge") != "" {
		t.Fatalf("refresh of an unbound session: %d", resp.StatusCode)
	}
	// Without an SSO cookie there is nothing to register.
	if resp, _ := dbscPost(t, in, in.Browser(), "/dbsc/register", map[string]string{"Secure-Session-Response": good}); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("register without session: %d", resp.StatusCode)
	}
	// The real registration still works afterwards.
	if resp, body := dbscPost(t, in, b, "/dbsc/register", map[string]string{"Secure-Session-Response": good}); resp.StatusCode != http.StatusOK {
		t.Fatalf("register: %d %s", resp.StatusCode, body)
	}
}

// signRaw signs literal header and claims JSON.
func (d dbscKey) signRaw(t testing.TB, hdr, claims string) string {
	in := base64.RawURLEncoding.EncodeToString([]byte(hdr)) + "." + base64.RawURLEncoding.EncodeToString([]byte(claims))
	sum := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, d.k, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// A DBSC registration commits with its session.dbsc_registered: with the
// record refused the browser gets a 500 and no bound cookie, and the
// session stays unbound; accepted, the session is bound with exactly
// one record.
func TestDBSCRegistrationCommitsWithEvent(t *testing.T) {
	writeEventInstances(t, func(t *testing.T, in *wardtest.Instance, refuse func(*testing.T, ...model.EventType) func()) {
		ctx := context.Background()
		key := newDBSCKey(t)
		registered := func(sid string) []*store.StoredEvent {
			t.Helper()
			evs, err := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventSessionDBSCRegistered}, SessionID: sid})
			if err != nil {
				t.Fatal(err)
			}
			var ok []*store.StoredEvent
			for _, e := range evs {
				if e.Outcome == model.OutcomeSuccess {
					ok = append(ok, e)
				}
			}
			return ok
		}

		b := in.Browser()
		ch := signInDBSC(t, in, b)
		sid := sessionOf(t, in, b)
		lift := refuse(t, model.EventSessionDBSCRegistered)
		resp, _ := dbscPost(t, in, b, "/dbsc/register", map[string]string{"Secure-Session-Response": key.registration(t, in, ch)})
		lift()
		if resp.StatusCode != http.StatusInternalServerError || setCookieNamed(resp, "ward_dbsc") != nil {
			t.Fatalf("registration with its record refused: status %d, bound cookie %v; want 500 and none", resp.StatusCode, setCookieNamed(resp, "ward_dbsc"))
		}
		if sess, err := in.App.Store.GetSession(ctx, sid); err != nil || sess.DBSCKeyJKT != "" || len(sess.DBSCKey) != 0 {
			t.Fatalf("session after a refused registration: %+v, %v; want unbound", sess, err)
		}
		if n := len(registered(sid)); n != 0 {
			t.Fatalf("%d session.dbsc_registered stored for a refused registration", n)
		}

		b2 := in.Browser()
		ch = signInDBSC(t, in, b2)
		sid2 := sessionOf(t, in, b2)
		resp, body := dbscPost(t, in, b2, "/dbsc/register", map[string]string{"Secure-Session-Response": key.registration(t, in, ch)})
		if resp.StatusCode != http.StatusOK || setCookieNamed(resp, "ward_dbsc") == nil {
			t.Fatalf("registration: %d %s", resp.StatusCode, body)
		}
		sess, err := in.App.Store.GetSession(ctx, sid2)
		if err != nil || sess.DBSCKeyJKT == "" {
			t.Fatalf("session not bound: %+v, %v", sess, err)
		}
		if evs := registered(sid2); len(evs) != 1 || evs[0].Data["jkt"] != sess.DBSCKeyJKT {
			t.Fatalf("session.dbsc_registered stored %+v, want one for %s", evs, sess.DBSCKeyJKT)
		}
	})
}
