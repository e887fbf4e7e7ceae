package oauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/secret"
)

// Interaction state (the pending authorization request, the half-finished
// sign-in) travels in the page as a MAC-protected blob instead of a server
// record, so a sign-in needs no writes until it succeeds. Each blob names
// its purpose (so one kind cannot stand in for another) and expires.

var errBadState = errors.New("invalid or expired state")

type sealedEnvelope struct {
	Purpose string          `json:"p"`
	Exp     int64           `json:"e"`
	Bind    string          `json:"b,omitempty"` // hash of the browser's CSRF cookie
	Data    json.RawMessage `json:"d"`
}

func (p *Provider) seal(purpose string, ttl time.Duration, bind string, v any) (string, error) {
	d, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	env, err := json.Marshal(sealedEnvelope{Purpose: purpose, Exp: p.c.Now().Add(ttl).Unix(), Bind: bindHash(bind), Data: d})
	if err != nil {
		return "", err
	}
	body := base64.RawURLEncoding.EncodeToString(env)
	return body + "." + base64.RawURLEncoding.EncodeToString(p.mac("sealed|"+body)), nil
}

func (p *Provider) unseal(purpose, token, bind string, v any) error {
	body, sig, ok := strings.Cut(token, ".")
	if !ok {
		return errBadState
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, p.mac("sealed|"+body)) {
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
	if env.Purpose != purpose || p.c.Now().Unix() >= env.Exp {
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

func (p *Provider) mac(s string) []byte {
	m := hmac.New(sha256.New, p.c.CookieKey)
	m.Write([]byte(s))
	return m.Sum(nil)
}

func bindHash(s string) string {
	if s == "" {
		return ""
	}
	h := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(h[:12])
}

// Cookies. The SSO cookie carries the session id with a MAC: the sid
// alone (which appears in tokens) is not enough to forge it.
const (
	cookieSession = "ward_session"
	cookieCSRF    = "ward_csrf"
)

func (p *Provider) cookieName(n string) string {
	if p.secure {
		return "__Host-" + n
	}
	return n
}

func (p *Provider) setSessionCookie(w http.ResponseWriter, sid string, expires time.Time) {
	v := sid + "." + base64.RawURLEncoding.EncodeToString(p.mac("session|"+sid))
	http.SetCookie(w, &http.Cookie{Name: p.cookieName(cookieSession), Value: v, Path: "/", Expires: expires,
		HttpOnly: true, Secure: p.secure, SameSite: http.SameSiteLaxMode})
}

func (p *Provider) clearSessionCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: p.cookieName(cookieSession), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: p.secure, SameSite: http.SameSiteLaxMode})
}

// sessionFromCookie returns the sid of an authentic SSO cookie, or "".
func (p *Provider) sessionFromCookie(r *http.Request) string {
	c, err := r.Cookie(p.cookieName(cookieSession))
	if err != nil {
		return ""
	}
	sid, mac, ok := strings.Cut(c.Value, ".")
	if !ok || sid == "" {
		return ""
	}
	got, err := base64.RawURLEncoding.DecodeString(mac)
	if err != nil || !hmac.Equal(got, p.mac("session|"+sid)) {
		return ""
	}
	return sid
}

// csrfToken returns the browser's CSRF token, setting the cookie when the
// browser has none (double-submit: the form echoes the cookie).
func (p *Provider) csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(p.cookieName(cookieCSRF)); err == nil && len(c.Value) >= 32 {
		return c.Value
	}
	v := secret.RandomToken()
	http.SetCookie(w, &http.Cookie{Name: p.cookieName(cookieCSRF), Value: v, Path: "/",
		HttpOnly: true, Secure: p.secure, SameSite: http.SameSiteLaxMode})
	return v
}

// checkCSRF verifies the posted token against the cookie.
func (p *Provider) checkCSRF(r *http.Request) (string, bool) {
	c, err := r.Cookie(p.cookieName(cookieCSRF))
	if err != nil || len(c.Value) < 32 {
		return "", false
	}
	posted := r.PostFormValue("csrf")
	return c.Value, hmac.Equal([]byte(posted), []byte(c.Value))
}
