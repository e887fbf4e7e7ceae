package console

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/authz"
	"github.com/ward-idp/ward/internal/textclean"
)

// Cookie names (with the __Host- prefix under HTTPS, where a cookie can
// be Secure).
const (
	cookieSession = "ward_console"
	cookieLogin   = "ward_console_login"
	// loginTTL bounds a sign-in from the console's redirect to its
	// callback.
	loginTTL = 10 * time.Minute
	// maxCookie bounds what the console opens.
	maxCookie = 6 << 10
)

// Reasons recorded on console.access_denied.
const (
	ReasonOrigin         = "origin_invalid"  // a state change not from the console's origin
	ReasonCSRF           = "csrf_invalid"    // missing or wrong synchronizer token
	ReasonRole           = "role_missing"    // the operator's roles do not allow it
	ReasonMFA            = "mfa_required"    // the session was not signed in with a second factor
	ReasonBrowserBinding = "browser_binding" // a DBSC-bound session without its bound cookie
	ReasonWrongClient    = "wrong_client"    // a token of another client in the console cookie
	ReasonCookie         = "cookie_invalid"  // a console cookie that does not open
)

// sealer encrypts the console's cookies (AES-256-GCM, the cookie's name
// as associated data) and derives its CSRF tokens.
type sealer struct {
	aead    cipher.AEAD
	csrfKey []byte
}

func newSealer(key []byte) (*sealer, error) {
	if len(key) < 32 {
		return nil, errors.New("console: CookieKey must be 32 bytes")
	}
	sub := func(label string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte("ward-console|" + label))
		return m.Sum(nil)
	}
	block, err := aes.NewCipher(sub("cookie-encryption"))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead, csrfKey: sub("csrf")}, nil
}

func (s *sealer) seal(name string, v any) (string, error) {
	pt, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, pt, []byte(name))), nil
}

func (s *sealer) open(name, value string, v any) error {
	if len(value) > maxCookie {
		return errors.New("cookie too large")
	}
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return errors.New("malformed cookie")
	}
	pt, err := s.aead.Open(nil, raw[:s.aead.NonceSize()], raw[s.aead.NonceSize():], []byte(name))
	if err != nil {
		return errors.New("cookie does not open")
	}
	return json.Unmarshal(pt, v)
}

