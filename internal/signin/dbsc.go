package signin

// Device Bound Session Credentials (W3C webappsec-dbsc, Editor's Draft,
// "dbsc-1"): the browser binds Ward's SSO session to a key it keeps
// (TPM-backed in Chrome). After a sign-in Ward offers registration; once a
// session is bound, the SSO cookie alone no longer signs the browser in:
// a short-lived bound cookie is required as well, and only a proof signed
// by the registered key (over a fresh, single-use challenge) renews it.
// Sessions of browsers without DBSC keep the plain SSO cookie.

import (
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/browser"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/jsonobj"
	"github.com/ward-idp/ward/jws"
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
func (h *Handler) newDBSCChallenge(purpose, sid string) (string, error) {
	return h.browser.Seal(purpose, dbscChallengeTTL, sid, dbscChallenge{SID: sid, Nonce: secret.RandomString(12)})
}

// dbscSessionIdentifier is the opaque session_identifier of the draft's
// session config: derived from the sid, but not revealing it.
func (h *Handler) dbscSessionIdentifier(sid string) string {
	return base64.RawURLEncoding.EncodeToString(h.browser.MAC("dbsc-id|" + sid)[:16])
}

// offerDBSC adds the registration header to a sign-in response.
func (h *Handler) offerDBSC(w http.ResponseWriter, sid string) {
	ch, err := h.newDBSCChallenge("dbsc-reg", sid)
	if err != nil {
		return // no offer: the session stays cookie-only
	}
	w.Header().Set(hdrDBSCRegistration, `(ES256);path="`+PathDBSCRegister+`";challenge="`+ch+`"`)
}

// Bound cookie: sid, expiry and the key's thumbprint under a MAC, so it
// is worthless for another session, after its expiry, or after the
// session were bound to another key.
func (h *Handler) dbscCookieMAC(sid, jkt string, exp int64) string {
	return base64.RawURLEncoding.EncodeToString(h.browser.MAC("dbsc|" + sid + "|" + jkt + "|" + strconv.FormatInt(exp, 10)))
}

func (h *Handler) setDBSCCookie(w http.ResponseWriter, sess *model.Session) {
	exp := h.c.Now().Add(dbscCookieTTL).Unix()
	v := strconv.FormatInt(exp, 10) + "." + h.dbscCookieMAC(sess.ID, sess.DBSCKeyJKT, exp)
	http.SetCookie(w, &http.Cookie{Name: h.browser.CookieName(cookieDBSC), Value: v, Path: "/", MaxAge: int(dbscCookieTTL / time.Second),
		HttpOnly: true, Secure: h.browser.Secure(), SameSite: http.SameSiteLaxMode})
}

// dbscSatisfied reports whether the request may use sess as a signed-in
// browser: always for an unbound session, and for a bound one only with
// a valid, unexpired bound cookie.
func (h *Handler) dbscSatisfied(r *http.Request, sess *model.Session) bool {
	if sess.DBSCKeyJKT == "" {
		return true
	}
	c, err := r.Cookie(h.browser.CookieName(cookieDBSC))
	if err != nil {
		return false
	}
	es, mac, ok := strings.Cut(c.Value, ".")
	if !ok {
		return false
	}
	exp, err := strconv.ParseInt(es, 10, 64)
	if err != nil || h.c.Now().Unix() >= exp {
		return false
	}
	return hmac.Equal([]byte(mac), []byte(h.dbscCookieMAC(sess.ID, sess.DBSCKeyJKT, exp)))
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

func (h *Handler) writeDBSCConfig(w http.ResponseWriter, sess *model.Session) {
	attrs := "Path=/; HttpOnly; SameSite=Lax"
	if h.browser.Secure() {
		attrs += "; Secure"
	}
	cfg := dbscConfig{
		SessionIdentifier: h.dbscSessionIdentifier(sess.ID),
		RefreshURL:        PathDBSCRefresh,
		Scope:             dbscScope{Origin: browser.OriginOf(h.issuer), ScopeSpecification: []any{}},
		Credentials:       []dbscCredential{{Type: "cookie", Name: h.browser.CookieName(cookieDBSC), Attributes: attrs}},
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

// dbscRules: a DBSC proof is an ES256 JWS of type dbsc+jwt (compared
// exactly), without crit, b64, zip or enc.
var dbscRules = jws.Rules{Algs: []jws.Algorithm{jws.ES256}, Typ: dbscJWTType}

// verifyDBSCJWT checks a DBSC JWT strictly: compact JWS, typ dbsc+jwt,
// alg ES256 only, no key references other than an embedded P-256 public
// jwk, and a valid signature by that key (registration, stored == nil) or
// by the stored key (refresh; an embedded jwk must then be the same key).
// aud, when present, must name the endpoint.
func verifyDBSCJWT(token string, stored *jose.JSONWebKey, storedJKT, aud string) (*dbscProof, error) {
	if token == "" || len(token) > maxDBSCJWT {
		return nil, errDBSCProof
	}
	c, err := jws.Split(token)
	if err != nil {
		return nil, errDBSCProof
	}
	var hbuf [8]jsonobj.Member
	h, err1 := jws.ParseHeader(c.Header(), hbuf[:0])
	cb, err2 := jws.DecodeSegment(c.Payload())
	sig, err3 := jws.DecodeSegment(c.Signature())
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, errDBSCProof
	}
	if _, err := dbscRules.Check(&h); err != nil || h.Has(jws.ParamKid) || h.First("jku", "x5u", "x5c") != "" {
		return nil, errDBSCProof
	}
	pub, jkt, err := dbscKey(&h, stored, storedJKT)
	// Raw R || S only, as every JWS (RFC 7518 §3.4); P-256 only.
	if err != nil || pub == nil || !jws.Verify(jws.ES256, pub, c.SigningInput(), sig) {
		return nil, errDBSCProof
	}
	pr, err := dbscClaims(cb, aud)
	if err != nil {
		return nil, err
	}
	pr.JWK, pr.JKT = h.JWK, jkt
	return pr, nil
}

// dbscKey is the key a DBSC JWT must be signed with: the embedded jwk of a
// registration (stored == nil), the stored key of a refresh (whose
// embedded jwk, if any, must be the same key).
func dbscKey(h *jws.Header, stored *jose.JSONWebKey, storedJKT string) (*ecdsa.PublicKey, string, error) {
	if !h.Has(jws.ParamJWK) {
		if stored == nil {
			return nil, "", errDBSCProof
		}
		pub, _ := stored.Key.(*ecdsa.PublicKey)
		return pub, storedJKT, nil
	}
	k, err := jws.ParseJWK(h.JWK, jws.ES256)
	if err != nil {
		return nil, "", errDBSCProof
	}
	if stored != nil && !hmac.Equal([]byte(k.Thumbprint), []byte(storedJKT)) {
		return nil, "", errDBSCProof
	}
	return k.Key.(*ecdsa.PublicKey), k.Thumbprint, nil
}

// dbscClaims reads a DBSC JWT's claims: a jti (the challenge), no
// authorization (Ward sends none), an optional sub, and aud, when
// present, naming the endpoint.
func dbscClaims(cb []byte, aud string) (*dbscProof, error) {
	var cbuf [8]jsonobj.Member
	claims, err := jsonobj.Parse(cb, cbuf[:0])
	if err != nil {
		return nil, errDBSCProof
	}
	jti, ok := jsonobj.Unquote(claims.Get("jti"))
	if !ok || jti == "" {
		return nil, errDBSCProof
	}
	if a, ok := optionalString(claims.Get("authorization")); !ok || a != "" {
		return nil, errDBSCProof
	}
	sub, ok := optionalString(claims.Get("sub"))
	if !ok {
		return nil, errDBSCProof
	}
	if raw := claims.Get("aud"); raw != nil {
		if a, ok := jsonobj.Unquote(raw); !ok || a != aud {
			return nil, errDBSCProof
		}
	}
	return &dbscProof{Jti: jti, Subject: sub}, nil
}

// optionalString reads an optional string claim: absent and null are "".
func optionalString(raw []byte) (string, bool) {
	if raw == nil || string(raw) == "null" {
		return "", true
	}
	return jsonobj.Unquote(raw)
}

// consumeDBSCChallenge opens a challenge of purpose for sid and records it
// as used (single use across instances).
func (h *Handler) consumeDBSCChallenge(r *http.Request, purpose, ch, sid string) error {
	var c dbscChallenge
	if err := h.browser.Unseal(purpose, ch, sid, &c); err != nil || !hmac.Equal([]byte(c.SID), []byte(sid)) {
		return errDBSCProof
	}
	sum := sha256.Sum256([]byte(ch))
	key := "dbsc:" + base64.RawURLEncoding.EncodeToString(sum[:])
	return h.c.Store.RecordJTI(r.Context(), key, h.c.Now().Add(dbscChallengeTTL+time.Minute))
}

// dbscSession returns the live session of the request's SSO cookie.
func (h *Handler) dbscSession(r *http.Request) *model.Session {
	sid := h.browser.Session(r)
	if sid == "" {
		return nil
	}
	sess, err := h.c.Store.GetSession(r.Context(), sid)
	if err != nil || !sess.Active(h.c.Now()) {
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
func (h *Handler) handleDBSCRegister(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ri := h.info(r)
	sess := h.dbscSession(r)
	if sess == nil {
		dbscRefuse(w, http.StatusUnauthorized, "not signed in")
		return
	}
	fail := func(reason string) {
		ev := ri.Event(model.EventSessionDBSCRegistered)
		ev.Outcome, ev.Reason, ev.Actor, ev.UserID, ev.SessionID = model.OutcomeFailure, reason, sess.UserID, sess.UserID, sess.ID
		_ = h.events.Emit(ctx, ev)
		dbscRefuse(w, http.StatusBadRequest, "registration refused")
	}
	if sess.DBSCKeyJKT != "" {
		fail("already_bound")
		return
	}
	pr, err := verifyDBSCJWT(r.Header.Get(hdrDBSCResponse), nil, "", h.url(PathDBSCRegister))
	if err != nil || len(pr.JWK) == 0 {
		fail("invalid_proof")
		return
	}
	if err := h.consumeDBSCChallenge(r, "dbsc-reg", pr.Jti, sess.ID); err != nil {
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
	// The binding and its session.dbsc_registered commit together.
	ev := ri.Event(model.EventSessionDBSCRegistered)
	ev.Actor, ev.UserID, ev.SessionID = sess.UserID, sess.UserID, sess.ID
	ev.Data = map[string]string{"session_binding": model.SessionBindingDBSC, "jkt": pr.JKT}
	ectx := h.events.Pending(ctx, ev, nil)
	if err := h.c.Store.BindSessionKey(ectx, sess.ID, pr.JKT, pub); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) || errors.Is(err, store.ErrNotFound) {
			fail("already_bound")
			return
		}
		h.c.Log.ErrorContext(ctx, "bind session key", "correlation_id", ri.CorrID, "err", err)
		dbscRefuse(w, http.StatusInternalServerError, "server error")
		return
	}
	sess.DBSCKeyJKT, sess.DBSCKey = pr.JKT, pub
	// The binding stands with its record; a subscriber that missed the
	// event is logged by the emitter.
	_ = h.events.Emit(ectx, ev)
	h.setDBSCCookie(w, sess)
	h.writeDBSCConfig(w, sess)
}

// handleDBSCRefresh renews the bound cookie for a proof by the registered
// key over a fresh challenge; without one it answers 401 and a challenge.
func (h *Handler) handleDBSCRefresh(w http.ResponseWriter, r *http.Request) {
	sess := h.dbscSession(r)
	if sess == nil || sess.DBSCKeyJKT == "" {
		dbscRefuse(w, http.StatusUnauthorized, "no bound session")
		return
	}
	if id := r.Header.Get(hdrDBSCSessionID); id != "" && !hmac.Equal([]byte(id), []byte(h.dbscSessionIdentifier(sess.ID))) {
		dbscRefuse(w, http.StatusUnauthorized, "unknown session")
		return
	}
	var stored jose.JSONWebKey
	if err := stored.UnmarshalJSON(sess.DBSCKey); err != nil {
		dbscRefuse(w, http.StatusInternalServerError, "server error")
		return
	}
	if resp := r.Header.Get(hdrDBSCResponse); resp != "" {
		pr, err := verifyDBSCJWT(resp, &stored, sess.DBSCKeyJKT, h.url(PathDBSCRefresh))
		if err == nil {
			err = h.consumeDBSCChallenge(r, "dbsc-refresh", pr.Jti, sess.ID)
		}
		if err == nil {
			h.setDBSCCookie(w, sess)
			h.writeDBSCConfig(w, sess)
			return
		}
		// A wrong or stale proof gets a fresh challenge, nothing else.
	}
	ch, err := h.newDBSCChallenge("dbsc-refresh", sess.ID)
	if err != nil {
		dbscRefuse(w, http.StatusInternalServerError, "server error")
		return
	}
	w.Header().Set(hdrDBSCChallenge, `"`+ch+`";id="`+h.dbscSessionIdentifier(sess.ID)+`"`)
	dbscRefuse(w, http.StatusUnauthorized, "proof of possession required")
}

// BrowserBound reports whether r comes from the browser sess is bound to:
// always for a session without a DBSC key, and for a bound one only with
// the valid, unexpired bound cookie that the browser's key renews. Other
// parts of Ward served to the same browser (the web console) use it to
// hold their own sessions to the same binding.
func (h *Handler) BrowserBound(r *http.Request, sess *model.Session) bool {
	return h.dbscSatisfied(r, sess)
}
