package console_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/clientspec"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

// TestClientsAndKeys: every role reads the applications and signing
// keys; only global administrators rotate a client's secret (shown once,
// never logged) or the signing keys; forged requests change nothing.
func TestClientsAndKeys(t *testing.T) { backends(t, testClientsAndKeys) }

func testClientsAndKeys(t *testing.T, in *wardtest.Instance) {
	ctx := context.Background()
	_, oldSecret, err := in.App.Clients.Create(ctx, "test", clientspec.Spec{ID: "payroll", Name: "Payroll",
		AuthMethod: model.AuthClientSecretBasic, GrantTypes: []string{"client_credentials"}, Scopes: []string{"openid"}})
	if err != nil {
		t.Fatal(err)
	}
	secretWorks := func(s string) bool {
		c, err := in.App.Clients.Get(ctx, "payroll")
		if err != nil {
			t.Fatal(err)
		}
		return in.App.Clients.CheckSecret(c, s)
	}
	kid := in.App.Keys.ActiveKID()
	ops := map[string]*operator{model.RoleAdmin: signIn(t, in, "alice")}
	for name, role := range operators {
		if role != "" {
			ops[role] = signIn(t, in, name)
		}
	}
	for role, op := range ops {
		for _, p := range []string{"/console/clients", "/console/clients/payroll", "/console/clients/web", "/console/keys"} {
			if resp, body := op.get(p); resp.StatusCode != http.StatusOK {
				t.Errorf("%s as %s: %d %.200s", p, role, resp.StatusCode, body)
			}
		}
		if role == model.RoleAdmin {
			continue
		}
		for _, p := range []string{"/console/clients/payroll/secret", "/console/keys/rotate"} {
			resp, body := op.post(p, op.csrf(), nil)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "roles do not allow") {
				t.Errorf("%s as %s: %d, want 403", p, role, resp.StatusCode)
			}
			if !denied(t, in, op.user.ID, "role_missing", p) {
				t.Errorf("%s as %s: no console.access_denied", p, role)
			}
		}
		_, body := op.get("/console/clients/payroll")
		if strings.Contains(body, "/secret\"") {
			t.Errorf("the %s's client page offers the rotation", role)
		}
	}
	alice := ops[model.RoleAdmin]
	// Forged: another session's token, another origin.
	if resp, _ := alice.post("/console/clients/payroll/secret", ops[model.RoleSecurityOperator].csrf(), nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("rotation with another session's token: %d", resp.StatusCode)
	}
	if resp, _ := alice.post("/console/keys/rotate", alice.csrf(), map[string]string{"Origin": "https://evil.example"}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("key rotation from another origin: %d", resp.StatusCode)
	}
	if !secretWorks(oldSecret.Reveal()) || in.App.Keys.ActiveKID() != kid {
		t.Fatal("a refused request rotated something")
	}
	// The administrator rotates the secret: shown once, the old one dead.
	resp, body := alice.post("/console/clients/payroll/secret", alice.csrf(), nil)
	m := regexp.MustCompile(`<code class="big" id="new-secret">([^<]+)</code>`).FindStringSubmatch(body)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("rotate secret: %d %.400s", resp.StatusCode, body)
	}
	newSecret := m[1]
	if secretWorks(oldSecret.Reveal()) || !secretWorks(newSecret) {
		t.Fatal("after the rotation: the old secret works or the new one does not")
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("the page with the secret is cacheable: %q", cc)
	}
	if _, body := alice.get("/console/clients/payroll"); strings.Contains(body, newSecret) {
		t.Error("the secret is shown again")
	}
	rot := events(t, in, model.EventClientSecretRotated)
	if len(rot) != 1 || rot[0].Actor != alice.user.ID || rot[0].ClientID != "payroll" {
		t.Fatalf("client.secret_rotated: %+v", rot)
	}
	for _, e := range events(t, in, model.EventClientSecretRotated) {
		for _, v := range e.Data {
			if strings.Contains(v, newSecret) {
				t.Fatal("the secret is in the audit record")
			}
		}
	}
	if strings.Contains(in.LogText(), newSecret) {
		t.Fatal("the secret is in the log")
	}
	// A client configured in the file, or one without a secret, is refused.
	if resp, body := alice.post("/console/clients/spa/secret", alice.csrf(), nil); resp.StatusCode != http.StatusConflict {
		t.Errorf("rotate the secret of a public client: %d %.200s", resp.StatusCode, body)
	}
	if resp, _ := alice.post("/console/clients/no-such-client/secret", alice.csrf(), nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("rotate the secret of no client: %d", resp.StatusCode)
	}
	if resp, _ := alice.get("/console/clients/no-such-client"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("no such client: %d", resp.StatusCode)
	}
	// Key rotation.
	resp, _ = alice.post("/console/keys/rotate", alice.csrf(), nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("rotate keys: %d", resp.StatusCode)
	}
	_, body = alice.get(resp.Header.Get("Location"))
	if !strings.Contains(body, "A new signing key was created") || !strings.Contains(body, kid) {
		t.Errorf("keys page after the rotation: %.600s", body)
	}
	var rotated bool
	for _, e := range events(t, in, model.EventKeyRotated) {
		rotated = rotated || e.Actor == alice.user.ID
	}
	if !rotated {
		t.Error("no key.rotated by alice")
	}
	if len(in.App.Keys.Keys()) < 2 {
		t.Errorf("%d keys after the rotation", len(in.App.Keys.Keys()))
	}
}