// csrf is the synchronizer token of a console session: a MAC of the
// session's random nonce and its Ward session id, so it is worthless in
// any other console session.
func (s *sealer) csrf(nonce, sid string) string {
	m := hmac.New(sha256.New, s.csrfKey)
	m.Write([]byte("csrf|" + nonce + "|" + sid))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// sessionCookie is the console session: the access token Ward issued to
// the console, a random nonce (the CSRF token's seed) and the expiry.
type sessionCookie struct {
	AccessToken string `json:"t"`
	Nonce       string `json:"n"`
	Exp         int64  `json:"e"`
}

// loginCookie carries a sign-in from /console/login to the callback.
type loginCookie struct {
	State    string `json:"s"`
	Verifier string `json:"v"`
	Next     string `json:"x"`
	Exp      int64  `json:"e"`
}

func (c *Console) cookieName(n string) string {
	if c.secure {
		return "__Host-" + n
	}
	return n
}

func (c *Console) setCookie(w http.ResponseWriter, name, value string, expires time.Time, sameSite http.SameSite) {
	ck := &http.Cookie{Name: c.cookieName(name), Value: value, Path: "/", HttpOnly: true, Secure: c.secure, SameSite: sameSite}
	if value == "" {
		ck.MaxAge = -1
	} else {
		ck.Expires = expires
	}
	http.SetCookie(w, ck)
}

// Operator is the signed-in operator of a console request.
type Operator struct {
	User    *model.User
	Session *model.Session
	// Roles are the operator's console roles, strongest first.
	Roles []string
	// CSRF is the synchronizer token every state change must carry.
	CSRF     string
	ClientID string
	// Expires is when the console session ends (a new sign-in follows).
	Expires time.Time
}

type ctxKey struct{}

// OperatorOf returns the operator of a console request (nil outside one).
func OperatorOf(ctx context.Context) *Operator {
	op, _ := ctx.Value(ctxKey{}).(*Operator)
	return op
}

// Can reports whether the operator may do p.
func (op *Operator) Can(p Permission) bool { return op != nil && Allowed(op.Roles, p) }

// denial is why a console request was refused.
type denial struct {
	reason string
	op     *Operator // known operator, if any
	userID string    // known user, if any
	sid    string
}

// authenticate returns the operator of r's console cookie, or why there
// is none ("" when there is simply no cookie or it expired: sign in).
func (c *Console) authenticate(r *http.Request) (*Operator, *denial) {
	ck, err := r.Cookie(c.cookieName(cookieSession))
	if err != nil || ck.Value == "" {
		return nil, nil
	}
	var sc sessionCookie
	if err := c.cookies.open(c.cookieName(cookieSession), ck.Value, &sc); err != nil {
		return nil, &denial{reason: ReasonCookie}
	}
	if c.d.Now().Unix() >= sc.Exp {
		return nil, nil
	}
	return c.operatorFor(r, sc)
}

// operatorFor checks the console's access token as any Ward resource
// does, from this request's address (so strict location applies), then
// what the console requires of it: its own client, a multi-factor
// sign-in, the Ward session bound to this browser when it is DBSC-bound.
func (c *Console) operatorFor(r *http.Request, sc sessionCookie) (*Operator, *denial) {
	req := r.Clone(r.Context())
	req.Header = forwardHeaders(r.Header)
	req.Header.Set("Authorization", "Bearer "+sc.AccessToken)
	caller, _, e := c.d.Auth.AuthenticateResource(req)
	if e != nil {
		reason := e.Reason
		if reason == "" {
			reason = e.Code
		}
		// The token came out of the console's own sealed cookie: its
		// subject and session name whose console session this was.
		sub, sid := tokenSubject(sc.AccessToken)
		return nil, &denial{reason: reason, userID: sub, sid: sid}
	}
	cl := caller.Claims
	d := &denial{userID: cl.Subject, sid: cl.SID}
	switch {
	case cl.ClientID != c.d.ClientID || !slices.Contains([]string(cl.Audience), c.issuer):
		d.reason = ReasonWrongClient
		return nil, d
	case caller.User == nil || cl.SID == "":
		d.reason = "session_ended"
		return nil, d
	case !authz.ACRAtLeast(cl.ACR, authz.ACRMFA):
		d.reason = ReasonMFA
		return nil, d
	}
	// The resource check read the live session: it is not read again.
	sess := caller.Session
	if sess == nil || sess.ID != cl.SID || !sess.Active(c.d.Now()) {
		d.reason = "session_ended"
		return nil, d
	}
	if c.d.Browser != nil && !c.d.Browser.BrowserBound(r, sess) {
		d.reason = ReasonBrowserBinding
		return nil, d
	}
	return &Operator{User: caller.User, Session: sess, Roles: consoleRoles(caller.User.Roles),
		CSRF: c.cookies.csrf(sc.Nonce, sess.ID), ClientID: cl.ClientID, Expires: time.Unix(sc.Exp, 0)}, nil
}

// checkOrigin is the Origin check of a state change: the console's own
// origin, or, from a browser that sends no Origin, Sec-Fetch-Site
// same-origin. A request with neither is refused.
func (c *Console) checkOrigin(r *http.Request) bool {
	if o := r.Header.Values("Origin"); len(o) > 0 {
		return len(o) == 1 && o[0] == c.origin
	}
	return r.Header.Get("Sec-Fetch-Site") == "same-origin"
}

// checkCSRF compares the request's token (form field csrf, or header
// X-CSRF-Token from htmx) with the session's.
func (c *Console) checkCSRF(r *http.Request, op *Operator) bool {
	got := r.Header.Get("X-CSRF-Token")
	if got == "" {
		r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
		got = r.PostFormValue("csrf")
	}
	return got != "" && hmac.Equal([]byte(got), []byte(op.CSRF))
}

// handle registers a console route that needs a signed-in operator
// allowed perm; state-changing methods also need the Origin and CSRF
// checks. Each refusal is recorded.
func (c *Console) handle(pattern string, perm Permission, fn http.HandlerFunc) {
	names := wildcards(pattern)
	c.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		c.securityHeaders(w)
		change := r.Method != http.MethodGet && r.Method != http.MethodHead
		if change && !c.checkOrigin(r) {
			op, _ := c.authenticate(r)
			c.deny(w, r, &denial{reason: ReasonOrigin, op: op}, perm, http.StatusForbidden)
			return
		}
		op, d := c.authenticate(r)
		if op == nil {
			c.signInAgain(w, r, d, change)
			return
		}
		if change && !c.checkCSRF(r, op) {
			c.deny(w, r, &denial{reason: ReasonCSRF, op: op}, perm, http.StatusForbidden)
			return
		}
		if !op.Can(perm) {
			c.deny(w, r, &denial{reason: ReasonRole, op: op}, perm, http.StatusForbidden)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, op))
		if !c.checkParams(w, r, names) {
			return
		}
		fn(w, r)
	})
}

