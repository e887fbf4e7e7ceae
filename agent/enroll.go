package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ward-idp/ward/agent/keystore"
	"github.com/ward-idp/ward/agent/posture"
)

// Version is the agent version reported at registration.
var Version = "dev"

// ErrPostureNotSent: the device was enrolled and its configuration saved,
// but the first posture report failed; `ward device posture --send`
// retries it.
var ErrPostureNotSent = errors.New("agent: enrolled, but the first posture report was not accepted")

// EnrollOptions configure Enroll.
type EnrollOptions struct {
	// Server is the Ward issuer URL (https, or http on loopback).
	Server string
	// ClientID is the agent's OAuth client; "" means DefaultClientID.
	ClientID string
	// Scope is requested; "" means DefaultScope.
	Scope string
	// Store creates the device key (required).
	Store keystore.Store
	// KeyDir is recorded in the configuration so that later runs open the
	// same store directory ("" for the store's default).
	KeyDir string
	// KeyName names the new device key; "" picks "device-<random>".
	KeyName string
	// Collector gathers the posture sent at registration; nil means
	// posture.NewCollector().
	Collector posture.Collector
	// Prompt shows the user where to approve the sign-in (required). It is
	// called once; polling starts when it returns.
	Prompt func(verificationURI, verificationURIComplete, userCode string)
	// HTTPClient supplies the base transport and timeout (default
	// http.DefaultTransport, 30 s).
	HTTPClient *http.Client
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Sleep waits between polls (default: a timer honouring ctx). Tests
	// replace it to move a fake clock instead.
	Sleep func(ctx context.Context, d time.Duration) error
	// ConfigPath is where the configuration is saved ("" for
	// DefaultConfigPath).
	ConfigPath string
}

