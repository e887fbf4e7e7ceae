package ssfrx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ward-idp/ward/internal/netguard"
)

// BearerToken returns Credentials sending get's token as a bearer token
// (get reads it from a file or the environment each time, so a rotated
// token is used at once).
func BearerToken(get func() (string, error)) Credentials {
	return func(context.Context) (string, error) {
		t, err := get()
		if err != nil {
			return "", err
		}
		t = strings.TrimSpace(t)
		if t == "" || strings.ContainsAny(t, "\r\n") {
			return "", errors.New("the bearer token is empty or not one line")
		}
		return "Bearer " + t, nil
	}
}

// ClientCredentialsConfig is an OAuth client of the transmitter.
type ClientCredentialsConfig struct {
	TokenURL string
	ClientID string
	// Secret returns the client secret (from a file or the environment).
	Secret          func() (string, error)
	Scopes          []string
	AllowedNetworks []netip.Prefix
	Now             func() time.Time
}

// ClientCredentials returns Credentials that obtain an access token with
// the client credentials grant (RFC 6749 §4.4, client_secret_basic) and
// reuse it until shortly before it expires.
func ClientCredentials(c ClientCredentialsConfig) Credentials {
	if c.Now == nil {
		c.Now = time.Now
	}
	client := netguard.Guard{Allowed: c.AllowedNetworks, Setting: "ssf_receivers[].allowed_networks"}.Client(30 * time.Second)
	var (
		mu     sync.Mutex
		token  string
		expiry time.Time
	)
	return func(ctx context.Context) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if token != "" && c.Now().Before(expiry) {
			return "Bearer " + token, nil
		}
		secret, err := c.Secret()
		if err != nil {
			return "", err
		}
		form := url.Values{"grant_type": {"client_credentials"}}
		if len(c.Scopes) > 0 {
			form.Set("scope", strings.Join(c.Scopes, " "))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.TokenURL, strings.NewReader(form.Encode()))
		if err != nil {
			return "", err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept", "application/json")
		req.SetBasicAuth(url.QueryEscape(c.ClientID), url.QueryEscape(strings.TrimSpace(secret)))
		resp, err := client.Do(req)
		if err != nil {
			return "", fmt.Errorf("token request: %w", err)
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			return "", fmt.Errorf("token request: %w", err)
		}
		var tr struct {
			AccessToken string `json:"access_token"`
			TokenType   string `json:"token_type"`
			ExpiresIn   int64  `json:"expires_in"`
			Error       string `json:"error"`
		}
		_ = json.Unmarshal(data, &tr)
		if resp.StatusCode != http.StatusOK || tr.AccessToken == "" {
			// The error code only: the body may echo what was sent.
			return "", fmt.Errorf("token request: status %d %s", resp.StatusCode, bounded(tr.Error, 64))
		}
		if !strings.EqualFold(tr.TokenType, "Bearer") {
			return "", fmt.Errorf("token request: token_type %q is not Bearer", bounded(tr.TokenType, 16))
		}
		life := time.Duration(tr.ExpiresIn) * time.Second
		if life <= 0 {
			life = 5 * time.Minute
		}
		token, expiry = tr.AccessToken, c.Now().Add(max(life-30*time.Second, life/2))
		return "Bearer " + token, nil
	}
}