// wildcards lists the names of a route pattern's path wildcards.
func wildcards(pattern string) []string {
	var names []string
	for _, seg := range strings.Split(pattern, "/") {
		if name, ok := strings.CutPrefix(seg, "{"); ok && strings.HasSuffix(name, "}") && name != "$}" {
			names = append(names, strings.TrimSuffix(strings.TrimSuffix(name, "}"), "..."))
		}
	}
	return names
}

// checkParams answers a request whose path ids or query values could
// name nothing stored (control characters such as NUL, which PostgreSQL
// refuses in text, invalid UTF-8, overlong) before anything is looked
// up: 404 for a path id, 400 for a query value.
func (c *Console) checkParams(w http.ResponseWriter, r *http.Request, names []string) bool {
	for _, n := range names {
		if !textclean.ValidParam(r.PathValue(n), textclean.MaxPathID) {
			c.errorPage(w, r, http.StatusNotFound, "Not found", "The address names no such item: it is not a valid id.")
			return false
		}
	}
	if _, bad := textclean.BadQuery(r.URL.Query()); bad {
		c.errorPage(w, r, http.StatusBadRequest, "Invalid request", "A parameter of the address is not valid: it holds control characters or invalid text, or is too long.")
		return false
	}
	return true
}

// signInAgain answers a request without a usable console session: a
// page load goes to sign-in (silent while the Ward session lives); a
// change is refused (its form was made for a session that is over). A
// cookie that was refused (rather than absent or expired) is recorded.
func (c *Console) signInAgain(w http.ResponseWriter, r *http.Request, d *denial, change bool) {
	if d != nil {
		c.record(r, d, "", http.StatusUnauthorized)
	}
	c.setCookie(w, cookieSession, "", time.Time{}, http.SameSiteStrictMode)
	login := Prefix + "/login"
	if !change {
		login += "?next=" + url.QueryEscape(r.URL.RequestURI())
	}
	if r.Header.Get("HX-Request") != "" {
		// htmx follows a redirect inside its request; it leaves the page
		// for the sign-in only when told so.
		w.Header().Set("HX-Redirect", login)
		w.WriteHeader(http.StatusOK)
		return
	}
	if !change {
		http.Redirect(w, r, login, http.StatusSeeOther)
		return
	}
	c.renderStatus(w, r, http.StatusUnauthorized, "message.html", pageData{Title: "Signed out",
		Message: "Your console session has ended. Sign in again and repeat the action.", Link: login, LinkText: "Sign in"})
}

// deny records a refusal and answers it with a page saying what is
// missing.
func (c *Console) deny(w http.ResponseWriter, r *http.Request, d *denial, perm Permission, status int) {
	c.record(r, d, perm, status)
	msg := "This request was refused."
	switch d.reason {
	case ReasonRole:
		msg = "Your roles do not allow this. Ask a global administrator for the role you need."
		if d.op != nil && len(d.op.Roles) == 0 {
			msg = "Your account has no console role (global administrator, security operator, helpdesk or reader)."
		}
	case ReasonCSRF, ReasonOrigin:
		msg = "The request did not come from a console page of this session. Reload the page and try again."
	}
	data := pageData{Title: "Not allowed", Message: msg}
	if d.op != nil {
		data.Op = d.op
	}
	c.renderStatus(w, r, status, "message.html", data)
}

// record writes console.access_denied.
func (c *Console) record(r *http.Request, d *denial, perm Permission, status int) {
	ev := &model.Event{Type: model.EventConsoleAccessDenied, Actor: "anonymous", ClientID: c.d.ClientID,
		Outcome: model.OutcomeFailure, Reason: d.reason,
		Data: map[string]string{"method": r.Method, "path": truncate(r.URL.Path, 256), "status": strconv.Itoa(status)}}
	if perm != "" {
		ev.Data["permission"] = string(perm)
	}
	switch {
	case d.op != nil:
		ev.Actor, ev.UserID, ev.SessionID = d.op.User.ID, d.op.User.ID, d.op.Session.ID
		ev.Data["roles"] = strings.Join(d.op.Roles, " ")
	case d.userID != "":
		ev.Actor, ev.UserID, ev.SessionID = d.userID, d.userID, d.sid
	}
	_ = c.events.Emit(r.Context(), ev)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// safeNext keeps a post-sign-in destination inside the console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix+"/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") ||
		strings.HasPrefix(next, Prefix+"/login") || strings.HasPrefix(next, Prefix+"/callback") {
		return Prefix + "/"
	}
	return next
}

