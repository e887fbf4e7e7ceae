package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// ErrReauthRequired matches every *ReauthError: the server refuses to
// refresh the device's session until the user signs in again.
var ErrReauthRequired = errors.New("agent: the user must sign in again")

// ReauthError is a refresh the server refused until the user signs in
// again, where a new sign-in on this device can help: Conditional Access
// wants multi-factor authentication or a more recent sign-in, a resource's
// claims challenge asks for an acr the session does not have, the password
// was changed or the session revoked (Ward answers invalid_grant, or
// interaction_required / login_required / consent_required). Refusals no
// sign-in can cure — the device or the user disabled, access blocked —
// are ErrSessionEnded only.
//
// It matches ErrReauthRequired, ErrSessionEnded (the session cannot go on
// without the user; code written for ErrSessionEnded keeps working) and
// the *OAuthError. Client.Reauthenticate with Claims, or a Client opened
// with Options.Interactive, signs the user in again.
type ReauthError struct {
	// Claims is the claims request (JSON) the new sign-in must satisfy:
	// the resource's claims challenge, if one led to the refresh, with the
	// CAE client capability.
	Claims string
	// Err is the token endpoint's answer.
	Err *OAuthError
}

func (e *ReauthError) Error() string {
	return "agent: the device session needs a new sign-in by the user (" + e.Err.Error() + ")"
}

// Unwrap makes errors.Is and errors.As see ErrReauthRequired,
// ErrSessionEnded and the *OAuthError.
func (e *ReauthError) Unwrap() []error { return []error{ErrReauthRequired, ErrSessionEnded, e.Err} }

// DevicePrompt is what the user needs to approve a sign-in of this device
// (RFC 8628 §3.3): open VerificationURI on any device, enter UserCode (or
// open VerificationURIComplete, which holds the code), sign in, approve.
type DevicePrompt struct {
	VerificationURI         string
	VerificationURIComplete string // "" if the server sent none
	UserCode                string
	// ExpiresAt is when the code stops working.
	ExpiresAt time.Time
	// Reason is the server's explanation why a new sign-in is needed (its
	// error description, safe to show: it never holds a token); "" at
	// enrolment.
	Reason string
}

// reauthTerminal are parts of Ward's invalid_grant descriptions for
// refusals a new sign-in on this device cannot cure; prompting the user
// would only end in the same refusal.
var reauthTerminal = []string{
	"can no longer obtain tokens", // the device is disabled or lost
	"the user is disabled",
	"the user no longer exists",
	"blocked by a conditional access policy",
}

// needsSignIn reports whether a refused refresh could succeed after the
// user signs in again.
func needsSignIn(oe *OAuthError) bool {
	switch oe.Code {
	case "interaction_required", "login_required", "consent_required", "account_selection_required":
		return true
	case "invalid_grant":
		d := strings.ToLower(oe.Description)
		for _, s := range reauthTerminal {
			if strings.Contains(d, s) {
				return false
			}
		}
		return true
	}
	return false
}

