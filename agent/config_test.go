package agent_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/agent"
)

const (
	testRT = "rt-secret-Zm9vYmFyYmF6cXV4LXJlZnJlc2g"
	testAT = "at-secret-eyJhbGciOiJFUzI1NiJ9.payload.sig"
)

func sampleConfig(path string) *agent.Config {
	c := &agent.Config{
		Server: "https://id.example.com", ClientID: agent.DefaultClientID, Scope: "openid offline_access ward:admin", DeviceID: "dev-123", JKT: "jkt-abc",
		KeyName: "device-1", KeyStorage: "file", KeyDir: "/keys",
		RefreshToken: testRT, AccessToken: testAT,
		TokenExpiry: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), EnrolledAt: time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	c.SetPath(path)
	return c
}

func TestConfigSaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ward")
	path := filepath.Join(dir, "agent.json")
	c := sampleConfig(path)
	if err := c.Save(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("config mode %#o, want 0600", st.Mode().Perm())
	}
	if dst, _ := os.Stat(dir); dst.Mode().Perm() != 0o700 {
		t.Errorf("config dir mode %#o, want 0700", dst.Mode().Perm())
	}
	// The file is the one place the tokens are written in clear.
	raw, _ := os.ReadFile(path)
	if !bytes.Contains(raw, []byte(testRT)) || !bytes.Contains(raw, []byte(`"refresh_token"`)) {
		t.Errorf("the refresh token is not in the file: %s", raw)
	}
	got, err := agent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Path() != path || got.RefreshToken.Reveal() != testRT || got.AccessToken.Reveal() != testAT ||
		got.DeviceID != c.DeviceID || got.KeyName != c.KeyName || got.KeyDir != c.KeyDir || got.JKT != c.JKT ||
		!got.TokenExpiry.Equal(c.TokenExpiry) || !got.EnrolledAt.Equal(c.EnrolledAt) || got.Server != c.Server || got.Scope != c.Scope {
		t.Errorf("round trip: got %+v", got)
	}
	// Saving again replaces the file atomically and leaves no temp files.
	got.RefreshToken = "rotated"
	if err := got.Save(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only agent.json", len(entries))
	}
	again, _ := agent.LoadConfig(path)
	if again.RefreshToken.Reveal() != "rotated" {
		t.Errorf("after rotation: %q", again.RefreshToken.Reveal())
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := agent.LoadConfig(filepath.Join(dir, "missing.json")); !errors.Is(err, agent.ErrNotEnrolled) {
		t.Errorf("missing file: %v, want ErrNotEnrolled", err)
	}
	path := filepath.Join(dir, "agent.json")
	if err := sampleConfig(path).Save(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.LoadConfig(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable config: %v, want a refusal", err)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"server":`), 0o600)
	if _, err := agent.LoadConfig(bad); err == nil {
		t.Error("malformed config accepted")
	}
	if err := os.WriteFile(bad, []byte(`{"refresh_token":"x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.LoadConfig(bad); err == nil {
		t.Error("incomplete config accepted")
	}
}

// Tokens never show up when a Config is printed, logged or marshalled.
func TestConfigRedaction(t *testing.T) {
	c := sampleConfig(filepath.Join(t.TempDir(), "agent.json"))
	var out bytes.Buffer
	fmt.Fprintf(&out, "%v|%+v|%#v|%s|%q|%x|", c, *c, c, c.RefreshToken, c.RefreshToken, c.AccessToken)
	fmt.Fprint(&out, c.RefreshToken, c.AccessToken, *c)
	fmt.Fprintln(&out, c.RefreshToken.String())
	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	out.Write(j)
	slog.New(slog.NewJSONHandler(&out, nil)).Info("config", "cfg", c, "rt", c.RefreshToken, "at", c.AccessToken)
	slog.New(slog.NewTextHandler(&out, nil)).Info("config", "cfg", *c, "rt", c.RefreshToken)
	for _, s := range []string{testRT, testAT, "Zm9vYmFy"} {
		if strings.Contains(out.String(), s) {
			t.Fatalf("secret %q leaked: %s", s, out.String())
		}
	}
	if !strings.Contains(out.String(), "[REDACTED]") || !strings.Contains(out.String(), "dev-123") {
		t.Errorf("output does not look redacted: %s", out.String())
	}
	if c.RefreshToken.Reveal() != testRT {
		t.Error("Reveal")
	}
	if agent.Secret("").String() != "" {
		t.Error("an empty secret should print empty")
	}
}