func randomString() string { return rand.Text() + rand.Text() }

// handleLogin starts a sign-in through Ward: an authorization request of
// the console's client with PKCE (S256), a state bound to this browser
// (sealed in a cookie), and a claims request for a multi-factor acr.
func (c *Console) handleLogin(w http.ResponseWriter, r *http.Request) {
	c.securityHeaders(w)
	next := safeNext(r.URL.Query().Get("next"))
	if op, _ := c.authenticate(r); op != nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	lc := loginCookie{State: randomString(), Verifier: randomString(), Next: next, Exp: c.d.Now().Add(loginTTL).Unix()}
	v, err := c.cookies.seal(c.cookieName(cookieLogin), lc)
	if err != nil {
		c.errorPage(w, r, http.StatusInternalServerError, "Error", "Something went wrong.")
		return
	}
	// Lax: the callback arrives as a redirect from Ward's sign-in pages.
	c.setCookie(w, cookieLogin, v, time.Unix(lc.Exp, 0), http.SameSiteLaxMode)
	sum := sha256.Sum256([]byte(lc.Verifier))
	q := url.Values{
		"response_type":         {"code"},
		"client_id":             {c.d.ClientID},
		"redirect_uri":          {c.issuer + Prefix + "/callback"},
		"scope":                 {"openid profile"},
		"state":                 {lc.State},
		"code_challenge":        {base64.RawURLEncoding.EncodeToString(sum[:])},
		"code_challenge_method": {"S256"},
		"claims":                {`{"access_token":{"acr":{"essential":true,"values":["` + authz.ACRMFA + `"]}}}`},
	}
	http.Redirect(w, r, c.issuer+"/authorize?"+q.Encode(), http.StatusSeeOther)
}

// tokenResponse is the part of the token endpoint's answer the console
// reads.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// handleCallback finishes a sign-in: the state must be this browser's,
// the code is redeemed at Ward's token endpoint with the PKCE verifier
// and the console's credentials (Conditional Access decides there too),
// and the token must pass what every console request checks.
func (c *Console) handleCallback(w http.ResponseWriter, r *http.Request) {
	c.securityHeaders(w)
	q := r.URL.Query()
	var lc loginCookie
	ck, err := r.Cookie(c.cookieName(cookieLogin))
	if err == nil {
		err = c.cookies.open(c.cookieName(cookieLogin), ck.Value, &lc)
	}
	c.setCookie(w, cookieLogin, "", time.Time{}, http.SameSiteLaxMode)
	if err != nil || c.d.Now().Unix() >= lc.Exp || !hmac.Equal([]byte(q.Get("state")), []byte(lc.State)) {
		c.errorPage(w, r, http.StatusBadRequest, "Sign-in failed", "This sign-in was not started here, or took too long.")
		return
	}
	if iss := q.Get("iss"); iss != "" && iss != c.issuer {
		c.errorPage(w, r, http.StatusBadRequest, "Sign-in failed", "The answer came from another issuer.")
		return
	}
	if e := q.Get("error"); e != "" {
		c.errorPage(w, r, http.StatusForbidden, "Sign-in refused", "Ward refused the sign-in: "+truncate(q.Get("error_description"), 300)+" ("+truncate(e, 64)+").")
		return
	}
	tr, status := c.redeem(r, q.Get("code"), lc.Verifier)
	if status != http.StatusOK || tr.AccessToken == "" || tr.ExpiresIn <= 0 {
		c.d.Log.WarnContext(r.Context(), "console code redemption refused", "status", status, "error", tr.Error)
		c.errorPage(w, r, http.StatusForbidden, "Sign-in refused", "Ward refused the console a token: "+truncate(tr.Description, 300)+" ("+truncate(tr.Error, 64)+").")
		return
	}
	sc := sessionCookie{AccessToken: tr.AccessToken, Nonce: randomString(), Exp: c.d.Now().Add(time.Duration(tr.ExpiresIn) * time.Second).Unix()}
	op, d := c.operatorFor(r, sc)
	if op == nil {
		c.deny(w, r, d, "", http.StatusForbidden)
		return
	}
	if len(op.Roles) == 0 {
		c.deny(w, r, &denial{reason: ReasonRole, op: op}, PermView, http.StatusForbidden)
		return
	}
	v, err := c.cookies.seal(c.cookieName(cookieSession), sc)
	if err != nil {
		c.errorPage(w, r, http.StatusInternalServerError, "Error", "Something went wrong.")
		return
	}
	binding := model.SessionBindingCookie
	if op.Session.DBSCKeyJKT != "" {
		binding = model.SessionBindingDBSC
	}
	_ = c.events.Emit(r.Context(), &model.Event{Type: model.EventConsoleSignedIn, Actor: op.User.ID, UserID: op.User.ID,
		SessionID: op.Session.ID, ClientID: c.d.ClientID, Outcome: model.OutcomeSuccess,
		Data: map[string]string{"roles": strings.Join(op.Roles, " "), "acr": authz.ACRMFA, "session_binding": binding,
			"expires": time.Unix(sc.Exp, 0).UTC().Format(time.RFC3339)}})
	c.setCookie(w, cookieSession, v, time.Unix(sc.Exp, 0), http.SameSiteStrictMode)
	http.Redirect(w, r, safeNext(lc.Next), http.StatusSeeOther)
}

