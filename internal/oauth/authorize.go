package oauth

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/web"
)

// authRequest is a validated authorization request.
type authRequest struct {
	ClientID      string `json:"cid"`
	RedirectURI   string `json:"ru"`
	Scope         string `json:"sc,omitempty"`
	State         string `json:"st,omitempty"`
	Nonce         string `json:"no,omitempty"`
	CodeChallenge string `json:"cc"`
	DPoPJKT       string `json:"jkt,omitempty"`
	Prompt        string `json:"pr,omitempty"`
	MaxAge        int    `json:"ma"` // -1: not given
	// Claims is the claims request parameter (a resource's claims
	// challenge passed on by the client).
	Claims *claimsRequest `json:"cl,omitempty"`
}

// Parameters of an authorization request that may appear at most once.
var authParams = []string{"response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
	"code_challenge", "code_challenge_method", "dpop_jkt", "prompt", "max_age", "response_mode", "request_uri", "request", "claims"}

var (
	pkceChallengeRE = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)       // base64url(SHA-256)
	pkceVerifierRE  = regexp.MustCompile(`^[A-Za-z0-9._~-]{43,128}$`) // RFC 7636 §4.1
	jktRE           = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)
)

// redirectError is an authorization error that can be sent to the
// client's redirect URI (the client and redirect URI were verified).
type redirectError struct {
	*Error
	redirectURI string
	state       string
}

// parseAuthorize validates an authorization request. A nil *redirectError
// with a non-nil *Error means the error must be shown to the user, not
// redirected (unknown client or unverified redirect URI).
func (p *Provider) parseAuthorize(ctx context.Context, q url.Values) (*authRequest, *model.Client, *Error, *redirectError) {
	for _, k := range authParams {
		if len(q[k]) > 1 {
			return nil, nil, newErr(ErrInvalidRequest, "parameter "+k+" given more than once"), nil
		}
	}
	clientID := q.Get("client_id")
	if clientID == "" {
		return nil, nil, newErr(ErrInvalidRequest, "client_id is required"), nil
	}
	c, err := p.client(ctx, clientID)
	if errors.Is(err, store.ErrNotFound) {
		// Shown to the user on a page: a bad request, not an HTTP
		// authentication failure (401 would need WWW-Authenticate).
		e := newErr(ErrInvalidClient, "unknown client")
		e.Status = http.StatusBadRequest
		return nil, nil, e, nil
	} else if err != nil {
		return nil, nil, serverError(err), nil
	}
	// Pushed request: only the pushed parameters count (RFC 9126 §4).
	if ru := q.Get("request_uri"); ru != "" {
		pr, err := p.c.Store.ConsumePushedRequest(ctx, ru, p.c.Now())
		if err != nil || pr.ClientID != clientID || !p.c.Now().Before(pr.ExpiresAt) {
			if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrAlreadyUsed) {
				return nil, nil, serverError(err), nil
			}
			return nil, nil, newErr(ErrInvalidRequestURI, "request_uri is invalid, expired or already used"), nil
		}
		q = url.Values{}
		for k, v := range pr.Params {
			q.Set(k, v)
		}
		q.Set("client_id", clientID)
	}
	redirectURI := q.Get("redirect_uri")
	if redirectURI == "" || !c.AllowsRedirect(redirectURI) {
		return nil, nil, newErr(ErrInvalidRequest, "redirect_uri is missing or not registered for this client").withReason("redirect_uri_mismatch"), nil
	}
	state := q.Get("state")
	rerr := func(code, desc string) (*authRequest, *model.Client, *Error, *redirectError) {
		e := newErr(code, desc)
		return nil, c, e, &redirectError{Error: e, redirectURI: redirectURI, state: state}
	}
	if q.Get("request") != "" {
		return rerr(ErrRequestNotSupported, "request objects are not supported; use pushed authorization requests")
	}
	if rt := q.Get("response_type"); rt != "code" {
		if rt == "" {
			return rerr(ErrInvalidRequest, "response_type is required")
		}
		return rerr(ErrUnsupportedResponseType, "only response_type=code is supported")
	}
	if rm := q.Get("response_mode"); rm != "" && rm != "query" {
		return rerr(ErrInvalidRequest, "only response_mode=query is supported")
	}
	if !c.AllowsGrant(model.GrantAuthorizationCode) {
		return rerr(ErrUnauthorizedClient, "client may not use the authorization code grant")
	}
	cc, ccm := q.Get("code_challenge"), q.Get("code_challenge_method")
	if cc == "" {
		return rerr(ErrInvalidRequest, "code_challenge is required (PKCE with S256)")
	}
	if ccm != "S256" {
		return rerr(ErrInvalidRequest, "code_challenge_method must be S256")
	}
	if !pkceChallengeRE.MatchString(cc) {
		return rerr(ErrInvalidRequest, "code_challenge is malformed")
	}
	scope, e := p.checkScope(c, q.Get("scope"))
	if e != nil {
		return rerr(e.Code, e.Description)
	}
	jkt := q.Get("dpop_jkt")
	if jkt != "" && !jktRE.MatchString(jkt) {
		return rerr(ErrInvalidRequest, "dpop_jkt is malformed")
	}
	prompt := q.Get("prompt")
	for _, v := range strings.Fields(prompt) {
		if v != "none" && v != "login" && v != "consent" && v != "select_account" {
			return rerr(ErrInvalidRequest, "unsupported prompt value")
		}
	}
	if strings.Contains(prompt, "none") && len(strings.Fields(prompt)) > 1 {
		return rerr(ErrInvalidRequest, "prompt=none cannot be combined with other values")
	}
	maxAge := -1
	if s := q.Get("max_age"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return rerr(ErrInvalidRequest, "max_age must be a non-negative integer")
		}
		maxAge = n
	}
	if len(q.Get("state")) > 2048 || len(q.Get("nonce")) > 512 {
		return rerr(ErrInvalidRequest, "state or nonce too long")
	}
	claims, e := parseClaims(q.Get("claims"))
	if e != nil {
		return rerr(e.Code, e.Description)
	}
	return &authRequest{
		ClientID: clientID, RedirectURI: redirectURI, Scope: scope, State: state, Nonce: q.Get("nonce"),
		CodeChallenge: cc, DPoPJKT: jkt, Prompt: prompt, MaxAge: maxAge, Claims: claims,
	}, c, nil, nil
}

