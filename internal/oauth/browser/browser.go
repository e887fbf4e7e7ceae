// Package browser is what Ward keeps in a browser: the SSO cookie (the
// session id under a MAC, so that the sid, which appears in tokens, is not
// enough to forge it), the double-submit CSRF cookie, and the sealed
// interaction state the sign-in pages carry (the pending authorization
// request, the half-finished sign-in) instead of server records, so a
// sign-in writes nothing until it succeeds. Each sealed blob names its
// purpose (so one kind cannot stand in for another), expires, and is
// bound to the browser's CSRF cookie.
package browser

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/secret"
)

// State seals interaction state and reads and writes Ward's cookies
// under one key. The protocol endpoints and the sign-in pages each hold
// one made from the same key.
type State struct {
	key    []byte
	secure bool
	now    func() time.Time
}

// New returns the state for cookie key key. secure (an https issuer)
// makes cookies Secure and __Host- prefixed.
func New(key []byte, secure bool, now func() time.Time) *State {
	return &State{key: key, secure: secure, now: now}
}

// Secure reports whether cookies are Secure.
func (s *State) Secure() bool { return s.secure }

var errBadState = errors.New("invalid or expired state")

type sealedEnvelope struct {
	Purpose string          `json:"p"`
	Exp     int64           `json:"e"`
	Bind    string          `json:"b,omitempty"` // hash of the browser's CSRF cookie
	Data    json.RawMessage `json:"d"`
}

// Seal returns v as a MAC-protected blob for purpose, valid for ttl and
// bound to bind (the browser's CSRF token; "" binds to nothing).
func (s *State) Seal(purpose string, ttl time.Duration, bind string, v any) (string, error) {
	d, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	env, err := json.Marshal(sealedEnvelope{Purpose: purpose, Exp: s.now().Add(ttl).Unix(), Bind: bindHash(bind), Data: d})
	if err != nil {
		return "", err
	}
	body := base64.RawURLEncoding.EncodeToString(env)
	return body + "." + base64.RawURLEncoding.EncodeToString(s.MAC("sealed|"+body)), nil
}

// Unseal opens a blob Seal made for purpose and bind into v.
func (s *State) Unseal(purpose, token, bind string, v any) error {
	body, sig, ok := strings.Cut(token, ".")
	if !ok {
		return errBadState
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.MAC("sealed|"+body)) {
		return errBadState
	}
	raw, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		return errBadState
	}
	var env sealedEnvelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return errBadState
	}
	if env.Purpose != purpose || s.now().Unix() >= env.Exp {
		return errBadState
	}
	if env.Bind != "" && !hmac.Equal([]byte(env.Bind), []byte(bindHash(bind))) {
		return errBadState
	}
	if err := json.Unmarshal(env.Data, v); err != nil {
		return errBadState
	}
	return nil
}

// MAC is HMAC-SHA256 of msg under the cookie key; callers prefix msg
// with what it is for.
func (s *State) MAC(msg string) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func bindHash(s string) string {
	if s == "" {
		return ""
	}
	h := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(h[:12])
}

const (
	cookieSession = "ward_session"
	cookieCSRF    = "ward_csrf"
)

// CookieName is the name of Ward's cookie n: __Host- prefixed under HTTPS.
func (s *State) CookieName(n string) string {
	if s.secure {
		return "__Host-" + n
	}
	return n
}

// SetSession sets the SSO cookie for session sid.
func (s *State) SetSession(w http.ResponseWriter, sid string, expires time.Time) {
	v := sid + "." + base64.RawURLEncoding.EncodeToString(s.MAC("session|"+sid))
	http.SetCookie(w, &http.Cookie{Name: s.CookieName(cookieSession), Value: v, Path: "/", Expires: expires,
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode})
}

// ClearSession removes the SSO cookie.
func (s *State) ClearSession(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: s.CookieName(cookieSession), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode})
}

// Session returns the sid of an authentic SSO cookie, or "".
func (s *State) Session(r *http.Request) string {
	c, err := r.Cookie(s.CookieName(cookieSession))
	if err != nil {
		return ""
	}
	sid, mac, ok := strings.Cut(c.Value, ".")
	if !ok || sid == "" {
		return ""
	}
	got, err := base64.RawURLEncoding.DecodeString(mac)
	if err != nil || !hmac.Equal(got, s.MAC("session|"+sid)) {
		return ""
	}
	return sid
}

// CSRFToken returns the browser's CSRF token, setting the cookie when the
// browser has none (double-submit: the form echoes the cookie).
func (s *State) CSRFToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(s.CookieName(cookieCSRF)); err == nil && len(c.Value) >= 32 {
		return c.Value
	}
	v := secret.RandomToken()
	http.SetCookie(w, &http.Cookie{Name: s.CookieName(cookieCSRF), Value: v, Path: "/",
		HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode})
	return v
}

// CheckCSRF verifies the posted token against the cookie and returns the
// cookie's token.
func (s *State) CheckCSRF(r *http.Request) (string, bool) {
	c, err := r.Cookie(s.CookieName(cookieCSRF))
	if err != nil || len(c.Value) < 32 {
		return "", false
	}
	posted := r.PostFormValue("csrf")
	return c.Value, hmac.Equal([]byte(posted), []byte(c.Value))
}

// OriginOf returns scheme://host of an absolute URL ("" otherwise), for a
// page's CSP form-action.
func OriginOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}
