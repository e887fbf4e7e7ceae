package oauth

// Device Bound Session Credentials (W3C webappsec-dbsc, Editor's Draft,
// "dbsc-1"): the browser binds Ward's SSO session to a key it keeps
// (TPM-backed in Chrome). After a sign-in Ward offers registration; once a
// session is bound, the SSO cookie alone no longer signs the browser in:
// a short-lived bound cookie is required as well, and only a proof signed
// by the registered key (over a fresh, single-use challenge) renews it.
// Sessions of browsers without DBSC keep the plain SSO cookie.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

// DBSC endpoint paths.
const (
	PathDBSCRegister = "/dbsc/register"
	PathDBSCRefresh  = "/dbsc/refresh"
)

// DBSC headers (draft §9).
const (
	hdrDBSCRegistration = "Secure-Session-Registration"
	hdrDBSCChallenge    = "Secure-Session-Challenge"
	hdrDBSCResponse     = "Secure-Session-Response"
	hdrDBSCSessionID    = "Sec-Secure-Session-Id"
)

const (
	cookieDBSC = "ward_dbsc"
	// dbscCookieTTL is the life of the bound cookie: how long a copied
	// cookie pair works without the key.
	dbscCookieTTL = 10 * time.Minute
	// dbscChallengeTTL bounds how long a challenge can be answered.
	dbscChallengeTTL = 5 * time.Minute
	dbscJWTType      = "dbsc+jwt"
	maxDBSCJWT       = 8 << 10
)

var errDBSCProof = errors.New("invalid DBSC proof")

// dbscChallenge is what a challenge seals: the session it is for and a
// random nonce (so every challenge is unique and single use).
type dbscChallenge struct {
	SID   string `json:"s"`
	Nonce string `json:"n"`
}

// newDBSCChallenge returns a stateless challenge for sid; purpose keeps
// registration and refresh challenges apart.
func (p *Provider) newDBSCChallenge(purpose, sid string) (string, error) {
	return p.seal(purpose, dbscChallengeTTL, sid, dbscChallenge{SID: sid, Nonce: secret.RandomString(12)})
}

// dbscSessionIdentifier is the opaque session_identifier of the draft's
// session config: derived from the sid, but not revealing it.
func (p *Provider) dbscSessionIdentifier(sid string) string {
	return base64.RawURLEncoding.EncodeToString(p.mac("dbsc-id|" + sid)[:16])
}

// offerDBSC adds the registration header to a sign-in response.
func (p *Provider) offerDBSC(w http.ResponseWriter, sid string) {
	ch, err := p.newDBSCChallenge("dbsc-reg", sid)
	if err != nil {
		return // no offer: the session stays cookie-only
	}
	w.Header().Set(hdrDBSCRegistration, `(ES256);path="`+PathDBSCRegister+`";challenge="`+ch+`"`)
}

// Bound cookie: sid, expiry and the key's thumbprint under a MAC, so it
// is worthless for another session, after its expiry, or after the
// session were bound to another key.
func (p *Provider) dbscCookieMAC(sid, jkt string, exp int64) string {
	return base64.RawURLEncoding.EncodeToString(p.mac("dbsc|" + sid + "|" + jkt + "|" + strconv.FormatInt(exp, 10)))
}

func (p *Provider) setDBSCCookie(w http.ResponseWriter, sess *model.Session) {
	exp := p.c.Now().Add(dbscCookieTTL).Unix()
	v := strconv.FormatInt(exp, 10) + "." + p.dbscCookieMAC(sess.ID, sess.DBSCKeyJKT, exp)
	http.SetCookie(w, &http.Cookie{Name: p.cookieName(cookieDBSC), Value: v, Path: "/", MaxAge: int(dbscCookieTTL / time.Second),
		HttpOnly: true, Secure: p.secure, SameSite: http.SameSiteLaxMode})
}

// dbscSatisfied reports whether the request may use sess as a signed-in
// browser: always for an unbound session, and for a bound one only with
// a valid, unexpired bound cookie.
func (p *Provider) dbscSatisfied(r *http.Request, sess *model.Session) bool {
	if sess.DBSCKeyJKT == "" {
		return true
	}
	c, err := r.Cookie(p.cookieName(cookieDBSC))
	if err != nil {
		return false
	}
	es, mac, ok := strings.Cut(c.Value, ".")
	if !ok {
		return false
	}
	exp, err := strconv.ParseInt(es, 10, 64)
	if err != nil || p.c.Now().Unix() >= exp {
		return false
	}
	return hmac.Equal([]byte(mac), []byte(p.dbscCookieMAC(sess.ID, sess.DBSCKeyJKT, exp)))
}

// dbscConfig is the draft's session instructions JSON (§9.6-9.9).
type dbscConfig struct {
	SessionIdentifier string           `json:"session_identifier"`
	RefreshURL        string           `json:"refresh_url"`
	Scope             dbscScope        `json:"scope"`
	Credentials       []dbscCredential `json:"credentials"`
}

type dbscScope struct {
	Origin             string `json:"origin"`
	IncludeSite        bool   `json:"include_site"`
	ScopeSpecification []any  `json:"scope_specification"`
}