// Enroll registers this device with a Ward server:
//
//  1. discovery;
//  2. a new device key in the key store (non-exportable in a TPM);
//  3. a device authorization request (RFC 8628) carrying a DPoP proof of
//     the device key, which commits the grant to that key;
//  4. Prompt shows the verification URI and user code; the user approves
//     in a browser, on any device;
//  5. polling the token endpoint, honouring interval, slow_down and
//     expiry; the tokens are DPoP-bound to the device key;
//  6. registration of the device key (POST /devices): from a TPM, with
//     key attestation evidence, and the TPM's answer to the server's
//     challenge (POST /devices/{id}/attestation); then the configuration
//     (with the refresh token) saved, 0600, marked incomplete;
//  7. a first signed posture report, then a refresh that binds the session
//     to the registered device, and the configuration saved complete.
//
// On failure before registration the new key is deleted again. After it,
// Enroll returns the saved configuration with the error: ErrPostureNotSent
// when only the posture report failed, ErrBindingRefused when the session
// could not be bound (the enrolment stays incomplete, and
// Client.FinishEnrollment ends it later), ErrKeyNotAttested (alone or
// joined to those) when a TPM key could not be attested.
func Enroll(ctx context.Context, o EnrollOptions) (*Config, error) {
	if o.Store == nil {
		return nil, errors.New("agent: enroll: no key store")
	}
	if o.Prompt == nil {
		return nil, errors.New("agent: enroll: no prompt")
	}
	server, err := checkServerURL(o.Server)
	if err != nil {
		return nil, err
	}
	if o.ClientID == "" {
		o.ClientID = DefaultClientID
	}
	if o.Scope == "" {
		o.Scope = DefaultScope
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = sleep
	}
	if o.Collector == nil {
		o.Collector = posture.NewCollector()
	}
	if o.KeyName == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		o.KeyName = "device-" + hex.EncodeToString(b[:])
	}
	base, timeout := baseTransport(o.HTTPClient)
	plain := &http.Client{Transport: base, Timeout: timeout, CheckRedirect: noRedirect}
	meta, err := discover(ctx, plain, server)
	if err != nil {
		return nil, err
	}
	if meta.DeviceAuthorizationEndpoint == "" {
		return nil, fmt.Errorf("agent: %s does not offer the device authorization grant (no device_authorization_endpoint)", server)
	}

	key, err := o.Store.Create(ctx, o.KeyName)
	if err != nil {
		if errors.Is(err, keystore.ErrExists) {
			return nil, fmt.Errorf("agent: a device key named %q exists already; is this device enrolled? (%w)", o.KeyName, err)
		}
		return nil, fmt.Errorf("agent: create the device key: %w", err)
	}
	registered := false
	defer func() {
		if !registered {
			_ = o.Store.Delete(context.WithoutCancel(ctx), o.KeyName)
		}
	}()

	path := o.ConfigPath
	if path == "" {
		if path, err = DefaultConfigPath(); err != nil {
			return nil, err
		}
	}
	cfg := &Config{Server: server, ClientID: o.ClientID, KeyName: o.KeyName, KeyStorage: o.Store.Kind(), KeyDir: o.KeyDir}
	if o.Scope != DefaultScope {
		cfg.Scope = o.Scope
	}
	c := &Client{cfg: cfg, store: o.Store, collector: o.Collector, now: o.Now, meta: meta}
	if err := c.init(key, o.HTTPClient); err != nil {
		return nil, err
	}
	cfg.JKT = c.signer.Thumbprint()

	tr, err := c.deviceGrant(ctx, meta, deviceGrantParams{
		clientID: o.ClientID, scope: o.Scope, claims: withCapability(""),
		prompt: func(p DevicePrompt) error {
			o.Prompt(p.VerificationURI, p.VerificationURIComplete, p.UserCode)
			return nil
		},
		now: o.Now, sleep: o.Sleep,
	})
	if err != nil {
		if oe, ok := errors.AsType[*OAuthError](err); ok && oe.Code == "invalid_scope" && strings.Contains(o.Scope, ScopeDevice) {
			return nil, fmt.Errorf("%w (the server's client %q must be allowed the scope %s, which registering a device needs: ask its administrator)", err, o.ClientID, ScopeDevice)
		}
		return nil, err
	}
	cfg.RefreshToken, cfg.AccessToken = Secret(tr.RefreshToken), Secret(tr.AccessToken)
	cfg.TokenExpiry = expiry(o.Now(), tr.ExpiresIn)

	p, err := c.Collect(ctx)
	if err != nil {
		c.revoke(ctx)
		return nil, err
	}
	d, attErr, err := c.register(ctx, p, o.Store, Version)
	if err != nil {
		c.revoke(ctx)
		return nil, err
	}
	if attErr != nil {
		attErr = fmt.Errorf("%w: %w", ErrKeyNotAttested, attErr)
	}
	registered = true
	c.mu.Lock()
	c.cfg.DeviceID = d.ID
	c.cfg.EnrolledAt = o.Now().UTC()
	c.cfg.Incomplete = true
	c.cfg.path = path
	err = c.cfg.Save()
	c.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("agent: the device was registered as %s but its configuration could not be saved: %w", d.ID, err)
	}
	if err := c.finish(ctx, p); err != nil {
		if attErr != nil {
			err = errors.Join(err, attErr)
		}
		return c.Config(), err
	}
	if attErr != nil {
		return c.Config(), attErr
	}
	return c.Config(), nil
}

// ErrBindingRefused: the device is registered but Ward refused to bind the
// session to it (a Conditional Access policy on the agent's refresh, for
// example). The enrolment is saved as incomplete; fixing what the error
// names and running FinishEnrollment (`ward device enroll` again) ends it.
var ErrBindingRefused = errors.New("agent: the device is registered, but the session could not be bound to it")

// FinishEnrollment ends an enrolment that was saved incomplete (see
// Config.Incomplete): it sends a posture report and binds the session to
// the registered device. Enrolling again is not needed.
func (c *Client) FinishEnrollment(ctx context.Context) error {
	if !c.Config().Incomplete {
		return nil
	}
	p, err := c.Collect(ctx)
	if err != nil {
		return err
	}
	return c.finish(ctx, p)
}

// finish sends the first posture report and then binds the session: the
// report comes first, so that a policy requiring a compliant device on the
// agent's refresh sees the device's compliance when the binding refresh
// asks. A refused report does not stop the binding (a policy may not need
// compliance); a refused binding leaves the enrolment incomplete.
func (c *Client) finish(ctx context.Context, p *posture.Posture) error {
	_, perr := c.SendPosture(ctx, p)
	// The session began before the device existed, so the server could not
	// yet tie it to the device. Rotating the refresh token now makes it a
	// protected session: bound to this registered device, revoked with it,
	// and its access tokens carry the device id.
	if _, err := c.Refresh(ctx); err != nil {
		if perr != nil {
			return fmt.Errorf("%w (device %s): %w; the first posture report also failed: %w", ErrBindingRefused, c.Config().DeviceID, err, perr)
		}
		return fmt.Errorf("%w (device %s): %w", ErrBindingRefused, c.Config().DeviceID, err)
	}
	c.mu.Lock()
	c.cfg.Incomplete = false
	err := c.cfg.Save()
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("agent: save the configuration: %w", err)
	}
	if perr != nil {
		return fmt.Errorf("%w: %w", ErrPostureNotSent, perr)
	}
	return nil
}

