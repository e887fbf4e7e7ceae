package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestExportFromFile(t *testing.T) {
	cfg, err := load(t, `
export:
  sinks:
    - name: archive
      type: file
      file: {path: /var/log/ward/ocsf.jsonl, max_bytes: 1048576, max_age: 24h, max_files: 7}
    - name: splunk
      type: webhook
      max_wait: 2s
      webhook:
        url: https://splunk.example.com:8088/services/collector/event
        secret_env: WARD_EXPORT_SECRET
        headers_env: {Authorization: WARD_SPLUNK_HEC_AUTH}
        format: splunk_hec
    - name: sentinel
      type: syslog
      start: now
      syslog: {address: "syslog.example.com:6514", facility: local4}
`)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := cfg.Export.Sinks
	if len(s) != 3 || s[0].File.MaxAge != 24*time.Hour || s[1].MaxWait != 2*time.Second ||
		s[1].Webhook.HeadersEnv["authorization"] != "WARD_SPLUNK_HEC_AUTH" && s[1].Webhook.HeadersEnv["Authorization"] != "WARD_SPLUNK_HEC_AUTH" ||
		s[2].Syslog.Facility != "local4" || s[2].Start != "now" {
		t.Fatalf("sinks: %+v", s)
	}
}

// Every problem of every sink is reported at once, each at its path.
func TestExportValidation(t *testing.T) {
	cfg, err := load(t, `
export:
  sinks:
    - name: a
      type: file
    - name: a
      type: webhook
      webhook: {url: "http://user:pw@siem.example.com/?token=t", format: xml, headers_env: {"Bad Header": "X"}}
    - name: "b c"
      type: syslog
      start: yesterday
      min_backoff: 10s
      max_backoff: 1s
      syslog: {address: nowhere, facility: root, structured_data_id: "a b"}
    - name: d
      type: kafka
`)
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	var paths []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		paths = append(paths, e.(*FieldError).Path)
	}
	want := []string{
		"export.sinks[0].file.path",
		"export.sinks[1].name", "export.sinks[1].webhook.url", "export.sinks[1].webhook.secret_env",
		"export.sinks[1].webhook.headers_env", "export.sinks[1].webhook.format",
		"export.sinks[2].name", "export.sinks[2].start", "export.sinks[2].max_backoff",
		"export.sinks[2].syslog.address", "export.sinks[2].syslog.facility", "export.sinks[2].syslog.structured_data_id",
		"export.sinks[3].type",
	}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("got\n%v\nwant\n%v\n(%v)", paths, want, err)
	}
	if strings.Contains(err.Error(), "pw") || strings.Contains(err.Error(), "token=t") {
		t.Errorf("credentials of the URL in the message: %v", err)
	}
}