type dbscCredential struct {
	Type       string `json:"type"`
	Name       string `json:"name"`
	Attributes string `json:"attributes"`
}

func (p *Provider) writeDBSCConfig(w http.ResponseWriter, sess *model.Session) {
	attrs := "Path=/; HttpOnly; SameSite=Lax"
	if p.secure {
		attrs += "; Secure"
	}
	cfg := dbscConfig{
		SessionIdentifier: p.dbscSessionIdentifier(sess.ID),
		RefreshURL:        PathDBSCRefresh,
		Scope:             dbscScope{Origin: originOf(p.issuer), ScopeSpecification: []any{}},
		Credentials:       []dbscCredential{{Type: "cookie", Name: p.cookieName(cookieDBSC), Attributes: attrs}},
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(cfg)
}

// dbscProof is a verified DBSC JWT.
type dbscProof struct {
	JWK     json.RawMessage // header jwk, as sent (registration)
	JKT     string
	Jti     string
	Subject string
}

type dbscHeader struct {
	Alg  string          `json:"alg"`
	Typ  string          `json:"typ"`
	JWK  json.RawMessage `json:"jwk"`
	Crit json.RawMessage `json:"crit"`
	Kid  json.RawMessage `json:"kid"`
	Jku  json.RawMessage `json:"jku"`
	X5u  json.RawMessage `json:"x5u"`
	X5c  json.RawMessage `json:"x5c"`
}

type dbscClaims struct {
	Jti           string          `json:"jti"`
	Aud           json.RawMessage `json:"aud"`
	Authorization *string         `json:"authorization"`
	Sub           string          `json:"sub"`
}

var b64Strict = base64.RawURLEncoding.Strict()

// verifyDBSCJWT checks a DBSC JWT strictly: compact JWS, typ dbsc+jwt,
// alg ES256 only, no key references other than an embedded P-256 public
// jwk, and a valid signature by that key (registration, stored == nil) or
// by the stored key (refresh; an embedded jwk must then be the same key).
// aud, when present, must name the endpoint.
func verifyDBSCJWT(token string, stored *jose.JSONWebKey, storedJKT, aud string) (*dbscProof, error) {
	if token == "" || len(token) > maxDBSCJWT {
		return nil, errDBSCProof
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errDBSCProof
	}
	hb, err1 := b64Strict.DecodeString(parts[0])
	cb, err2 := b64Strict.DecodeString(parts[1])
	sig, err3 := b64Strict.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, errDBSCProof
	}
	var h dbscHeader
	if err := strictJSON(hb, &h); err != nil {
		return nil, errDBSCProof
	}
	if h.Alg != "ES256" || h.Typ != dbscJWTType || h.Crit != nil || h.Kid != nil || h.Jku != nil || h.X5u != nil || h.X5c != nil {
		return nil, errDBSCProof
	}
	key, jkt := stored, storedJKT
	if len(h.JWK) > 0 {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(h.JWK); err != nil || !k.Valid() || !k.IsPublic() {
			return nil, errDBSCProof
		}
		t, err := dpop.Thumbprint(&k)
		if err != nil {
			return nil, errDBSCProof
		}
		if stored != nil && !hmac.Equal([]byte(t), []byte(storedJKT)) {
			return nil, errDBSCProof
		}
		key, jkt = &k, t
	}
	if key == nil {
		return nil, errDBSCProof
	}
	pub, ok := key.Key.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() || len(sig) != 64 {
		return nil, errDBSCProof
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(pub, digest[:], r, s) {
		return nil, errDBSCProof
	}
	var c dbscClaims
	if err := strictJSON(cb, &c); err != nil || c.Jti == "" {
		return nil, errDBSCProof
	}
	if c.Authorization != nil && *c.Authorization != "" {
		return nil, errDBSCProof // Ward sends no authorization parameter
	}
	if len(c.Aud) > 0 {
		var a string
		if err := json.Unmarshal(c.Aud, &a); err != nil || a != aud {
			return nil, errDBSCProof
		}
	}
	return &dbscProof{JWK: h.JWK, JKT: jkt, Jti: c.Jti, Subject: c.Sub}, nil
}

// strictJSON decodes one JSON object, refusing duplicate member names
// (which parsers resolve differently) and trailing data.
func strictJSON(b []byte, v any) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	d := json.NewDecoder(strings.NewReader(string(b)))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return errDBSCProof
	}
	n := 0
	for d.More() {
		if _, err := d.Token(); err != nil {
			return err
		}
		var skip json.RawMessage
		if err := d.Decode(&skip); err != nil {
			return err
		}
		n++
	}
	if n != len(m) {
		return errDBSCProof
	}
	return json.Unmarshal(b, v)
}

// consumeDBSCChallenge opens a challenge of purpose for sid and records it
// as used (single use across instances).
func (p *Provider) consumeDBSCChallenge(r *http.Request, purpose, ch, sid string) error {
	var c dbscChallenge
	if err := p.unseal(purpose, ch, sid, &c); err != nil || !hmac.Equal([]byte(c.SID), []byte(sid)) {
		return errDBSCProof
	}
	sum := sha256.Sum256([]byte(ch))
	key := "dbsc:" + base64.RawURLEncoding.EncodeToString(sum[:])
	return p.c.Store.RecordJTI(r.Context(), key, p.c.Now().Add(dbscChallengeTTL+time.Minute))
}

