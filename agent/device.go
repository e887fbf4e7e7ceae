package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/ward-idp/ward/agent/posture"
)

// Device is the server's view of a registered device (GET /devices/{id}).
type Device struct {
	ID           string              `json:"id"`
	JKT          string              `json:"jkt"`
	Status       string              `json:"status"`
	Compliance   string              `json:"compliance"`
	Failures     []ComplianceFailure `json:"failures"`
	KeyStorage   string              `json:"key_storage,omitempty"`
	Platform     string              `json:"platform,omitempty"`
	OSName       string              `json:"os_name,omitempty"`
	OSVersion    string              `json:"os_version,omitempty"`
	Hostname     string              `json:"hostname,omitempty"`
	AgentVersion string              `json:"agent_version,omitempty"`
	TrustType    string              `json:"trust_type,omitempty"`
	ComplianceAt time.Time           `json:"compliance_at,omitzero"`
	PostureAt    time.Time           `json:"posture_at,omitzero"`
	CreatedAt    time.Time           `json:"created_at,omitzero"`
	LastSeen     time.Time           `json:"last_seen,omitzero"`
}

// ComplianceFailure is one failing compliance rule.
type ComplianceFailure struct {
	Rule   string `json:"rule"`
	Detail string `json:"detail,omitempty"`
	// Fix tells the user what to do about it.
	Fix string `json:"fix,omitempty"`
	// Unknown: the rule failed because the fact could not be established.
	Unknown bool `json:"unknown,omitempty"`
}

// registration is the body of POST /devices.
type registration struct {
	JWK          json.RawMessage `json:"jwk"`
	KeyStorage   string          `json:"key_storage"`
	Platform     string          `json:"platform"`
	OSName       string          `json:"os_name,omitempty"`
	OSVersion    string          `json:"os_version,omitempty"`
	Hostname     string          `json:"hostname,omitempty"`
	AgentVersion string          `json:"agent_version,omitempty"`
}

// devicesURL returns the issuer-relative device API URL.
func (c *Client) devicesURL(parts ...string) string {
	u := c.cfg.Server + "/devices"
	for _, p := range parts {
		u += "/" + url.PathEscape(p)
	}
	return u
}

// doJSON sends a request through the agent transport (access token and
// proof) and decodes a JSON answer into out (if not nil).
func (c *Client) doJSON(ctx context.Context, method, u, what string, in, out any) error {
	return c.doJSONWith(ctx, c.api, method, u, what, in, out)
}

func (c *Client) doJSONWith(ctx context.Context, hc *http.Client, method, u, what string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("agent: %s: %w", what, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("agent: %s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return responseError(what, resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponse)).Decode(out); err != nil {
		return fmt.Errorf("agent: %s: malformed response: %v", what, err)
	}
	return nil
}

// register registers the device key for the signed-in user.
func (c *Client) register(ctx context.Context, p *posture.Posture, keyStorage, agentVersion string) (*Device, error) {
	jwk, err := json.Marshal(c.signer.PublicJWK())
	if err != nil {
		return nil, err
	}
	r := registration{JWK: jwk, KeyStorage: keyStorage, Platform: p.Platform, OSName: p.OSName,
		OSVersion: p.OSVersion, Hostname: p.Hostname, AgentVersion: agentVersion}
	var d Device
	if err := c.doJSON(ctx, http.MethodPost, c.devicesURL(), "device registration", r, &d); err != nil {
		var oe *OAuthError
		if errors.As(err, &oe) && oe.Status == http.StatusConflict {
			return nil, fmt.Errorf("%w (%s)", ErrAlreadyRegistered, oe.Error())
		}
		return nil, err
	}
	if d.ID == "" {
		return nil, errors.New("agent: device registration: the server returned no device id")
	}
	if d.JKT != "" && d.JKT != c.signer.Thumbprint() {
		return nil, errors.New("agent: device registration: the server registered another key")
	}
	return &d, nil
}

// nonce fetches a fresh posture nonce.
func (c *Client) nonce(ctx context.Context) (string, error) {
	var n struct {
		Nonce string `json:"nonce"`
	}
	// The nonce needs no authentication: no token, no proof.
	plain := &http.Client{Transport: c.dt.Base, Timeout: c.api.Timeout, CheckRedirect: noRedirect}
	if err := c.doJSONWith(ctx, plain, http.MethodGet, c.devicesURL("nonce"), "posture nonce", nil, &n); err != nil {
		return "", err
	}
	if n.Nonce == "" {
		return "", errors.New("agent: posture nonce: empty nonce")
	}
	return n.Nonce, nil
}

// Collect gathers the device's posture with the Client's collector.
func (c *Client) Collect(ctx context.Context) (*posture.Posture, error) {
	p, err := c.collector.Collect(ctx)
	if err != nil {
		return nil, fmt.Errorf("agent: collect posture: %w", err)
	}
	return p, nil
}

// ReportPosture collects the posture, signs it with the device key over a
// fresh server nonce and sends it. It returns the device as the server
// evaluated it.
func (c *Client) ReportPosture(ctx context.Context) (*Device, error) {
	p, err := c.Collect(ctx)
	if err != nil {
		return nil, err
	}
	return c.SendPosture(ctx, p)
}

// SendPosture signs p over a fresh server nonce and sends it.
func (c *Client) SendPosture(ctx context.Context, p *posture.Posture) (*Device, error) {
	id := c.Config().DeviceID
	if id == "" {
		return nil, ErrNotEnrolled
	}
	nonce, err := c.nonce(ctx)
	if err != nil {
		return nil, err
	}
	report, err := posture.SignReport(c.key, p, id, nonce, c.now())
	if err != nil {
		return nil, fmt.Errorf("agent: sign posture report: %w", err)
	}
	var d Device
	if err := c.doJSON(ctx, http.MethodPost, c.devicesURL(id, "posture"), "posture report",
		map[string]string{"report": report}, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// Device fetches the device's registration and compliance state.
func (c *Client) Device(ctx context.Context) (*Device, error) {
	id := c.Config().DeviceID
	if id == "" {
		return nil, ErrNotEnrolled
	}
	var d Device
	if err := c.doJSON(ctx, http.MethodGet, c.devicesURL(id), "device status", nil, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// RunReports reports the device's posture now and then every interval
// until ctx ends, so the server's view (and compliance) stays current and
// the device does not go stale. Each result, success or failure, is passed
// to onResult (which may be nil). A failed report is retried after a
// shorter back-off (a tenth of the interval, at least a second) instead of
// waiting a whole interval; a session that has ended stops the loop, since
// no report can succeed until the device is enrolled again.
func (c *Client) RunReports(ctx context.Context, interval time.Duration, onResult func(*Device, error)) error {
	if interval <= 0 {
		return errors.New("agent: report interval must be positive")
	}
	retry := max(interval/10, time.Second)
	if retry > interval {
		retry = interval
	}
	for {
		d, err := c.ReportPosture(ctx)
		if onResult != nil {
			onResult(d, err)
		}
		if errors.Is(err, ErrSessionEnded) || errors.Is(err, ErrNotEnrolled) {
			return err
		}
		wait := interval
		if err != nil {
			wait = retry
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