// redeem exchanges the code at Ward's token endpoint, in process, from
// the operator's address (Conditional Access at the token endpoint sees
// the operator's request).
func (c *Console) redeem(r *http.Request, code, verifier string) (*tokenResponse, int) {
	form := url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {c.issuer + Prefix + "/callback"},
		"code_verifier": {verifier}, "client_id": {c.d.ClientID}, "client_secret": {c.d.ClientSecret},
	}
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, c.issuer+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		return &tokenResponse{Error: "server_error"}, http.StatusInternalServerError
	}
	req.RemoteAddr = r.RemoteAddr
	req.Header = forwardHeaders(r.Header)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := &recorder{header: http.Header{}}
	c.d.Token.ServeHTTP(rec, req)
	var tr tokenResponse
	if err := json.Unmarshal(rec.body.Bytes(), &tr); err != nil {
		tr.Error = "server_error"
	}
	return &tr, rec.status
}

// recorder keeps the token endpoint's response.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if r.body.Len()+len(b) > 64<<10 {
		return 0, errors.New("token response too large")
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(s int) {
	if r.status == 0 {
		r.status = s
	}
}

// handleLogout signs the operator out: the Ward session ends (the
// console is one of its applications; every other application's tokens
// of it stop working too), and the cookie is cleared.
func (c *Console) handleLogout(w http.ResponseWriter, r *http.Request) {
	op := OperatorOf(r.Context())
	if _, err := c.d.Sessions.Logout(r.Context(), op.Session.ID, c.d.ClientID); err != nil {
		c.fail(w, r, err)
		return
	}
	c.setCookie(w, cookieSession, "", time.Time{}, http.SameSiteStrictMode)
	if r.Header.Get("HX-Request") != "" {
		w.Header().Set("HX-Redirect", Prefix+"/signed-out")
		w.WriteHeader(http.StatusOK)
		return
	}
	http.Redirect(w, r, Prefix+"/signed-out", http.StatusSeeOther)
}

func (c *Console) handleSignedOut(w http.ResponseWriter, r *http.Request) {
	c.securityHeaders(w)
	c.renderStatus(w, r, http.StatusOK, "message.html", pageData{Title: "Signed out",
		Message: "You signed out of the console and of this Ward session.", Link: Prefix + "/", LinkText: "Sign in again"})
}

// tokenSubject reads sub and sid from a JWT's payload without checking
// it: only for attributing a refusal of a token the console sealed.
func tokenSubject(jwt string) (sub, sid string) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return "", ""
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", ""
	}
	var cl struct {
		Sub string `json:"sub"`
		SID string `json:"sid"`
	}
	if json.Unmarshal(raw, &cl) != nil {
		return "", ""
	}
	return truncate(cl.Sub, 64), truncate(cl.SID, 64)
}

// forwardHeaders are the browser request's headers for a request the
// console makes to Ward on the operator's behalf: its address (the
// trusted-proxy headers, which Ward reads by its one client-IP rule) and
// user agent are the operator's; credentials and the body's headers are
// not passed on.
func forwardHeaders(h http.Header) http.Header {
	out := h.Clone()
	for _, k := range []string{"Cookie", "Authorization", "Dpop", "Content-Type", "Content-Length", "Origin", "Hx-Request", "X-Csrf-Token"} {
		out.Del(k)
	}
	return out
}