// dbscSession returns the live session of the request's SSO cookie.
func (p *Provider) dbscSession(r *http.Request) *model.Session {
	sid := p.sessionFromCookie(r)
	if sid == "" {
		return nil
	}
	sess, err := p.c.Store.GetSession(r.Context(), sid)
	if err != nil || !sess.Active(p.c.Now()) {
		return nil
	}
	return sess
}

func dbscRefuse(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, msg, status)
}

// handleDBSCRegister binds the session to the key of a registration JWT
// answering the challenge Ward sent at sign-in.
func (p *Provider) handleDBSCRegister(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ri := p.info(r)
	sess := p.dbscSession(r)
	if sess == nil {
		dbscRefuse(w, http.StatusUnauthorized, "not signed in")
		return
	}
	fail := func(reason string) {
		ev := ri.event(model.EventSessionDBSCRegistered)
		ev.Outcome, ev.Reason, ev.Actor, ev.UserID, ev.SessionID = model.OutcomeFailure, reason, sess.UserID, sess.UserID, sess.ID
		_ = p.events.Emit(ctx, ev)
		dbscRefuse(w, http.StatusBadRequest, "registration refused")
	}
	if sess.DBSCKeyJKT != "" {
		fail("already_bound")
		return
	}
	pr, err := verifyDBSCJWT(r.Header.Get(hdrDBSCResponse), nil, "", p.url(PathDBSCRegister))
	if err != nil || len(pr.JWK) == 0 {
		fail("invalid_proof")
		return
	}
	if err := p.consumeDBSCChallenge(r, "dbsc-reg", pr.Jti, sess.ID); err != nil {
		fail("invalid_challenge")
		return
	}
	// Store the canonical public JWK, not the bytes as sent.
	var k jose.JSONWebKey
	_ = k.UnmarshalJSON(pr.JWK)
	pub, err := k.Public().MarshalJSON()
	if err != nil {
		fail("invalid_proof")
		return
	}
	if err := p.c.Store.BindSessionKey(ctx, sess.ID, pr.JKT, pub); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) || errors.Is(err, store.ErrNotFound) {
			fail("already_bound")
			return
		}
		p.c.Log.ErrorContext(ctx, "bind session key", "correlation_id", ri.CorrID, "err", err)
		dbscRefuse(w, http.StatusInternalServerError, "server error")
		return
	}
	sess.DBSCKeyJKT, sess.DBSCKey = pr.JKT, pub
	ev := ri.event(model.EventSessionDBSCRegistered)
	ev.Actor, ev.UserID, ev.SessionID = sess.UserID, sess.UserID, sess.ID
	ev.Data = map[string]string{"session_binding": model.SessionBindingDBSC, "jkt": pr.JKT}
	if err := p.events.Emit(ctx, ev); err != nil {
		dbscRefuse(w, http.StatusInternalServerError, "server error")
		return
	}
	p.setDBSCCookie(w, sess)
	p.writeDBSCConfig(w, sess)
}

// handleDBSCRefresh renews the bound cookie for a proof by the registered
// key over a fresh challenge; without one it answers 401 and a challenge.
func (p *Provider) handleDBSCRefresh(w http.ResponseWriter, r *http.Request) {
	sess := p.dbscSession(r)
	if sess == nil || sess.DBSCKeyJKT == "" {
		dbscRefuse(w, http.StatusUnauthorized, "no bound session")
		return
	}
	if id := r.Header.Get(hdrDBSCSessionID); id != "" && !hmac.Equal([]byte(id), []byte(p.dbscSessionIdentifier(sess.ID))) {
		dbscRefuse(w, http.StatusUnauthorized, "unknown session")
		return
	}
	var stored jose.JSONWebKey
	if err := stored.UnmarshalJSON(sess.DBSCKey); err != nil {
		dbscRefuse(w, http.StatusInternalServerError, "server error")
		return
	}
	if resp := r.Header.Get(hdrDBSCResponse); resp != "" {
		pr, err := verifyDBSCJWT(resp, &stored, sess.DBSCKeyJKT, p.url(PathDBSCRefresh))
		if err == nil {
			err = p.consumeDBSCChallenge(r, "dbsc-refresh", pr.Jti, sess.ID)
		}
		if err == nil {
			p.setDBSCCookie(w, sess)
			p.writeDBSCConfig(w, sess)
			return
		}
		// A wrong or stale proof gets a fresh challenge, nothing else.
	}
	ch, err := p.newDBSCChallenge("dbsc-refresh", sess.ID)
	if err != nil {
		dbscRefuse(w, http.StatusInternalServerError, "server error")
		return
	}
	w.Header().Set(hdrDBSCChallenge, `"`+ch+`";id="`+p.dbscSessionIdentifier(sess.ID)+`"`)
	dbscRefuse(w, http.StatusUnauthorized, "proof of possession required")
}
