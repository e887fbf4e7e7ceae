package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPasskeysConfig(t *testing.T) {
	mds := filepath.Join(t.TempDir(), "mds.jwt")
	os.WriteFile(mds, []byte("x"), 0o600)
	const aaguid = "ee882879-721c-4913-9775-3dfcce97072a"
	for _, tt := range []struct {
		name   string
		mutate func(c *Config)
		want   string // "" valid; else the field path reported
	}{
		{"defaults", func(c *Config) {}, ""},
		{"https issuer", func(c *Config) { c.Issuer = "https://id.example.com" }, ""},
		{"rp id suffix", func(c *Config) {
			c.Issuer, c.Passkeys.RPID = "https://id.example.com", "example.com"
		}, ""},
		{"rp id ip", func(c *Config) { c.Passkeys.RPID = "10.0.0.1" }, "passkeys.rp_id"},
		{"origin http", func(c *Config) {
			c.Issuer, c.Passkeys.Origins = "https://id.example.com", []string{"http://id.example.com"}
		}, "passkeys.origins[0]"},
		{"origin outside rp id", func(c *Config) {
			c.Issuer, c.Passkeys.Origins = "https://id.example.com", []string{"https://evil.test"}
		}, "passkeys.origins[0]"},
		{"origin with path", func(c *Config) {
			c.Issuer, c.Passkeys.Origins = "https://id.example.com", []string{"https://id.example.com/login"}
		}, "passkeys.origins[0]"},
		{"unknown attestation", func(c *Config) { c.Passkeys.Attestation = "direct" }, "passkeys.attestation"},
		{"aaguids without allow list", func(c *Config) { c.Passkeys.AllowedAAGUIDs = []string{aaguid} }, "passkeys.attestation"},
		{"allow list ok", func(c *Config) {
			c.Passkeys.Attestation, c.Passkeys.AllowedAAGUIDs, c.Passkeys.MetadataFile = "allow_list", []string{aaguid}, mds
		}, ""},
		{"allow list without metadata", func(c *Config) {
			c.Passkeys.Attestation, c.Passkeys.AllowedAAGUIDs = "allow_list", []string{aaguid}
		}, "passkeys.metadata_file"},
		{"allow list bad aaguid", func(c *Config) {
			c.Passkeys.Attestation, c.Passkeys.AllowedAAGUIDs, c.Passkeys.MetadataFile = "allow_list", []string{"yubikey"}, mds
		}, "passkeys.allowed_aaguids[0]"},
		{"timeout", func(c *Config) { c.Passkeys.Timeout = -1 }, "passkeys.timeout"},
		{"fallback ok", func(c *Config) { c.Passkeys.RecoveryFallback = "recovery_code" }, ""},
		{"fallback unknown", func(c *Config) { c.Passkeys.RecoveryFallback = "email" }, "passkeys.recovery_fallback"},
		{"disabled ignores the rest", func(c *Config) { c.Passkeys.Disabled, c.Passkeys.RPID = true, "10.0.0.1" }, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.ResolvePaths()
			tt.mutate(c)
			err := c.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v, want valid", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want+":")):
				t.Fatalf("got %v, want an error at %s", err, tt.want)
			}
		})
	}
}

// An issuer browsers cannot do WebAuthn on leaves passkeys off, with the
// reason; a host name has them.
func TestPasskeysOff(t *testing.T) {
	for issuer, off := range map[string]bool{
		"http://127.0.0.1:8700":  true,
		"http://localhost:8700":  false,
		"https://id.example.com": false,
		"http://id.example.com":  true,
		"https://[::1]:8443":     true,
	} {
		c := Default()
		c.Issuer = issuer
		if got := c.PasskeysOff(); (got != "") != off {
			t.Errorf("%s: PasskeysOff() = %q, want off=%v", issuer, got, off)
		}
	}
	c := Default()
	c.Issuer = "https://id.example.com"
	if got := c.PasskeyOrigins(); len(got) != 1 || got[0] != "https://id.example.com" || c.PasskeyRPID() != "id.example.com" {
		t.Errorf("derived origins %v rp id %q", got, c.PasskeyRPID())
	}
}
