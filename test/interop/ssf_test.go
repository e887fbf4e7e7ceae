package interop

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/wardtest"
)

const (
	ssfClientID     = "ssf-node"
	ssfClientSecret = "ssf-node-secret-0123456789-abcdefghijklmnop"
)

// TestSSFReceiverNode runs ssf-receiver.mjs, an independent SSF receiver
// written with the npm library jose, against a real Ward: it creates a
// push stream (served by its own HTTP server) and a poll stream, passes
// verification on both, and checks the CAEP SETs that the changes this
// test makes on request (a password change, a session revocation)
// produce.
func TestSSFReceiverNode(t *testing.T) {
	node := requireNode(t)
	if _, err := os.Stat(filepath.Join("node_modules", "jose", "package.json")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("test/interop/node_modules/jose is missing; CI must run the SSF interop test; run: (cd test/interop && npm ci)")
		}
		t.Skip("test/interop/node_modules/jose is missing; run: (cd test/interop && npm ci --no-audit --no-fund)")
	}
	in := wardtest.Start(t, wardtest.Options{RealClock: true, Configure: func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: ssfClientID, Name: "Node SSF receiver",
			AuthMethod: "client_secret_basic", Secret: secret.String(ssfClientSecret), GrantTypes: []string{"client_credentials"},
			Scopes: []string{"ssf.manage", "ssf.poll"}})
		c.SSF.MinVerificationInterval = time.Millisecond
		c.SSF.LongPollTimeout = 20 * time.Second
	}})
	ctl := &control{in: in, t: t, password: wardtest.BobPassword}
	srv := httptest.NewServer(ctl)
	defer srv.Close()
	env := []string{
		"WARD_ISSUER=" + in.URL,
		"WARD_SSF_CLIENT_ID=" + ssfClientID,
		"WARD_SSF_CLIENT_SECRET=" + ssfClientSecret,
		"WARD_CONTROL_URL=" + srv.URL + "/trigger",
	}
	if !runNode(t, node, "ssf-receiver.mjs", env) {
		logTail(t, in.LogText(), 40)
	}
	ctl.mu.Lock()
	defer ctl.mu.Unlock()
	if ctl.calls["credential-change"] != 1 || ctl.calls["session-revoked"] != 1 {
		t.Errorf("the script asked for %v, want one change of each kind", ctl.calls)
	}
}

// control makes changes in Ward when the script asks for them, and
// answers with the id of the user concerned.
type control struct {
	in       *wardtest.Instance
	t        *testing.T
	mu       sync.Mutex
	calls    map[string]int
	password string
}

func (c *control) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls == nil {
		c.calls = map[string]int{}
	}
	kind := r.URL.Query().Get("kind")
	c.calls[kind]++
	ctx := context.Background()
	bob, err := c.in.App.Store.GetUserByUsername(ctx, "bob")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	switch kind {
	case "credential-change":
		// The identity service changes bob's password: CAEP
		// credential-change.
		c.password = "a-brand-new-passphrase-7"
		err = c.in.App.Identity.SetPassword(ctx, "admin", bob.ID, c.password)
	case "session-revoked":
		// Bob signs in with a client, and an administrator revokes the
		// session: CAEP session-revoked.
		err = c.revokeBobsSession()
	default:
		http.Error(w, "unknown kind", http.StatusBadRequest)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"subject": bob.ID})
}

func (c *control) revokeBobsSession() error {
	verifier, challenge := wardtest.PKCE()
	loc := c.in.Login(c.t, c.in.Browser(), c.in.AuthorizeURL("web", challenge, nil), "bob", c.password, "")
	form := url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "code_verifier": {verifier},
		"redirect_uri": {wardtest.RedirectURI}}
	tok, err := c.post("/token", form)
	if err != nil {
		return err
	}
	sid, err := sessionOf(tok)
	if err != nil {
		return err
	}
	_, err = c.in.App.Sessions.Revoke(context.Background(), "admin", sid, model.CauseAdminRevoked)
	return err
}

// sessionOf reads the sid claim of an access token (no verification: the
// token comes straight from Ward's token endpoint).
func sessionOf(at string) (string, error) {
	parts := strings.Split(at, ".")
	if len(parts) != 3 {
		return "", errors.New("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var c struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(b, &c); err != nil || c.SID == "" {
		return "", fmt.Errorf("no sid in the access token: %v", err)
	}
	return c.SID, nil
}

func (c *control) post(path string, form url.Values) (string, error) {
	req, _ := http.NewRequest(http.MethodPost, c.in.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("web", wardtest.WebSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != http.StatusOK {
		return "", &statusError{path, resp.StatusCode}
	}
	return out.AccessToken, nil
}

type statusError struct {
	path   string
	status int
}

func (e *statusError) Error() string {
	return e.path + ": unexpected status " + http.StatusText(e.status)
}
