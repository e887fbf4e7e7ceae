package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/ward-idp/ward/agent/keystore"
	"github.com/ward-idp/ward/agent/posture"
)

// Device is the server's view of a registered device (GET /devices/{id}).
type Device struct {
	ID         string              `json:"id"`
	JKT        string              `json:"jkt"`
	Status     string              `json:"status"`
	Compliance string              `json:"compliance"`
	Failures   []ComplianceFailure `json:"failures"`
	KeyStorage string              `json:"key_storage,omitempty"`
	// KeyAttested: the server verified that the key lives in a TPM; the
	// key storage alone is what the agent reported.
	KeyAttested bool `json:"key_attested"`
	// KeyAttestation is what the server verified (nil when not attested).
	KeyAttestation *KeyAttestation `json:"key_attestation,omitempty"`
	Platform       string          `json:"platform,omitempty"`
	OSName         string          `json:"os_name,omitempty"`
	OSVersion      string          `json:"os_version,omitempty"`
	Hostname       string          `json:"hostname,omitempty"`
	AgentVersion   string          `json:"agent_version,omitempty"`
	TrustType      string          `json:"trust_type,omitempty"`
	ComplianceAt   time.Time       `json:"compliance_at,omitzero"`
	PostureAt      time.Time       `json:"posture_at,omitzero"`
	CreatedAt      time.Time       `json:"created_at,omitzero"`
	LastSeen       time.Time       `json:"last_seen,omitzero"`
}

// KeyAttestation is what the server verified of a TPM device key.
type KeyAttestation struct {
	Method     string    `json:"method"`
	AttestedAt time.Time `json:"attested_at,omitzero"`
	// EKSHA256 identifies the TPM (SHA-256 of its endorsement key).
	EKSHA256 string `json:"ek_sha256,omitempty"`
	// EKCertified: the TPM's endorsement key certificate chains to a TPM
	// vendor the server trusts; false when the server trusts any TPM.
	EKCertified bool   `json:"ek_certified"`
	EKIssuer    string `json:"ek_issuer,omitempty"`
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
	// Attestation is TPM 2.0 key attestation evidence.
	Attestation *attestationJSON `json:"attestation,omitempty"`
}

// attestationJSON is the evidence of POST /devices (base64url, no
// padding).
type attestationJSON struct {
	Format           string `json:"format"`
	Nonce            string `json:"nonce"`
	EKPublic         string `json:"ek_public"`
	EKCertificate    string `json:"ek_certificate"`
	AKPublic         string `json:"ak_public"`
	KeyPublic        string `json:"key_public"`
	CertifyInfo      string `json:"certify_info"`
	CertifySignature string `json:"certify_signature"`
}

// registered is the answer to POST /devices.
type registered struct {
	Device
	Challenge *struct {
		CredentialBlob  string `json:"credential_blob"`
		EncryptedSecret string `json:"encrypted_secret"`
		State           string `json:"state"`
	} `json:"attestation_challenge"`
}

// ErrKeyNotAttested: the device was enrolled, but Ward did not attest its
// key as a TPM key (the key store cannot attest, the TPM could not, or
// the server refused the evidence; the error says which). Compliance
// policies that require a hardware key will fail the device; enrolling
// again with --force on a machine whose TPM the server trusts fixes it.
var ErrKeyNotAttested = errors.New("agent: enrolled, but the device key is not attested as a TPM key")

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

