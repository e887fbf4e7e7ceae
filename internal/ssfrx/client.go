package ssfrx

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// maxDocument bounds what Ward reads from a transmitter (configuration,
// JWKS, stream configuration, a poll response is bounded apart).
const maxDocument = 1 << 20

// transmitterConfig is the part of the SSF transmitter configuration
// metadata (SSF 1.0 §7.1) Ward uses.
type transmitterConfig struct {
	Issuer                   string   `json:"issuer"`
	JWKSURI                  string   `json:"jwks_uri"`
	DeliveryMethodsSupported []string `json:"delivery_methods_supported"`
	ConfigurationEndpoint    string   `json:"configuration_endpoint"`
	StatusEndpoint           string   `json:"status_endpoint"`
	VerificationEndpoint     string   `json:"verification_endpoint"`
}

// streamConfig is a stream configuration as a transmitter returns it
// (SSF 1.0 §8.1.1).
type streamConfig struct {
	StreamID        string          `json:"stream_id"`
	Iss             string          `json:"iss"`
	Aud             json.RawMessage `json:"aud"`
	Delivery        delivery        `json:"delivery"`
	EventsDelivered []string        `json:"events_delivered"`
	Description     string          `json:"description"`
}

type delivery struct {
	Method              string `json:"method"`
	EndpointURL         string `json:"endpoint_url,omitempty"`
	AuthorizationHeader string `json:"authorization_header,omitempty"`
}

// audiences reads aud, a string or an array of strings.
func (c *streamConfig) audiences() []string {
	var one string
	if json.Unmarshal(c.Aud, &one) == nil && one != "" {
		return []string{one}
	}
	var many []string
	_ = json.Unmarshal(c.Aud, &many)
	return many
}

// httpError is a transmitter's non-2xx answer (the body is not kept: it
// could echo a credential).
type httpError struct {
	status int
	code   string
}

func (e *httpError) Error() string {
	if e.code != "" {
		return fmt.Sprintf("status %d (%s)", e.status, e.code)
	}
	return fmt.Sprintf("status %d", e.status)
}

func isStatus(err error, status int) bool {
	var he *httpError
	return errors.As(err, &he) && he.status == status
}

// do sends one JSON request to the transmitter with the receiver's
// credentials and decodes a JSON answer into out (if not nil).
func (r *receiver) do(ctx context.Context, method, u string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	auth, err := r.cfg.Credentials(ctx)
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	req.Header.Set("Authorization", auth)
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var e struct {
			Error string `json:"error"`
			Err   string `json:"err"`
		}
		_ = json.Unmarshal(data, &e)
		code := e.Error
		if code == "" {
			code = e.Err
		}
		if len(code) > 64 {
			code = code[:64]
		}
		return &httpError{status: resp.StatusCode, code: code}
	}
	if len(data) > maxDocument {
		return errors.New("answer too large")
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("answer is not the expected JSON: %w", err)
	}
	return nil
}

// fetchPublic GETs a public document (configuration, JWKS) without
// credentials.
func (r *receiver) fetchPublic(ctx context.Context, u string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &httpError{status: resp.StatusCode}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return err
	}
	if len(data) > maxDocument {
		return errors.New("document too large")
	}
	return json.Unmarshal(data, out)
}

// configurationURL is where the transmitter's configuration lives: SSF
// 1.0 §7.2 inserts the well-known path between host and issuer path.
func (r *receiver) configurationURL() (string, error) {
	if r.cfg.ConfigurationURL != "" {
		return r.cfg.ConfigurationURL, nil
	}
	u, err := url.Parse(r.cfg.Issuer)
	if err != nil {
		return "", err
	}
	u.Path = "/.well-known/ssf-configuration" + strings.TrimSuffix(u.Path, "/")
	return u.String(), nil
}

// discover reads the transmitter's configuration and checks that it is
// the configured issuer's and names what Ward needs.
func (r *receiver) discover(ctx context.Context) (*transmitterConfig, error) {
	u, err := r.configurationURL()
	if err != nil {
		return nil, err
	}
	var tc transmitterConfig
	if err := r.fetchPublic(ctx, u, &tc); err != nil {
		return nil, fmt.Errorf("transmitter configuration: %w", err)
	}
	switch {
	case tc.Issuer != r.cfg.Issuer:
		return nil, fmt.Errorf("transmitter configuration: issuer %q is not the configured %q", tc.Issuer, r.cfg.Issuer)
	case tc.JWKSURI == "":
		return nil, errors.New("transmitter configuration: no jwks_uri")
	case tc.ConfigurationEndpoint == "":
		return nil, errors.New("transmitter configuration: no configuration_endpoint (stream management)")
	}
	method := model.DeliveryPoll
	if r.cfg.Delivery == Push {
		method = model.DeliveryPush
	}
	if len(tc.DeliveryMethodsSupported) > 0 && !contains(tc.DeliveryMethodsSupported, method) {
		return nil, fmt.Errorf("transmitter configuration: delivery %s is not supported", r.cfg.Delivery)
	}
	for _, raw := range []string{tc.JWKSURI, tc.ConfigurationEndpoint, tc.StatusEndpoint, tc.VerificationEndpoint} {
		if raw == "" {
			continue
		}
		if p, err := url.Parse(raw); err != nil || !p.IsAbs() || (p.Scheme != "https" && p.Scheme != "http") {
			return nil, fmt.Errorf("transmitter configuration: %q is not an absolute http(s) URL", raw)
		}
	}
	return &tc, nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func withQuery(endpoint, key, value string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return endpoint
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// randN returns a uniform random number in [0, n).
func randN(n int64) int64 {
	if n <= 1 {
		return 0
	}
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		return 0
	}
	return v.Int64()
}
