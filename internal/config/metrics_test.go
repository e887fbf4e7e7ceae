package config

import (
	"strings"
	"testing"
)

// Metrics are off by default, never on the issuer's port, and only on a
// loopback address unless remote scraping is acknowledged.
func TestMetricsListen(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		env        []string
		wantErr    string
	}{
		{name: "off by default"},
		{name: "loopback", yaml: "metrics: {listen: 127.0.0.1:9700}\n"},
		{name: "from the environment", env: []string{"WARD_METRICS__LISTEN=[::1]:9700"}},
		{name: "on the issuer's port", yaml: "metrics: {listen: 127.0.0.1:8700}\n", wantErr: "must differ from listen"},
		{name: "all interfaces", yaml: "metrics: {listen: 0.0.0.0:9700}\n", wantErr: "metrics.allow_remote"},
		{name: "empty host", yaml: "metrics: {listen: \":9700\"}\n", wantErr: "not a loopback address"},
		{name: "remote acknowledged", yaml: "metrics: {listen: 0.0.0.0:9700, allow_remote: true}\n"},
		{name: "no port", yaml: "metrics: {listen: 127.0.0.1}\n", wantErr: "not host:port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := LoadOptions{Environ: append([]string{"HOME=" + t.TempDir()}, tc.env...)}
			if tc.yaml != "" {
				o.File = writeFile(t, tc.yaml)
			}
			cfg, err := LoadWith(o)
			if err != nil {
				t.Fatal(err)
			}
			err = cfg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Validate = %v, want %q", err, tc.wantErr)
			}
		})
	}
}