// Deregister removes this device from the server (DELETE /devices/{id},
// with the device's own session): its sessions end with it. The local key
// and configuration are left to the caller.
func (c *Client) Deregister(ctx context.Context) error {
	cfg := c.Config()
	return c.doJSON(ctx, http.MethodDelete, c.devicesURL(cfg.DeviceID), "device deregistration", nil, nil)
}

// deviceGrantParams configure deviceGrant.
type deviceGrantParams struct {
	clientID, scope string
	// claims is the claims request of the token polls (the CAE
	// capability, and what a resource or policy asked for).
	claims string
	// claimsToAuthorize sends claims with the device authorization
	// request too, for servers that let it shape the sign-in (MFA).
	claimsToAuthorize bool
	// prompt shows the code; polling starts when it returns, an error
	// aborts.
	prompt func(DevicePrompt) error
	now    func() time.Time
	sleep  func(ctx context.Context, d time.Duration) error
}

// deviceGrant runs the device authorization request (RFC 8628 §3.1) with a
// DPoP proof of the device key, which commits the grant to that key, shows
// the code through p.prompt and polls the token endpoint until the user
// approves (§3.4, §3.5: interval, slow_down, expiry). The tokens must be
// DPoP-bound and come with a refresh token.
func (c *Client) deviceGrant(ctx context.Context, meta *metadata, p deviceGrantParams) (*tokenResponse, error) {
	var da struct {
		DeviceCode              string `json:"device_code"`
		UserCode                string `json:"user_code"`
		VerificationURI         string `json:"verification_uri"`
		VerificationURIComplete string `json:"verification_uri_complete"`
		ExpiresIn               int64  `json:"expires_in"`
		Interval                int64  `json:"interval"`
	}
	authz := url.Values{"client_id": {p.clientID}, "scope": {p.scope}}
	if p.claimsToAuthorize && p.claims != "" {
		authz.Set("claims", p.claims)
	}
	if err := postForm(ctx, c.hc, meta.DeviceAuthorizationEndpoint, "device authorization", authz, &da); err != nil {
		return nil, err
	}
	if da.DeviceCode == "" || da.UserCode == "" || da.VerificationURI == "" {
		return nil, errors.New("agent: device authorization: incomplete response")
	}
	interval := 5 * time.Second // RFC 8628 §3.2 default
	if da.Interval > 0 {
		interval = time.Duration(da.Interval) * time.Second
	}
	deadline := p.now().Add(time.Duration(da.ExpiresIn) * time.Second)
	if da.ExpiresIn <= 0 {
		deadline = p.now().Add(10 * time.Minute)
	}
	if err := p.prompt(DevicePrompt{VerificationURI: da.VerificationURI, VerificationURIComplete: da.VerificationURIComplete,
		UserCode: da.UserCode, ExpiresAt: deadline}); err != nil {
		return nil, err
	}

	form := url.Values{"grant_type": {grantDeviceCode}, "device_code": {da.DeviceCode}, "client_id": {p.clientID}}
	if p.claims != "" {
		form.Set("claims", p.claims)
	}
	for {
		if err := p.sleep(ctx, interval); err != nil {
			return nil, err
		}
		if !p.now().Before(deadline) {
			return nil, ErrExpired
		}
		var tr tokenResponse
		err := postForm(ctx, c.hc, meta.TokenEndpoint, "device token", form, &tr)
		if err == nil {
			if err := checkToken(&tr, true); err != nil {
				return nil, err
			}
			return &tr, nil
		}
		var oe *OAuthError
		if !errors.As(err, &oe) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		switch oe.Code {
		case "authorization_pending":
		case "slow_down":
			interval += 5 * time.Second // RFC 8628 §3.5
		case "expired_token":
			return nil, ErrExpired
		case "access_denied":
			// The user said no, or Conditional Access did: say which.
			return nil, fmt.Errorf("%w (%s)", ErrDenied, oe.Error())
		default:
			return nil, err
		}
	}
}

// revoke gives up a session that will not be used (best effort).
func (c *Client) revoke(ctx context.Context) { c.revokeToken(ctx, c.cfg.RefreshToken.Reveal()) }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