// Reauthenticate signs the user in again now, through the device
// authorization grant bound to the device key, with claims (the Claims of
// a *ReauthError, a resource's claims challenge JSON, or ""), and saves
// the new session; the old refresh token is revoked. prompt shows the code
// to the user (nil: Options.Interactive). Use it after a *ReauthError from
// a Client opened without Options.Interactive.
func (c *Client) Reauthenticate(ctx context.Context, claims string, prompt func(context.Context, DevicePrompt) error) error {
	if prompt == nil {
		prompt = c.interactive
	}
	if prompt == nil {
		return errors.New("agent: Reauthenticate: no prompt to show the code")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.flushLocked(); err != nil {
		return err
	}
	m, err := c.metaLocked(ctx)
	if err != nil {
		return err
	}
	if c.cfg.path != "" {
		unlock, err := lockFile(ctx, c.cfg.path+".lock")
		if err != nil {
			return err
		}
		defer unlock()
		// Revoke what is on disk, not an older copy in memory.
		if disk, err := LoadConfig(c.cfg.path); err == nil && disk.DeviceID == c.cfg.DeviceID && disk.RefreshToken != "" {
			c.cfg.RefreshToken, c.cfg.AccessToken, c.cfg.TokenExpiry = disk.RefreshToken, disk.AccessToken, disk.TokenExpiry
		}
	}
	_, err = c.reauthLocked(ctx, m, withCapability(claims), "", prompt)
	return err
}

// reauthLocked signs the user in again through the device authorization
// grant with the device key (the caller holds c.mu and the file lock),
// checks that the new session is the enrolled user's, saves it and revokes
// the old refresh token. claims is the claims request for the new tokens
// (capability included); reason is shown to the user.
func (c *Client) reauthLocked(ctx context.Context, m *metadata, claims, reason string, prompt func(context.Context, DevicePrompt) error) (string, error) {
	if m.DeviceAuthorizationEndpoint == "" {
		return "", fmt.Errorf("agent: %s does not offer the device authorization grant (no device_authorization_endpoint)", c.cfg.Server)
	}
	tr, err := c.deviceGrant(ctx, m, deviceGrantParams{
		clientID: c.cfg.ClientID, scope: reauthScope(c.cfg.Scope), claims: claims, claimsToAuthorize: true,
		prompt: func(p DevicePrompt) error {
			p.Reason = reason
			return prompt(ctx, p)
		},
		now: c.now, sleep: c.sleep,
	})
	if err != nil {
		return "", err
	}
	// Anyone can type the code: the session must be that of the user the
	// device is registered to (the device API shows a device only to its
	// owner), or the device would act for someone else from now on.
	if err := c.checkOwner(ctx, tr.AccessToken); err != nil {
		c.revokeToken(ctx, tr.RefreshToken)
		return "", err
	}
	old := c.cfg.RefreshToken.Reveal()
	next := c.cfg.clone()
	next.RefreshToken, next.AccessToken = Secret(tr.RefreshToken), Secret(tr.AccessToken)
	next.TokenExpiry = expiry(c.now(), tr.ExpiresIn)
	c.cfg = next
	if next.path != "" {
		if err := next.Save(); err != nil {
			c.dirty = true
			return "", fmt.Errorf("agent: signed in again, but the new session could not be saved (fix the problem before the agent exits): %w", err)
		}
	}
	// The old session token is of no further use; a refresh token that was
	// refused (an acr or policy the session does not meet) may still be
	// live, so give it up.
	if old != "" && old != tr.RefreshToken {
		c.revokeToken(ctx, old)
	}
	return tr.AccessToken, nil
}

// checkOwner fetches the device with accessToken: a 404 (or 403) means the
// token's user is not the device's.
func (c *Client) checkOwner(ctx context.Context, accessToken string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.devicesURL(c.cfg.DeviceID), nil)
	if err != nil {
		return fmt.Errorf("agent: device check: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "DPoP "+accessToken)
	resp, err := c.hc.Do(req) // the DPoP transport adds the proof with ath
	if err != nil {
		return fmt.Errorf("agent: device check: %w", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
		return nil
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusForbidden:
		return errors.New("agent: the sign-in was by another user than the one this device is enrolled for; the session was not changed")
	}
	return responseError("device check", resp)
}

// revokeToken gives up a refresh token (best effort).
func (c *Client) revokeToken(ctx context.Context, refreshToken string) {
	if c.meta == nil || c.meta.RevocationEndpoint == "" || refreshToken == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var ignored map[string]any
	_ = postForm(ctx, c.hc, c.meta.RevocationEndpoint, "revocation", map[string][]string{
		"token": {refreshToken}, "token_type_hint": {"refresh_token"}, "client_id": {c.cfg.ClientID}}, &ignored)
}

// reauthScope is what a new sign-in of an enrolled device asks for: the
// scope it enrolled with (a custom one, such as an administrator's), less
// the device registration it no longer needs, or the session scope.
func reauthScope(enrolled string) string {
	var out []string
	for _, s := range strings.Fields(enrolled) {
		if s != ScopeDevice {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return sessionScope
	}
	return strings.Join(out, " ")
}
