// Package oauth2x lets an ordinary golang.org/x/oauth2 application follow
// Ward's Continuous Access Evaluation (CAE).
//
// A resource that follows Ward's revocation stream (the public rs package,
// or ward gateway) rejects a token issued before a revocation, or one
// without the authentication strength the resource now requires, with
//
//	401 Unauthorized
//	WWW-Authenticate: DPoP error="insufficient_claims", claims="<base64url JSON>"
//
// or, for a step-up, the RFC 9470 form with
// error="insufficient_user_authentication", acr_values and max_age. The
// client goes back to Ward with the decoded JSON as the claims request
// parameter — on a refresh (Ward evaluates the session and its Conditional
// Access policies again) or, when that is refused, through the
// authorization endpoint so that the user signs in again — and retries
// with the new token.
//
// x/oauth2 cannot do this by itself: its refresh sends no extra
// parameters, and its Transport does not look at responses. This package
// adds:
//
//   - [ParseChallenge]: the claims challenge of a response, both forms; a
//     challenge whose claims are not base64 of a JSON object is refused.
//   - [ClaimsOption]: an oauth2.AuthCodeOption carrying claims, for
//     Config.AuthCodeURL and Config.Exchange (the interactive path). It
//     always declares the CAE client capability (xms_cc "cp1"), so Ward
//     issues long-lived CAE tokens to clients marked cae_capable.
//   - [RefreshToken]: the refresh_token grant with claims, posted to
//     Config.Endpoint.TokenURL with the Config's client authentication.
//   - [Client]: owns the token (Ward rotates refresh tokens on every use,
//     so exactly one party may refresh), refreshes it when it expires, and
//     provides an http.RoundTripper that sends the access token — as a
//     Bearer token, or DPoP-bound with a fresh proof per request when
//     given a [dpop.Signer] — and answers a claims challenge with one
//     refresh with the claims and one retry.
//   - [ReauthError]: what a refresh refused until the user signs in again
//     (interaction_required, login_required, consent_required,
//     invalid_grant) becomes. It carries the claims: send the user through
//     Config.AuthCodeURL with ClaimsOption(err.Claims), then
//     Client.Exchange with the same option.
//
// Tokens never appear in errors. Access tokens are sent over https only,
// or over http to a loopback address (development).
package oauth2x

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/ward-idp/ward/agent/internal/cae"
	"github.com/ward-idp/ward/dpop"
)

// Capability is the CAE client capability every claims request of this
// package declares (access_token.xms_cc = ["cp1"]): "this client follows
// claims challenges".
const Capability = "cp1"

// maxResponse bounds the token endpoint answers read.
const maxResponse = 1 << 20

// Challenge is a resource's claims challenge.
type Challenge struct {
	// Scheme is the challenge's auth-scheme ("DPoP" or "Bearer").
	Scheme string
	// Error is "insufficient_claims" (the token was revoked) or
	// "insufficient_user_authentication" (RFC 9470 step-up).
	Error string
	// Description is the resource's error_description.
	Description string
	// Claims is the decoded claims challenge, a JSON object, as the
	// resource sent it. ClaimsRequest(Claims) is what to send back.
	Claims string
	// ACRValues are the acceptable authentication context classes and
	// MaxAge the largest acceptable age of the sign-in in seconds (-1 if
	// absent): the RFC 9470 step-up parameters.
	ACRValues []string
	MaxAge    int
}

// ParseChallenge returns the claims challenge of a resource's answer: a
// 401 whose WWW-Authenticate has an insufficient_claims or
// insufficient_user_authentication challenge (or any challenge with a
// claims parameter) whose claims decode — base64url, or Entra's padded
// base64 — to a JSON object of at most 4 KiB. Anything else, including a
// challenge with malformed claims, is not a challenge to follow: ok is
// false.
func ParseChallenge(resp *http.Response) (c *Challenge, ok bool) {
	ch, ok := cae.Challenge(resp)
	if !ok {
		return nil, false
	}
	return &Challenge{Scheme: ch.Scheme, Error: ch.Error, Description: ch.ErrorDescription, Claims: string(ch.Claims),
		ACRValues: ch.RequiredACR(), MaxAge: ch.MaxAge}, true
}

// ClaimsRequest returns the claims request parameter to send for claims
// (a challenge's Claims, a ReauthError's Claims, or ""): its members, with
// the CAE client capability added to access_token.
func ClaimsRequest(claims string) string { return cae.WithCapability(claims) }

