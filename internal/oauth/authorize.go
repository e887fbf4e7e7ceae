package oauth

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/authz"
	"github.com/ward-idp/ward/internal/oauth/browser"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/web"
)

// Parameters of an authorization request that may appear at most once.
var authParams = []string{"response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
	"code_challenge", "code_challenge_method", "dpop_jkt", "prompt", "max_age", "response_mode", "request_uri", "request", "claims"}

var (
	pkceChallengeRE = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`) // base64url(SHA-256)
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
func (p *Provider) parseAuthorize(ctx context.Context, q url.Values) (*authz.Request, *model.Client, *Error, *redirectError) {
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
		var e *Error
		if q, e = p.pushedRequest(ctx, ru, clientID); e != nil {
			return nil, nil, e, nil
		}
	}
	redirectURI := q.Get("redirect_uri")
	if redirectURI == "" || !c.AllowsRedirect(redirectURI) {
		return nil, nil, newErr(ErrInvalidRequest, "redirect_uri is missing or not registered for this client").WithReason("redirect_uri_mismatch"), nil
	}
	req, e := checkAuthorize(c, q)
	if e != nil {
		return nil, c, e, &redirectError{Error: e, redirectURI: redirectURI, state: q.Get("state")}
	}
	req.ClientID, req.RedirectURI = clientID, redirectURI
	return req, c, nil, nil
}

// pushedRequest takes the parameters of the pushed request ru of client
// clientID, which it uses up.
func (p *Provider) pushedRequest(ctx context.Context, ru, clientID string) (url.Values, *Error) {
	pr, err := p.c.Store.ConsumePushedRequest(ctx, ru, p.c.Now())
	if err != nil || pr.ClientID != clientID || !p.c.Now().Before(pr.ExpiresAt) {
		if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrAlreadyUsed) {
			return nil, serverError(err)
		}
		return nil, newErr(ErrInvalidRequestURI, "request_uri is invalid, expired or already used")
	}
	q := url.Values{}
	for k, v := range pr.Params {
		q.Set(k, v)
	}
	q.Set("client_id", clientID)
	return q, nil
}

// checkAuthorize checks the parameters of an authorization request of
// client c whose redirect URI is verified, so that its errors go there.
func checkAuthorize(c *model.Client, q url.Values) (*authz.Request, *Error) {
	if q.Get("request") != "" {
		return nil, newErr(ErrRequestNotSupported, "request objects are not supported; use pushed authorization requests")
	}
	if rt := q.Get("response_type"); rt != "code" {
		if rt == "" {
			return nil, newErr(ErrInvalidRequest, "response_type is required")
		}
		return nil, newErr(ErrUnsupportedResponseType, "only response_type=code is supported")
	}
	if rm := q.Get("response_mode"); rm != "" && rm != "query" {
		return nil, newErr(ErrInvalidRequest, "only response_mode=query is supported")
	}
	if !c.AllowsGrant(model.GrantAuthorizationCode) {
		return nil, newErr(ErrUnauthorizedClient, "client may not use the authorization code grant")
	}
	cc, e := checkChallenge(q.Get("code_challenge"), q.Get("code_challenge_method"))
	if e != nil {
		return nil, e
	}
	scope, e := authz.CheckScope(c, q.Get("scope"))
	if e != nil {
		return nil, newErr(e.Code, e.Description)
	}
	jkt := q.Get("dpop_jkt")
	if jkt != "" && !jktRE.MatchString(jkt) {
		return nil, newErr(ErrInvalidRequest, "dpop_jkt is malformed")
	}
	prompt, maxAge, e := checkPrompt(q.Get("prompt"), q.Get("max_age"))
	if e != nil {
		return nil, e
	}
	if len(q.Get("state")) > 2048 || len(q.Get("nonce")) > 512 {
		return nil, newErr(ErrInvalidRequest, "state or nonce too long")
	}
	claims, e := authz.ParseClaims(q.Get("claims"))
	if e != nil {
		return nil, newErr(e.Code, e.Description)
	}
	return &authz.Request{
		Scope: scope, State: q.Get("state"), Nonce: q.Get("nonce"),
		CodeChallenge: cc, DPoPJKT: jkt, Prompt: prompt, MaxAge: maxAge, Claims: claims,
	}, nil
}

// checkChallenge checks the PKCE challenge: required, S256 (RFC 7636).
func checkChallenge(cc, method string) (string, *Error) {
	if cc == "" {
		return "", newErr(ErrInvalidRequest, "code_challenge is required (PKCE with S256)")
	}
	if method != "S256" {
		return "", newErr(ErrInvalidRequest, "code_challenge_method must be S256")
	}
	if !pkceChallengeRE.MatchString(cc) {
		return "", newErr(ErrInvalidRequest, "code_challenge is malformed")
	}
	return cc, nil
}

// checkPrompt checks prompt and max_age (-1 when absent).
func checkPrompt(prompt, maxAgeParam string) (string, int, *Error) {
	for _, v := range strings.Fields(prompt) {
		if v != "none" && v != "login" && v != "consent" && v != "select_account" {
			return "", 0, newErr(ErrInvalidRequest, "unsupported prompt value")
		}
	}
	if strings.Contains(prompt, "none") && len(strings.Fields(prompt)) > 1 {
		return "", 0, newErr(ErrInvalidRequest, "prompt=none cannot be combined with other values")
	}
	maxAge := -1
	if maxAgeParam != "" {
		n, err := strconv.Atoi(maxAgeParam)
		if err != nil || n < 0 {
			return "", 0, newErr(ErrInvalidRequest, "max_age must be a non-negative integer")
		}
		maxAge = n
	}
	return prompt, maxAge, nil
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
	p.signIn.Authorize(w, r, req, client)
}

// IssueCode stores a one-time code for the signed-in session sess and
// redirects the browser to the client (RFC 6749 §4.1.2, with iss: RFC
// 9207).
func (p *Provider) IssueCode(w http.ResponseWriter, r *http.Request, req *authz.Request, c *model.Client, sess *model.Session) {
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
	web.SecurityHeaders(w, browser.OriginOf(req.RedirectURI))
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// RedirectError sends an authorization error to the client of req (its
// verified redirect URI, with its state).
func (p *Provider) RedirectError(w http.ResponseWriter, r *http.Request, req *authz.Request, e *Error) {
	p.redirectWithError(w, r, &redirectError{Error: e, redirectURI: req.RedirectURI, state: req.State})
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
	web.SecurityHeaders(w, browser.OriginOf(re.redirectURI))
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}
