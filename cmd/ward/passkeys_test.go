package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/identity/webauthntest"
)

// ward user passkeys list / remove / reset: the listing, one removal
// (mfa.removed by the CLI, a CAEP credential-change with fido2-platform)
// and the recovery reset (passkey.recovery, a risk detection).
func TestUserPasskeys(t *testing.T) {
	h := newHarness(t, "issuer: http://localhost:8700\n")
	a := h.openApp()
	ctx := context.Background()
	u, err := a.Identity.CreateUser(ctx, "test", identity.NewUser{Username: "erin", Password: "correct horse battery"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, name := range []string{"Laptop", "Phone"} {
		c, err := a.Identity.BeginPasskeyRegistration(ctx, u, identity.MethodPasskey)
		if err != nil {
			t.Fatal(err)
		}
		resp, _, _ := webauthntest.New("http://localhost:8700").Create(c.Options)
		cred, err := a.Identity.FinishPasskeyRegistration(ctx, u.ID, u, c.ID, name, resp)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, cred.ID)
	}
	stream := createPollStream(t, a)
	a.Close()

	if out := h.ok("", "user", "show", "erin"); !strings.Contains(out, "Passkeys:") || !strings.Contains(out, "2 (Laptop, Phone;") {
		t.Errorf("show:\n%s", out)
	}
	out := h.ok("", "user", "passkeys", "list", "erin")
	if !strings.Contains(out, ids[0]) || !strings.Contains(out, "Laptop") || !strings.Contains(out, "Phone") || !strings.Contains(out, "passkey") {
		t.Fatalf("list:\n%s", out)
	}
	if out := h.ok("", "user", "passkeys", "rename", "erin", ids[1], "Work phone"); out != "renamed passkey "+ids[1]+" of erin to \"Work phone\"\n" {
		t.Errorf("rename: %q", out)
	}
	if _, errs, code := h.run("", "user", "passkeys", "rename", "erin", ids[1], "bad\x1b[2Jname"); code == 0 || !strings.Contains(errs, "invalid input") {
		t.Errorf("rename to a name with an escape: %d %q", code, errs)
	}
	if out := h.ok("", "user", "passkeys", "list", "erin"); !strings.Contains(out, "Work phone") {
		t.Errorf("list after rename:\n%s", out)
	}
	if out := h.ok("", "user", "passkeys", "remove", "erin", ids[0]); out != "removed passkey "+ids[0]+" of erin\n" {
		t.Errorf("remove: %q", out)
	}
	if _, errs, code := h.run("", "user", "passkeys", "remove", "erin", ids[0]); code == 0 || !strings.Contains(errs, "not found") {
		t.Errorf("remove again: %d %q", code, errs)
	}
	out = h.ok("", "logs", "--json", "--type", "mfa.removed")
	var ev map[string]any
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &ev) != nil ||
		ev["actor"] != actorCLI || ev["user_id"] != u.ID || ev["code"] != "W1003W" {
		t.Fatalf("mfa.removed events:\n%s", out)
	}
	sets := pollSETs(t, h, stream)
	if len(sets) != 1 || sets[0].typ != cae.EventCredentialChange || sets[0].event["credential_type"] != "fido2-platform" ||
		sets[0].event["change_type"] != "delete" || sets[0].txn != ev["id"] {
		t.Errorf("credential-change SET: %+v", sets)
	}

	out = h.ok("", "user", "passkeys", "reset", "erin", "--reason", "lost phone, checked in person")
	if !strings.HasPrefix(out, "removed 1 passkey(s) of erin") {
		t.Errorf("reset: %q", out)
	}
	if out := h.ok("", "logs", "--json", "--type", "passkey.recovery"); !strings.Contains(out, `"W1012W"`) || !strings.Contains(out, "admin_reset") {
		t.Errorf("passkey.recovery:\n%s", out)
	}
	if out := h.ok("", "user", "passkeys", "list", "erin"); out != "erin has no passkeys\n" {
		t.Errorf("after reset: %q", out)
	}
}

// ward policy whatif --passkey: a policy requiring phishing-resistant
// authentication is met by a passkey sign-in and not by password + TOTP.
func TestPolicyWhatIfPasskey(t *testing.T) {
	h := newHarness(t, "")
	doc := filepath.Join(t.TempDir(), "p.yaml")
	os.WriteFile(doc, []byte(`
policies:
  - id: wiki-pr
    name: Wiki needs a passkey
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [wiki]}}
    grant: {authentication_strength: phishing_resistant}
`), 0o600)
	h.ok("", "policy", "apply", "-f", doc)
	h.ok("", "client", "add", "wiki", "--auth-method", "none", "--redirect-uri", "https://wiki.example/cb")
	a := h.openApp()
	if _, err := a.Identity.CreateUser(context.Background(), "test", identity.NewUser{Username: "erin", Password: "correct horse battery"}); err != nil {
		t.Fatal(err)
	}
	a.Close()
	out := h.ok("", "policy", "whatif", "--user", "erin", "--app", "wiki", "--mfa")
	if !strings.Contains(out, "phishing_resistant") || strings.Contains(out, "outcome: allow\n") {
		t.Errorf("password + TOTP:\n%s", out)
	}
	out = h.ok("", "policy", "whatif", "--user", "erin", "--app", "wiki", "--passkey")
	if strings.Contains(out, "allow_with_controls") || strings.Contains(out, "block") {
		t.Errorf("passkey:\n%s", out)
	}
}
