package config

import (
	"strings"
	"testing"
	"time"
)

// TestIncidentsConfig: the default window, the file and the environment,
// and the values refused.
func TestIncidentsConfig(t *testing.T) {
	cfg, err := load(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Incidents.Window != 24*time.Hour || cfg.Incidents.Retention != 365*24*time.Hour {
		t.Errorf("defaults %+v", cfg.Incidents)
	}
	cfg, err = load(t, "incidents: {window: 2h}\n")
	if err != nil || cfg.Incidents.Window != 2*time.Hour {
		t.Errorf("from file: %v %v", cfg.Incidents.Window, err)
	}
	cfg, err = load(t, "", "WARD_INCIDENTS__WINDOW=90m")
	if err != nil || cfg.Incidents.Window != 90*time.Minute {
		t.Errorf("from the environment: %v %v", cfg.Incidents.Window, err)
	}
	for _, bad := range []string{"incidents: {window: 0s}", "incidents: {window: -1h}", "incidents: {window: 721h}", "incidents: {retention: 0s}"} {
		cfg, err := load(t, bad+"\n")
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), "incidents.") {
			t.Errorf("%s: %v, want an error naming the key", bad, err)
		}
	}
}
