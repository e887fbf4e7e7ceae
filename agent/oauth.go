package agent

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

	"github.com/ward-idp/ward/agent/internal/cae"
	"github.com/ward-idp/ward/httpauth"
)

// Protocol constants.
const (
	grantDeviceCode   = "urn:ietf:params:oauth:grant-type:device_code"
	grantRefreshToken = "refresh_token"
	// ScopeDevice is the scope Ward requires to register a device; the
	// server's administrator grants it to the agent's client.
	ScopeDevice = "ward:device"
	// DefaultScope is what the agent asks for at enrolment: an OpenID
	// session that can be refreshed, and the registration of the device.
	DefaultScope = sessionScope + " " + ScopeDevice
	// sessionScope is what a new sign-in of an enrolled device asks for:
	// the device is registered already.
	sessionScope = "openid profile offline_access"

	maxResponse = 1 << 20 // bound on any response body the agent reads
)

// Sentinel errors; test with errors.Is.
var (
	// ErrExpired: the user code expired before the user approved it.
	ErrExpired = errors.New("agent: the code expired before it was approved; run the enrolment again")
	// ErrDenied: the user (or the server) declined the device authorization.
	ErrDenied = errors.New("agent: the sign-in was denied")
	// ErrAlreadyRegistered: the device key is registered already.
	ErrAlreadyRegistered = errors.New("agent: this device key is already registered")
	// ErrSessionEnded: the refresh token was refused (invalid_grant): the
	// session was revoked or expired, or the device or the user was
	// disabled. When a new sign-in by the user can cure it (a *ReauthError,
	// which also matches ErrReauthRequired) the agent can sign in again
	// (Options.Interactive, Client.Reauthenticate); otherwise the device
	// must be enrolled again.
	ErrSessionEnded = errors.New("agent: the device session has ended (revoked, expired or device disabled); enrol again with `ward device enroll`")
)

// OAuthError is an error response of the server (RFC 6749 §5.2 shape,
// also used by the device API).
type OAuthError struct {
	Endpoint    string // which call failed, e.g. "token", "device registration"
	Status      int
	Code        string // the "error" member, "" if the body had none
	Description string
}

func (e *OAuthError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "agent: %s: server answered %d", e.Endpoint, e.Status)
	if e.Code != "" {
		fmt.Fprintf(&b, " %s", e.Code)
	}
	if e.Description != "" {
		fmt.Fprintf(&b, ": %s", e.Description)
	}
	return b.String()
}

// metadata is the part of the discovery document the agent needs.
type metadata struct {
	Issuer                      string `json:"issuer"`
	TokenEndpoint               string `json:"token_endpoint"`
	DeviceAuthorizationEndpoint string `json:"device_authorization_endpoint"`
	UserinfoEndpoint            string `json:"userinfo_endpoint"`
	RevocationEndpoint          string `json:"revocation_endpoint"`
}

// discover fetches the server's OpenID configuration and checks the issuer.
func discover(ctx context.Context, hc *http.Client, issuer string) (*metadata, error) {
	u := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("agent: server URL: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("agent: discovery: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, responseError("discovery", resp)
	}
	var m metadata
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponse)).Decode(&m); err != nil {
		return nil, fmt.Errorf("agent: discovery: malformed document: %v", err)
	}
	if strings.TrimSuffix(m.Issuer, "/") != strings.TrimSuffix(issuer, "/") {
		return nil, fmt.Errorf("agent: discovery: the server says its issuer is %q, not %q", m.Issuer, issuer)
	}
	if m.TokenEndpoint == "" {
		return nil, errors.New("agent: discovery: no token_endpoint")
	}
	return &m, nil
}

