package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A listen address moved without the issuer would make discovery advertise
// a place where Ward is not: with --dev the issuer follows, otherwise it is
// a start-up error that names the key to set.
func TestIssuerFollowsListen(t *testing.T) {
	for _, tc := range []struct {
		name       string
		yaml       string
		env        []string
		dev        bool
		wantIssuer string
		wantErr    string // substring of Validate's error; "" = valid
	}{
		{name: "defaults", wantIssuer: "http://127.0.0.1:8700"},
		{name: "dev listen from env", env: []string{"WARD_LISTEN=127.0.0.1:9100"}, dev: true, wantIssuer: "http://127.0.0.1:9100"},
		{name: "dev listen on all interfaces", yaml: "listen: 0.0.0.0:9101\nallow_insecure_issuer: true\n", dev: true, wantIssuer: "http://127.0.0.1:9101"},
		{name: "dev explicit issuer wins", env: []string{"WARD_LISTEN=127.0.0.1:9102", "WARD_ISSUER=http://localhost:9102"}, dev: true, wantIssuer: "http://localhost:9102"},
		{name: "listen without issuer", env: []string{"WARD_LISTEN=127.0.0.1:9103"}, wantIssuer: "http://127.0.0.1:8700", wantErr: "set issuer (WARD_ISSUER)"},
		{name: "listen same as default", yaml: "listen: 127.0.0.1:8700\n", wantIssuer: "http://127.0.0.1:8700"},
		{name: "loopback issuer on another port", yaml: "listen: 127.0.0.1:9104\nissuer: http://127.0.0.1:9105\n", wantIssuer: "http://127.0.0.1:9105", wantErr: "listens on port 9104"},
		{name: "loopback issuer on the same port", yaml: "listen: 127.0.0.1:9106\nissuer: http://localhost:9106\n", wantIssuer: "http://localhost:9106"},
		{name: "https issuer behind a proxy", yaml: "listen: 127.0.0.1:9107\nissuer: https://id.example.com\n", wantIssuer: "https://id.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := LoadOptions{Environ: append([]string{"HOME=" + t.TempDir()}, tc.env...)}
			if tc.yaml != "" {
				o.File = writeFile(t, tc.yaml)
			}
			if tc.dev {
				o.Overrides = map[string]any{"dev": true}
			}
			cfg, err := LoadWith(o)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Issuer != tc.wantIssuer {
				t.Errorf("issuer = %q, want %q", cfg.Issuer, tc.wantIssuer)
			}
			err = cfg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Validate = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// --dev keeps its data in one place whatever the working directory, unless
// data_dir says otherwise.
func TestDevDataDir(t *testing.T) {
	home := t.TempDir()
	xdg := t.TempDir()
	for _, tc := range []struct {
		name string
		env  []string
		yaml string
		dev  bool
		want string
	}{
		{"dev uses the home directory", []string{"HOME=" + home}, "", true, filepath.Join(home, ".local", "share", "ward", "dev")},
		{"dev honours XDG_DATA_HOME", []string{"HOME=" + home, "XDG_DATA_HOME=" + xdg}, "", true, filepath.Join(xdg, "ward", "dev")},
		{"relative XDG_DATA_HOME is ignored", []string{"HOME=" + home, "XDG_DATA_HOME=rel"}, "", true, filepath.Join(home, ".local", "share", "ward", "dev")},
		{"dev without a home", nil, "", true, "./ward-data"},
		{"data_dir wins", []string{"HOME=" + home}, "data_dir: /srv/ward\n", true, "/srv/ward"},
		{"WARD_DATA_DIR wins", []string{"HOME=" + home, "WARD_DATA_DIR=/srv/other"}, "", true, "/srv/other"},
		{"not dev", []string{"HOME=" + home}, "", false, "./ward-data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := LoadOptions{Environ: tc.env}
			if o.Environ == nil {
				o.Environ = []string{}
			}
			if tc.yaml != "" {
				o.File = writeFile(t, tc.yaml)
			}
			if tc.dev {
				o.Overrides = map[string]any{"dev": true}
			}
			cfg, err := LoadWith(o)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.DataDir != tc.want {
				t.Errorf("data_dir = %q, want %q", cfg.DataDir, tc.want)
			}
			if cfg.KEK.File != filepath.Join(tc.want, "kek.key") {
				t.Errorf("kek.file = %q, want it under %q", cfg.KEK.File, tc.want)
			}
		})
	}
}

func writeFile(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ward.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