// checkScope returns the normalised requested scope or invalid_scope when
// it asks for anything the client is not allowed.
func (p *Provider) checkScope(c *model.Client, scope string) (string, *Error) {
	if len(scope) > 2048 {
		return "", newErr(ErrInvalidScope, "scope too long")
	}
	var out []string
	for _, s := range strings.Fields(scope) {
		if !slices.Contains(c.Scopes, s) {
			return "", newErr(ErrInvalidScope, "scope "+strconv.Quote(s)+" is not allowed for this client")
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return strings.Join(out, " "), nil
}

func (p *Provider) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ri := p.info(r)
	var q url.Values
	if r.Method == http.MethodPost {
		if err := r.ParseForm(); err != nil {
			p.c.Pages.Error(w, http.StatusBadRequest, "Invalid request", "The sign-in request could not be read.", ri.CorrID)
			return
		}
		q = r.PostForm
	} else {
		q = r.URL.Query()
	}
	req, client, e, re := p.parseAuthorize(ctx, q)
	if re != nil {
		p.redirectWithError(w, r, re)
		return
	}
	if e != nil {
		if e.Code == ErrServerError {
			p.c.Log.ErrorContext(ctx, "authorize", "correlation_id", ri.CorrID, "err", e.Cause)
		}
		p.c.Pages.Error(w, e.Status, "Sign-in request rejected", e.Description, ri.CorrID)
		return
	}
	// An existing SSO session may satisfy the request.
	if sid := p.sessionFromCookie(r); sid != "" && !strings.Contains(req.Prompt, "login") {
		sess, err := p.c.Store.GetSession(ctx, sid)
		now := p.c.Now()
		// A DBSC-bound session also needs its short-lived bound cookie.
		if err == nil && sess.Active(now) && p.dbscSatisfied(r, sess) && (req.MaxAge < 0 || now.Sub(sess.AuthTime) <= time.Duration(req.MaxAge)*time.Second) {
			u, err := p.c.Store.GetUser(ctx, sess.UserID)
			if err == nil && !u.Disabled {
				if _, ok := p.signInAccess(w, r, req, client, u, sess.AuthTime, sess.AMR, false); !ok {
					return
				}
				_ = p.c.Store.TouchSession(ctx, sid, now)
				p.issueCode(w, r, req, client, sess)
				return
			}
		}
	}
	if strings.Contains(req.Prompt, "none") {
		p.redirectWithError(w, r, &redirectError{Error: newErr(ErrLoginRequired, "the user is not signed in"), redirectURI: req.RedirectURI, state: req.State})
		return
	}
	p.renderLogin(w, r, &interaction{Auth: req}, client, "", "", http.StatusOK)
}

const interactionTTL = 15 * time.Minute

// interaction is what a sign-in continues once the user is signed in:
// exactly one of an authorization request (the code goes to the client's
// redirect URI) or a device approval (RFC 8628: the user confirms a
// device's request). It travels sealed in the sign-in pages.
type interaction struct {
	Auth   *authRequest   `json:"a,omitempty"`
	Device *deviceRequest `json:"d,omitempty"`
}

// clientID names the client the sign-in is for ("" when the state is
// empty or ambiguous, which callers treat as invalid).
func (in *interaction) clientID() string {
	switch {
	case in == nil || (in.Auth == nil) == (in.Device == nil):
		return ""
	case in.Auth != nil:
		return in.Auth.ClientID
	default:
		return in.Device.ClientID
	}
}

// formOrigin is the extra origin the sign-in pages' forms may end up at
// (the redirect URI's, for CSP form-action); a device approval stays on
// Ward.
func (in *interaction) formOrigin() string {
	if in.Auth != nil {
		return originOf(in.Auth.RedirectURI)
	}
	return ""
}

// dpopJKT is the DPoP key the client committed to, if any.
func (in *interaction) dpopJKT() string {
	if in.Auth != nil {
		return in.Auth.DPoPJKT
	}
	return in.Device.DPoPJKT
}

func (p *Provider) renderLogin(w http.ResponseWriter, r *http.Request, in *interaction, c *model.Client, username, msg string, status int) {
	csrf := p.csrfToken(w, r)
	blob, err := p.seal("authreq", interactionTTL, csrf, in)
	if err != nil {
		p.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong.", correlationID(r))
		return
	}
	p.c.Pages.Render(w, status, "login.html", web.LoginData{
		ClientName: c.Name, Username: username, Error: msg, CSRF: csrf, Request: blob, Action: PathLogin,
	}, in.formOrigin())
}

// resumeInteraction checks the CSRF token of a sign-in form post, opens
// its sealed state (field name in the form) into v and loads the client
// that clientID names once v is filled. On failure it has written the
// error page.
func (p *Provider) resumeInteraction(w http.ResponseWriter, r *http.Request, purpose, field string, v any, clientID func() string) (string, *model.Client, bool) {
	corr := correlationID(r)
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	csrf, ok := p.checkCSRF(r)
	if !ok {
		p.c.Pages.Error(w, http.StatusForbidden, "Session expired", "Your sign-in form expired or was not sent from this browser. Go back to the application and start again.", corr)
		return "", nil, false
	}
	if err := p.unseal(purpose, r.PostFormValue(field), csrf, v); err != nil || clientID() == "" {
		p.c.Pages.Error(w, http.StatusBadRequest, "Sign-in expired", "This sign-in took too long or was altered. Go back to the application and start again.", corr)
		return "", nil, false
	}
	c, err := p.client(r.Context(), clientID())
	if err != nil {
		p.c.Pages.Error(w, http.StatusBadRequest, "Sign-in request rejected", "The application is no longer registered.", corr)
		return "", nil, false
	}
	return csrf, c, true
}

// mfaState is the sealed state between the password and the second factor.
type mfaState struct {
	UserID string       `json:"u"`
	In     *interaction `json:"i"`
}

func (p *Provider) handleLogin(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ri := p.info(r)
	var in interaction
	csrf, c, ok := p.resumeInteraction(w, r, "authreq", "req", &in, in.clientID)
	if !ok {
		return
	}
	username := strings.ToLower(strings.TrimSpace(r.PostFormValue("username")))
	u, err := p.c.Identity.CheckPassword(ctx, identity.Attempt{Username: username, Password: r.PostFormValue("password"), IP: ri.IP, UserAgent: ri.UserAgent})
	if err != nil {
		ev := ri.event(model.EventSignInFailed)
		ev.Outcome, ev.Reason, ev.ClientID, ev.Actor = model.OutcomeFailure, identity.Reason(err), c.ID, "anonymous"
		// The typed username is not recorded: people type passwords into it.
		// An existing account is named by its id instead.
		ev.UserID = identity.FailedUserID(err)
		ev.Data = map[string]string{"stage": "password"}
		_ = p.events.Emit(ctx, ev)
		msg := "Incorrect username or password."
		switch {
		case errors.Is(err, identity.ErrLocked):
			msg = "Too many failed attempts. Try again later."
		case errors.Is(err, identity.ErrThrottled):
			msg = throttledMessage(err)
		case !errors.Is(err, identity.ErrInvalidCredentials):
			p.c.Log.ErrorContext(ctx, "check password", "correlation_id", ri.CorrID, "err", err)
			msg = "Sign-in failed. Try again."
		}
		p.renderLogin(w, r, &in, c, username, msg, http.StatusUnauthorized)
		return
	}
	if p.c.Identity.HasTOTP(u) {
		p.renderMFA(w, r, &mfaState{UserID: u.ID, In: &in}, c, csrf, "", http.StatusOK)
		return
	}
	p.completeSignIn(w, r, &in, c, u, []string{"pwd"}, acrPassword)
}

// throttledMessage words a refusal by a sign-in budget: the network's,
// or the whole instance's (its budget of failures, or too many sign-ins
// waiting to be checked).
func throttledMessage(err error) string {
	if identity.Reason(err) == identity.ReasonThrottled {
		return "Too many sign-in attempts from your network. Try again in a minute."
	}
	return "Too many sign-in attempts right now. Try again in a minute."
}

func (p *Provider) renderMFA(w http.ResponseWriter, r *http.Request, st *mfaState, c *model.Client, csrf, msg string, status int) {
	blob, err := p.seal("mfa", 5*time.Minute, csrf, st)
	if err != nil {
		p.c.Pages.Error(w, http.StatusInternalServerError, "Error", "Something went wrong.", correlationID(r))
		return
	}
	p.c.Pages.Render(w, status, "mfa.html", web.MFAData{ClientName: c.Name, Error: msg, CSRF: csrf, State: blob, Action: PathLoginMFA}, st.In.formOrigin())
}

func (p *Provider) handleLoginMFA(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ri := p.info(r)
	var st mfaState
	csrf, c, ok := p.resumeInteraction(w, r, "mfa", "state", &st, func() string { return st.In.clientID() })
	if !ok {
		return
	}
	u, err := p.c.Store.GetUser(ctx, st.UserID)
	if err != nil || u.Disabled {
		p.c.Pages.Error(w, http.StatusBadRequest, "Sign-in failed", "Sign-in failed. Go back to the application and start again.", ri.CorrID)
		return
	}
	if err := p.c.Identity.CheckTOTP(ctx, u, strings.TrimSpace(r.PostFormValue("otp")), ri.IP); err != nil {
		ev := ri.event(model.EventSignInFailed)
		ev.Outcome, ev.Reason, ev.ClientID, ev.UserID, ev.Actor = model.OutcomeFailure, identity.Reason(err), c.ID, u.ID, u.ID
		ev.Data = map[string]string{"stage": "totp"}
		_ = p.events.Emit(ctx, ev)
		msg := "That code is not valid. Try the current code."
		switch {
		case errors.Is(err, identity.ErrTOTPUsed):
			msg = "That code was already used. Wait for the next code from your app."
		case errors.Is(err, identity.ErrLocked) || errors.Is(err, identity.ErrThrottled):
			msg = "Too many failed attempts. Try again later."
		}
		p.renderMFA(w, r, &st, c, csrf, msg, http.StatusUnauthorized)
		return
	}
	p.completeSignIn(w, r, st.In, c, u, []string{"pwd", "otp", "mfa"}, acrMFA)
}

// Authentication context classes.
const (
	acrPassword = "urn:ward:acr:password"
	acrMFA      = "urn:ward:acr:mfa"
)

// completeSignIn creates the SSO session, records the sign-in and
// continues the interaction: it issues the code of an authorization
// request, or asks the user to confirm a device's request.
func (p *Provider) completeSignIn(w http.ResponseWriter, r *http.Request, in *interaction, c *model.Client, u *model.User, amr []string, acr string) {
	ctx := r.Context()
	ri := p.info(r)
	now := p.c.Now()
	var ca *access.Result
	if in.Auth != nil {
		var ok bool
		if ca, ok = p.signInAccess(w, r, in.Auth, c, u, now, amr, true); !ok {
			return
		}
	}
	sess := &model.Session{
		ID: newID(), UserID: u.ID, AuthTime: now, AMR: amr, ACR: acr, IP: ri.IP, UserAgent: ri.UserAgent,
		CreatedAt: now, LastSeen: now, ExpiresAt: now.Add(p.c.Lifetimes.SessionAbsolute), IdleTimeout: p.c.Lifetimes.SessionIdle,
	}
	if err := p.c.Store.CreateSession(ctx, sess); err != nil {
		p.c.Log.ErrorContext(ctx, "create session", "correlation_id", ri.CorrID, "err", err)
		p.c.Pages.Error(w, http.StatusInternalServerError, "Sign-in failed", "Something went wrong on our side.", ri.CorrID)
		return
	}
	ev := ri.event(model.EventSignInSucceeded)
	ev.Actor, ev.UserID, ev.SessionID, ev.ClientID = u.ID, u.ID, sess.ID, c.ID
	// The session starts cookie-only; session.dbsc_registered records a
	// later binding to a browser key.
	ev.Data = map[string]string{"amr": strings.Join(amr, " "), "acr": acr, "session_binding": model.SessionBindingCookie}
	if in.Device != nil {
		ev.Data["flow"] = "device"
	}
	ca.EventData(ev.Data)
	// The sign-in itself is bound when the client committed to a DPoP key
	// (dpop_jkt); otherwise binding is decided at the token endpoint.
	if jkt := in.dpopJKT(); jkt != "" {
		ev.Binding = model.BindingDPoP
		ev.Data["jkt"] = jkt
		// Token protection as far as the sign-in can tell: does the key
		// belong to a registered device? The token endpoint decides.
		ev.Data["token_protection"] = ProtectionUnregisteredKey
		if p.c.Devices != nil {
			if d, err := p.c.Devices.LookupByJKT(ctx, jkt); err == nil && !deviceOf(d, u.ID) {
				ev.Data["token_protection_reason"] = ReasonDeviceOfAnotherUser
			} else if err == nil {
				ev.DeviceID = d.ID
				ev.Data["token_protection"] = ProtectionRegisteredDevice
				if d.Status != model.DeviceActive {
					ev.Data["token_protection"] = ProtectionUnregisteredKey
					ev.Data["token_protection_reason"] = "device_" + d.Status
				}
			}
		}
	} else {
		ev.Binding, ev.BindingReason = model.BindingUnbound, "no_dpop_jkt"
		ev.Data["token_protection"] = ProtectionUnbound
	}
	if err := p.events.Emit(ctx, ev); err != nil {
		p.c.Pages.Error(w, http.StatusInternalServerError, "Sign-in failed", "Something went wrong on our side.", ri.CorrID)
		return
	}
	p.setSessionCookie(w, sess.ID, sess.ExpiresAt)
	p.offerDBSC(w, sess.ID)
	if in.Device != nil {
		p.renderDeviceConfirm(w, r, in.Device, c, sess, u)
		return
	}
	p.issueCode(w, r, in.Auth, c, sess)
}

// issueCode stores a one-time code and redirects to the client.
func (p *Provider) issueCode(w http.ResponseWriter, r *http.Request, req *authRequest, c *model.Client, sess *model.Session) {
	ctx := r.Context()
	now := p.c.Now()
	code := secret.RandomToken()
	ac := &model.AuthCode{
		Hash: p.c.TokenHasher.Sum(code), ClientID: c.ID, UserID: sess.UserID, SessionID: sess.ID,
		RedirectURI: req.RedirectURI, Scope: req.Scope, Nonce: req.Nonce,
		CodeChallenge: req.CodeChallenge, CodeChallengeMethod: "S256", DPoPJKT: req.DPoPJKT,
		AuthTime: sess.AuthTime, AMR: sess.AMR, ACR: sess.ACR, CreatedAt: now, ExpiresAt: now.Add(p.c.Lifetimes.Code),
	}
	if err := p.c.Store.CreateAuthCode(ctx, ac); err != nil {
		p.c.Log.ErrorContext(ctx, "create code", "correlation_id", correlationID(r), "err", err)
		p.redirectWithError(w, r, &redirectError{Error: serverError(err), redirectURI: req.RedirectURI, state: req.State})
		return
	}
	u, _ := url.Parse(req.RedirectURI)
	q := u.Query()
	q.Set("code", code)
	if req.State != "" {
		q.Set("state", req.State)
	}
	q.Set("iss", p.issuer)
	u.RawQuery = q.Encode()
	web.SecurityHeaders(w, originOf(req.RedirectURI))
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// redirectWithError sends an authorization error to the client (RFC 6749
// §4.1.2.1) with iss (RFC 9207).
func (p *Provider) redirectWithError(w http.ResponseWriter, r *http.Request, re *redirectError) {
	u, err := url.Parse(re.redirectURI)
	if err != nil {
		p.c.Pages.Error(w, http.StatusBadRequest, "Sign-in request rejected", re.Description, correlationID(r))
		return
	}
	q := u.Query()
	q.Set("error", re.Code)
	if re.Description != "" {
		q.Set("error_description", re.Description)
	}
	if re.state != "" {
		q.Set("state", re.state)
	}
	q.Set("iss", p.issuer)
	u.RawQuery = q.Encode()
	web.SecurityHeaders(w, originOf(re.redirectURI))
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// originOf returns scheme://host of an absolute URL, for CSP form-action.
func originOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}