// checkServerURL accepts https URLs, and http only for loopback hosts.
func checkServerURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("agent: server %q: want the issuer URL, e.g. https://id.example.com", s)
	}
	if u.Scheme == "http" && !cae.LoopbackHost(u.Hostname()) {
		return "", fmt.Errorf("agent: server %q: tokens must not travel in clear; use https (http is allowed for localhost only)", s)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// responseError turns a non-success response into an *OAuthError, reading
// the JSON error members when present.
func responseError(endpoint string, resp *http.Response) *OAuthError {
	e := &OAuthError{Endpoint: endpoint, Status: resp.StatusCode}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var m struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if isJSON(resp.Header.Get("Content-Type")) && json.Unmarshal(body, &m) == nil {
		e.Code, e.Description = m.Error, m.Description
	}
	if e.Code == "" {
		// Resource errors come in WWW-Authenticate (RFC 6750 §3).
		cs, _ := httpauth.Parse(resp.Header.Values("WWW-Authenticate")...)
		for _, c := range cs {
			if c.Param("error") != "" {
				e.Code, e.Description = c.Param("error"), c.Param("error_description")
				break
			}
		}
	}
	if e.Code == "" && e.Description == "" {
		if s := strings.TrimSpace(string(body)); s != "" && !isJSON(resp.Header.Get("Content-Type")) && len(s) < 200 && !strings.ContainsAny(s, "<>") {
			e.Description = s
		} else {
			e.Description = http.StatusText(resp.StatusCode)
		}
	}
	return e
}

func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// tokenResponse is a successful token endpoint answer.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
	IDToken      string `json:"id_token"`
}

// postForm POSTs a form through hc (whose transport adds the DPoP proof)
// and decodes a JSON answer into out. Non-2xx answers are *OAuthError.
func postForm(ctx context.Context, hc *http.Client, endpoint, what string, form url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("agent: %s: %w", what, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("agent: %s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return responseError(what, resp)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponse)).Decode(out); err != nil {
		return fmt.Errorf("agent: %s: malformed response: %v", what, err)
	}
	return nil
}

// checkToken validates a token response: DPoP-bound, with an access token.
func checkToken(tr *tokenResponse, wantRefresh bool) error {
	if tr.AccessToken == "" {
		return errors.New("agent: token response without access_token")
	}
	if !strings.EqualFold(tr.TokenType, "DPoP") {
		return fmt.Errorf("agent: the server issued a %q token, not a DPoP-bound one; refusing an unprotected session", tr.TokenType)
	}
	if wantRefresh && tr.RefreshToken == "" {
		return errors.New("agent: the server issued no refresh token (is offline_access allowed for the client?)")
	}
	return nil
}

// expiry converts expires_in to an absolute time, a little early so a
// token is not sent in its last seconds.
func expiry(now time.Time, expiresIn int64) time.Time {
	if expiresIn <= 0 {
		return now.Add(5 * time.Minute)
	}
	d := time.Duration(expiresIn) * time.Second
	return now.Add(d - min(d/10, 30*time.Second))
}

// tokenError reports whether resp is a 401 whose challenge says the access
// token is invalid (expired, revoked): worth one refresh and retry.
func tokenError(resp *http.Response) bool {
	if resp.StatusCode != http.StatusUnauthorized {
		return false
	}
	cs, _ := httpauth.Parse(resp.Header.Values("WWW-Authenticate")...)
	for _, c := range cs {
		if c.Param("error") == "invalid_token" {
			return true
		}
	}
	return false
}

// claimsChallenge returns the claims a resource asks for in a continuous
// access evaluation challenge (401, error="insufficient_claims" or
// "insufficient_user_authentication" with a claims parameter that decodes
// to a JSON object) as JSON, or "" for any other answer.
func claimsChallenge(resp *http.Response) string {
	ch, ok := cae.Challenge(resp)
	if !ok {
		return ""
	}
	return string(ch.Claims)
}

// withCapability adds the CAE client capability (xms_cc cp1) to a claims
// request: the agent follows claims challenges, so Ward may give it
// long-lived access tokens (clients marked cae_capable).
func withCapability(claims string) string { return cae.WithCapability(claims) }