// ClaimsOption is an oauth2.AuthCodeOption that sets the claims parameter
// to ClaimsRequest(claims). Give it to Config.AuthCodeURL, so that the
// sign-in meets what the resource asked for (an acr, a fresh sign-in),
// and to the code exchange, so that the tokens are CAE tokens newer than
// the revocation.
func ClaimsOption(claims string) oauth2.AuthCodeOption {
	return oauth2.SetAuthURLParam("claims", ClaimsRequest(claims))
}

// DPoPOption binds the authorization code to the signer's key (the
// dpop_jkt authorization request parameter, RFC 9449 §10): the code can
// only be redeemed with a proof of that key.
func DPoPOption(s *dpop.Signer) oauth2.AuthCodeOption {
	return oauth2.SetAuthURLParam("dpop_jkt", s.Thumbprint())
}

// ErrReauthRequired matches every *ReauthError.
var ErrReauthRequired = errors.New("oauth2x: the user must sign in again")

// ReauthError is a refresh the authorization server refused until the user
// signs in again: interaction_required, login_required, consent_required,
// or invalid_grant (the session ended, the password changed, Conditional
// Access wants multi-factor authentication or a newer sign-in, the session
// does not meet a requested acr). Send the user through
//
//	cfg.AuthCodeURL(state, oauth2x.ClaimsOption(err.Claims), …)
//
// and exchange the code with the same option.
type ReauthError struct {
	// Claims is what the new sign-in must satisfy (the resource's claims
	// challenge, or "" when the refresh was for an expired token). Pass it
	// to ClaimsOption.
	Claims string
	// Challenge is the resource's challenge that led to the refresh, nil
	// if none did.
	Challenge *Challenge
	// Err is the token endpoint's answer, an *oauth2.RetrieveError.
	Err error
}

func (e *ReauthError) Error() string {
	var re *oauth2.RetrieveError
	if errors.As(e.Err, &re) && re.ErrorCode != "" {
		s := "oauth2x: the user must sign in again (token endpoint: " + re.ErrorCode
		if re.ErrorDescription != "" {
			s += ": " + re.ErrorDescription
		}
		return s + ")"
	}
	return "oauth2x: the user must sign in again"
}

// Unwrap makes errors.Is and errors.As see ErrReauthRequired and Err.
func (e *ReauthError) Unwrap() []error { return []error{ErrReauthRequired, e.Err} }

// needsSignIn reports the token endpoint error codes only a new sign-in
// can cure.
func needsSignIn(code string) bool {
	switch code {
	case "interaction_required", "login_required", "consent_required", "account_selection_required", "invalid_grant":
		return true
	}
	return false
}

// RefreshToken redeems refreshToken at cfg.Endpoint.TokenURL with claims
// (a resource's claims challenge, a ReauthError's Claims, or "") and the
// CAE client capability, and returns the new token (the refresh token
// stays the same if the server did not rotate it). The client
// authenticates as Config.Exchange does: client_id in the body for a
// public client (no ClientSecret), otherwise by Endpoint.AuthStyle (auto:
// HTTP Basic, then the body after an invalid_client). The HTTP client is
// the oauth2.HTTPClient value of ctx, as with x/oauth2; for DPoP-bound
// tokens it must add the proof (a dpop.Transport, see Client.Context).
//
// A refusal that needs the user is a *ReauthError, other error answers
// *oauth2.RetrieveError. Ward rotates refresh tokens: the caller must
// store the returned refresh token, and never present the old one again
// (that revokes the session).
func RefreshToken(ctx context.Context, cfg *oauth2.Config, refreshToken, claims string) (*oauth2.Token, error) {
	hc := http.DefaultClient
	if c, ok := ctx.Value(oauth2.HTTPClient).(*http.Client); ok && c != nil {
		hc = c
	}
	tok, _, err := refresh(ctx, hc, cfg, oauth2.AuthStyleAutoDetect, refreshToken, claims)
	return tok, err
}

// refresh posts the refresh_token grant with claims. style is the client
// authentication to use (AutoDetect: learn it); the one that worked is
// returned.
func refresh(ctx context.Context, hc *http.Client, cfg *oauth2.Config, style oauth2.AuthStyle, refreshToken, claims string) (*oauth2.Token, oauth2.AuthStyle, error) {
	if refreshToken == "" {
		return nil, style, errors.New("oauth2x: no refresh token")
	}
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}, "claims": {ClaimsRequest(claims)}}
	tok, style, err := postToken(ctx, hc, cfg, style, form)
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && needsSignIn(re.ErrorCode) {
			return nil, style, &ReauthError{Claims: claims, Err: re}
		}
		return nil, style, err
	}
	if tok.RefreshToken == "" {
		tok.RefreshToken = refreshToken
	}
	return tok, style, nil
}