// register registers the device key for the signed-in user. When the key
// store can attest its keys (a TPM), the registration carries TPM 2.0 key
// attestation evidence and the TPM answers the server's challenge, so
// that the server knows the key cannot leave the TPM. attErr says why the
// key is not attested when the store could attest it; the device is
// registered either way.
func (c *Client) register(ctx context.Context, p *posture.Posture, st keystore.Store, agentVersion string) (d *Device, attErr, err error) {
	jwk, err := json.Marshal(c.signer.PublicJWK())
	if err != nil {
		return nil, nil, err
	}
	r := registration{JWK: jwk, KeyStorage: st.Kind(), Platform: p.Platform, OSName: p.OSName,
		OSVersion: p.OSVersion, Hostname: p.Hostname, AgentVersion: agentVersion}
	var ka *keystore.KeyAttestation
	if at, ok := st.(keystore.Attester); ok {
		if ka, r.Attestation, attErr = c.evidence(ctx, at); attErr != nil {
			attErr = fmt.Errorf("the TPM could not certify the key: %w", attErr)
		}
	}
	var out registered
	err = c.doJSON(ctx, http.MethodPost, c.devicesURL(), "device registration", r, &out)
	if oe, ok := errors.AsType[*OAuthError](err); ok && r.Attestation != nil && oe.Code == "invalid_attestation" {
		// The server does not accept this TPM's evidence (a vendor it does
		// not trust, for one): register the key unattested, and say so.
		attErr, r.Attestation, out = err, nil, registered{}
		err = c.doJSON(ctx, http.MethodPost, c.devicesURL(), "device registration", r, &out)
	}
	if err != nil {
		if oe, ok := errors.AsType[*OAuthError](err); ok && oe.Status == http.StatusConflict {
			return nil, nil, fmt.Errorf("%w (%s)", ErrAlreadyRegistered, oe.Error())
		}
		return nil, nil, err
	}
	d = &out.Device
	if d.ID == "" {
		return nil, nil, errors.New("agent: device registration: the server returned no device id")
	}
	if d.JKT != "" && d.JKT != c.signer.Thumbprint() {
		return nil, nil, errors.New("agent: device registration: the server registered another key")
	}
	if r.Attestation != nil {
		if nd, err := c.answerChallenge(ctx, ka, d.ID, &out); err != nil {
			attErr = err
		} else {
			d = nd
		}
	}
	return d, attErr, nil
}

// evidence certifies the device key in the TPM over a fresh server nonce.
func (c *Client) evidence(ctx context.Context, at keystore.Attester) (*keystore.KeyAttestation, *attestationJSON, error) {
	nonce, err := c.nonce(ctx)
	if err != nil {
		return nil, nil, err
	}
	h := sha256.Sum256([]byte(nonce))
	ka, err := at.AttestKey(ctx, c.key, h[:])
	if err != nil {
		return nil, nil, err
	}
	enc := base64.RawURLEncoding.EncodeToString
	return ka, &attestationJSON{Format: "tpm2", Nonce: nonce, EKPublic: enc(ka.EKPublic), EKCertificate: enc(ka.EKCertificate),
		AKPublic: enc(ka.AKPublic), KeyPublic: enc(ka.KeyPublic), CertifyInfo: enc(ka.CertifyInfo),
		CertifySignature: enc(ka.Signature)}, nil
}

// answerChallenge has the TPM recover the secret of the registration's
// challenge (TPM2_ActivateCredential) and sends it back.
func (c *Client) answerChallenge(ctx context.Context, ka *keystore.KeyAttestation, id string, out *registered) (*Device, error) {
	ch := out.Challenge
	if ch == nil {
		return nil, errors.New("the server sent no attestation challenge")
	}
	blob, err1 := base64.RawURLEncoding.DecodeString(ch.CredentialBlob)
	enc, err2 := base64.RawURLEncoding.DecodeString(ch.EncryptedSecret)
	if err1 != nil || err2 != nil || ch.State == "" {
		return nil, errors.New("the server sent a malformed attestation challenge")
	}
	secret, err := ka.ActivateCredential(ctx, blob, enc)
	if err != nil {
		return nil, fmt.Errorf("the TPM could not answer the server's challenge: %w", err)
	}
	var d Device
	if err := c.doJSON(ctx, http.MethodPost, c.devicesURL(id, "attestation"), "key attestation",
		map[string]string{"state": ch.State, "secret": base64.RawURLEncoding.EncodeToString(secret)}, &d); err != nil {
		return nil, err
	}
	if !d.KeyAttested {
		return nil, errors.New("the server did not attest the key")
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
