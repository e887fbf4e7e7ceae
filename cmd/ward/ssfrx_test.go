package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/wardtest"
)

// An administrator manages Ward's stream at another transmitter (a
// second Ward): re-create makes it (the transmitter then holds exactly
// one), status reads it live, verify asks for a verification event, and
// re-creating replaces it rather than adding one; an unknown name fails.
func TestSSFReceiverCommands(t *testing.T) {
	const secret = "cli-receiver-secret-0123456789-abcdefghij"
	b := wardtest.Start(t, wardtest.Options{RealClock: true, Configure: func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: "ward-cli", Name: "receiver", AuthMethod: "client_secret_basic",
			Secret: secret, GrantTypes: []string{"client_credentials"}, Scopes: []string{"ssf.manage", "ssf.poll"}})
	}})
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, fmt.Sprintf(`ssf_receivers:
  - name: ward-b
    issuer: %s
    auth: {client_id: ward-cli, client_secret_file: %s, token_url: %s/token, scopes: [ssf.manage, ssf.poll]}
    allowed_networks: [127.0.0.0/8]
`, b.URL, secretFile, b.URL))
	streams := func() []string {
		l, err := b.App.CAE.ListStreams(context.Background(), "ward-cli")
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, s := range l {
			ids = append(ids, s.ID)
		}
		return ids
	}
	if out := h.ok("", "ssf-receiver", "list"); !regexp.MustCompile(`(?m)^ward-b\s+` + regexp.QuoteMeta(b.URL) + `\s+poll\s+-\s`).MatchString(out) {
		t.Errorf("list before any stream:\n%s", out)
	}
	out := h.ok("", "ssf-receiver", "re-create", "ward-b")
	ids := streams()
	if len(ids) != 1 || !strings.Contains(out, ids[0]) {
		t.Fatalf("re-create: %q; streams at the transmitter %v", out, ids)
	}
	if out := h.ok("", "ssf-receiver", "status", "ward-b"); !strings.Contains(out, "status:       enabled") || !strings.Contains(out, ids[0]) {
		t.Errorf("status:\n%s", out)
	}
	if out := h.ok("", "ssf-receiver", "verify", "ward-b"); !strings.Contains(out, "verification requested") {
		t.Errorf("verify: %q", out)
	}
	h.ok("", "ssf-receiver", "re-create", "ward-b")
	if again := streams(); len(again) != 1 || again[0] == ids[0] {
		t.Fatalf("after a second re-create: %v (was %v), want one new stream", again, ids)
	}
	if out := h.ok("", "ssf-receiver", "list"); !strings.Contains(out, streams()[0]) {
		t.Errorf("list:\n%s", out)
	}
	if _, _, code := h.run("", "ssf-receiver", "status", "nobody"); code == 0 {
		t.Error("status of an unknown receiver succeeded")
	}
	if strings.Contains(h.ok("", "ssf-receiver", "status", "ward-b"), secret) {
		t.Error("the secret is printed")
	}
}