// postToken sends a token request with the client's authentication.
func postToken(ctx context.Context, hc *http.Client, cfg *oauth2.Config, style oauth2.AuthStyle, form url.Values) (*oauth2.Token, oauth2.AuthStyle, error) {
	if cfg == nil || cfg.Endpoint.TokenURL == "" {
		return nil, style, errors.New("oauth2x: no token endpoint (Config.Endpoint.TokenURL)")
	}
	if cfg.ClientSecret == "" {
		style = oauth2.AuthStyleInParams // a public client: client_id in the body
	}
	if style != oauth2.AuthStyleAutoDetect {
		tok, err := tokenRoundTrip(ctx, hc, cfg, style, form)
		return tok, style, err
	}
	tok, err := tokenRoundTrip(ctx, hc, cfg, oauth2.AuthStyleInHeader, form)
	var re *oauth2.RetrieveError
	if err == nil || !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
		return tok, oauth2.AuthStyleInHeader, err
	}
	// The server did not take HTTP Basic: try the body. A refused client
	// authentication has not used the refresh token up.
	tok, err = tokenRoundTrip(ctx, hc, cfg, oauth2.AuthStyleInParams, form)
	return tok, oauth2.AuthStyleInParams, err
}

func tokenRoundTrip(ctx context.Context, hc *http.Client, cfg *oauth2.Config, style oauth2.AuthStyle, form url.Values) (*oauth2.Token, error) {
	v := url.Values{}
	for k, vs := range form {
		v[k] = vs
	}
	if style == oauth2.AuthStyleInParams {
		v.Set("client_id", cfg.ClientID)
		if cfg.ClientSecret != "" {
			v.Set("client_secret", cfg.ClientSecret)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.Endpoint.TokenURL, strings.NewReader(v.Encode()))
	if err != nil {
		return nil, fmt.Errorf("oauth2x: token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if style == oauth2.AuthStyleInHeader {
		// RFC 6749 §2.3.1: form-urlencoded before Basic encoding.
		req.SetBasicAuth(url.QueryEscape(cfg.ClientID), url.QueryEscape(cfg.ClientSecret))
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("oauth2x: token request: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("oauth2x: token response: %w", err)
	}
	var tj struct {
		AccessToken      string      `json:"access_token"`
		TokenType        string      `json:"token_type"`
		RefreshToken     string      `json:"refresh_token"`
		ExpiresIn        json.Number `json:"expires_in"`
		Error            string      `json:"error"`
		ErrorDescription string      `json:"error_description"`
		ErrorURI         string      `json:"error_uri"`
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	jsonBody := mt == "application/json" || strings.HasSuffix(mt, "+json")
	parseErr := errors.New("not JSON")
	if jsonBody {
		parseErr = json.Unmarshal(body, &tj)
	}
	if resp.StatusCode/100 != 2 || tj.Error != "" {
		re := &oauth2.RetrieveError{Response: resp, Body: body}
		if parseErr == nil {
			re.ErrorCode, re.ErrorDescription, re.ErrorURI = tj.Error, tj.ErrorDescription, tj.ErrorURI
		}
		if re.ErrorCode == "" && resp.StatusCode == http.StatusUnauthorized {
			re.ErrorCode = "invalid_client" // RFC 6749 §5.2: a 401 is a client authentication failure
		}
		return nil, re
	}
	if parseErr != nil {
		return nil, fmt.Errorf("oauth2x: token response: not a JSON document (%s)", resp.Header.Get("Content-Type"))
	}
	if tj.AccessToken == "" {
		return nil, errors.New("oauth2x: token response without access_token")
	}
	tok := &oauth2.Token{AccessToken: tj.AccessToken, TokenType: tj.TokenType, RefreshToken: tj.RefreshToken}
	if n, err := tj.ExpiresIn.Int64(); err == nil && n > 0 {
		tok.ExpiresIn = n
	}
	var extra map[string]any
	_ = json.Unmarshal(body, &extra) // id_token, scope, …
	return tok.WithExtra(extra), nil
}

// expiryOf sets tok.Expiry from ExpiresIn at now, when the server gave a
// lifetime.
func expiryOf(tok *oauth2.Token, now time.Time) {
	if tok.ExpiresIn > 0 {
		tok.Expiry = now.Add(time.Duration(tok.ExpiresIn) * time.Second)
	}
}
