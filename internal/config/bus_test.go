package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBusDefaultsAndEnv(t *testing.T) {
	cfg, err := LoadWith(LoadOptions{Environ: []string{
		"WARD_DATA_DIR=/var/lib/ward",
		"WARD_BUS__NATS__URL=nats://n1:4222,nats://n2:4222",
		"WARD_BUS__NATS__REPLICAS=3",
		"WARD_BUS__NATS__STREAM_MAX_AGE=24h",
	}})
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.Bus.NATS
	if cfg.Bus.Driver != BusNATS || n.URL.Reveal() != "nats://n1:4222,nats://n2:4222" || n.Replicas != 3 ||
		n.StreamMaxAge != 24*time.Hour || n.Stream != "WARD_EVENTS" || n.SubjectPrefix != "ward.events" {
		t.Errorf("bus config: %+v", cfg.Bus)
	}
	if got, want := n.Embedded.StoreDir, filepath.Join("/var/lib/ward", "nats"); got != want {
		t.Errorf("store dir: got %q, want %q", got, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestValidateBus(t *testing.T) {
	creds := filepath.Join(t.TempDir(), "ward.creds")
	if err := os.WriteFile(creds, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	const nkey = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"
	tests := []struct {
		name   string
		mutate func(c *Config)
		want   string // field path in the error; "" means valid
	}{
		{"defaults (embedded)", func(c *Config) {}, ""},
		{"local", func(c *Config) { b := &c.Bus; b.Driver = BusLocal; b.NATS.Stream = "" }, ""},
		{"unknown driver", func(c *Config) { b := &c.Bus; b.Driver = "kafka" }, "bus.driver"},
		{"external", func(c *Config) {
			b := &c.Bus
			b.NATS.URL = "nats://127.0.0.1:4222, tls://nats.example:4222"
			b.NATS.Replicas = 3
		}, ""},
		{"external bad scheme", func(c *Config) { b := &c.Bus; b.NATS.URL = "http://nats.example" }, "bus.nats.url"},
		{"external no host", func(c *Config) { b := &c.Bus; b.NATS.URL = "nats://" }, "bus.nats.url"},
		{"external creds", func(c *Config) { b := &c.Bus; b.NATS.URL = "nats://n:4222"; b.NATS.CredsFile = creds }, ""},
		{"external creds missing", func(c *Config) { b := &c.Bus; b.NATS.URL = "nats://n:4222"; b.NATS.CredsFile = creds + ".x" }, "bus.nats.creds_file"},
		{"creds and token", func(c *Config) {
			b := &c.Bus
			b.NATS.URL = "nats://n:4222"
			b.NATS.CredsFile = creds
			b.NATS.TokenEnv = "T"
		}, "bus.nats.creds_file"},
		{"creds embedded", func(c *Config) { b := &c.Bus; b.NATS.CredsFile = creds }, "bus.nats.creds_file"},
		{"token env name", func(c *Config) { b := &c.Bus; b.NATS.TokenEnv = "NOT A NAME" }, "bus.nats.token_env"},
		{"stream name", func(c *Config) { b := &c.Bus; b.NATS.Stream = "ward.events" }, "bus.nats.stream"},
		{"subject wildcard", func(c *Config) { b := &c.Bus; b.NATS.SubjectPrefix = "ward.*" }, "bus.nats.subject_prefix"},
		{"subject empty token", func(c *Config) { b := &c.Bus; b.NATS.SubjectPrefix = "ward..events" }, "bus.nats.subject_prefix"},
		{"max age below window", func(c *Config) { b := &c.Bus; b.NATS.StreamMaxAge = time.Minute }, "bus.nats.stream_max_age"},
		{"replicas zero", func(c *Config) { b := &c.Bus; b.NATS.Replicas = 0 }, "bus.nats.replicas"},
		{"replicas embedded", func(c *Config) { b := &c.Bus; b.NATS.Replicas = 3 }, "bus.nats.replicas"},
		{"listen without auth", func(c *Config) { b := &c.Bus; b.NATS.Embedded.Listen = "127.0.0.1:4222" }, "bus.nats.embedded.listen"},
		{"listen with token", func(c *Config) {
			b := &c.Bus
			b.NATS.Embedded.Listen = "127.0.0.1:4222"
			b.NATS.TokenEnv = "WARD_NATS_TOKEN"
		}, ""},
		{"listen with nkeys", func(c *Config) {
			b := &c.Bus
			b.NATS.Embedded.Listen = "127.0.0.1:4222"
			b.NATS.Embedded.NKeys = []string{nkey}
		}, ""},
		{"listen token and nkeys", func(c *Config) {
			b := &c.Bus
			b.NATS.Embedded.Listen = "127.0.0.1:4222"
			b.NATS.Embedded.NKeys = []string{nkey}
			b.NATS.TokenEnv = "T"
		}, "bus.nats.embedded.nkeys"},
		{"listen not host:port", func(c *Config) { b := &c.Bus; b.NATS.Embedded.Listen = "4222"; b.NATS.TokenEnv = "T" }, "bus.nats.embedded.listen"},
		{"bad nkey", func(c *Config) { b := &c.Bus; b.NATS.Embedded.NKeys = []string{"SUAXXX"} }, "bus.nats.embedded.nkeys[0]"},
		{"ssf.nats defaults", func(c *Config) {}, ""},
		{"ssf push networks", func(c *Config) { c.SSF.PushAllowedNetworks = []string{"10.0.0.0/8", " 127.0.0.1/32", "::1/128"} }, ""},
		{"ssf push network not a CIDR", func(c *Config) { c.SSF.PushAllowedNetworks = []string{"10.0.0.0/8", "10.0.0.5"} }, "ssf.push_allowed_networks[1]"},
		{"ssf.nats subscribers", func(c *Config) {
			c.Bus.NATS.Embedded.Listen = "127.0.0.1:4222"
			c.SSF.NATS.SubscriberNKeys = []string{nkey}
		}, ""},
		{"ssf.nats subscribers and admin keys", func(c *Config) {
			c.Bus.NATS.Embedded.Listen = "127.0.0.1:4222"
			c.Bus.NATS.Embedded.NKeys = []string{nkey}
			c.SSF.NATS.SubscriberNKeys = []string{nkey}
		}, ""},
		{"ssf.nats subscribers without listener", func(c *Config) { c.SSF.NATS.SubscriberNKeys = []string{nkey} }, "ssf.nats.subscriber_nkeys"},
		{"ssf.nats subscribers with token", func(c *Config) {
			c.Bus.NATS.Embedded.Listen = "127.0.0.1:4222"
			c.Bus.NATS.TokenEnv = "T"
			c.SSF.NATS.SubscriberNKeys = []string{nkey}
		}, "ssf.nats.subscriber_nkeys"},
		{"ssf.nats subscribers external", func(c *Config) { c.Bus.NATS.URL = "nats://n:4222"; c.SSF.NATS.SubscriberNKeys = []string{nkey} }, "ssf.nats.subscriber_nkeys"},
		{"ssf.nats subscriber not a key", func(c *Config) {
			c.Bus.NATS.Embedded.Listen = "127.0.0.1:4222"
			c.SSF.NATS.SubscriberNKeys = []string{"SUAXXX"}
		}, "ssf.nats.subscriber_nkeys[0]"},
		{"ssf.nats subscribers, disabled", func(c *Config) {
			c.Bus.NATS.Embedded.Listen = "127.0.0.1:4222"
			c.Bus.NATS.TokenEnv = "T"
			c.SSF.NATS.Enabled = false
			c.SSF.NATS.SubscriberNKeys = []string{nkey}
		}, "ssf.nats.subscriber_nkeys"},
		{"ssf.nats subscribers, local bus", func(c *Config) { c.Bus.Driver = BusLocal; c.SSF.NATS.SubscriberNKeys = []string{nkey} }, "ssf.nats.subscriber_nkeys"},
		{"ssf.nats same stream", func(c *Config) { c.SSF.NATS.Stream = c.Bus.NATS.Stream }, "ssf.nats.stream"},
		{"ssf.nats overlapping prefix", func(c *Config) { c.SSF.NATS.SubjectPrefix = "ward.events.cae" }, "ssf.nats.subject_prefix"},
		{"ssf.nats prefix wildcard", func(c *Config) { c.SSF.NATS.SubjectPrefix = "ward.>" }, "ssf.nats.subject_prefix"},
		{"ssf.nats no audience", func(c *Config) { c.SSF.NATS.Audience = " " }, "ssf.nats.audience"},
		{"ssf.nats max age below token lifetime", func(c *Config) { c.SSF.NATS.MaxAge = time.Hour }, "ssf.nats.max_age"},
		{"ssf.nats disabled, anything", func(c *Config) { c.SSF.NATS.Enabled = false; c.SSF.NATS.MaxAge = 0; c.SSF.NATS.Stream = "" }, ""},
		{"listen with external", func(c *Config) { b := &c.Bus; b.NATS.URL = "nats://n:4222"; b.NATS.Embedded.Listen = "127.0.0.1:4222" }, "bus.nats.embedded.listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Default()
			cfg.ResolvePaths()
			tt.mutate(cfg)
			err := cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			var fe *FieldError
			found := false
			if err != nil {
				for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
					if errors.As(e, &fe) && fe.Path == tt.want {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("got %v, want an error at %s", err, tt.want)
			}
		})
	}
}

// A NATS URL may carry a password; a validation error must not repeat it.
func TestValidateBusDoesNotEchoURL(t *testing.T) {
	cfg := Default()
	cfg.ResolvePaths()
	cfg.Bus.NATS.URL = "http://user:hunter2-secret@nats.example"
	err := cfg.Validate()
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("got %v", err)
	}
}
