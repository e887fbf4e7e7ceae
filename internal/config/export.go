package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"time"
)

// Export lists the SIEM export sinks of `ward serve` (docs/secops.md):
// each sends the audit log as OCSF records, at least once and in order,
// from a cursor of its own in the database.
type Export struct {
	// PollInterval is how often each sink looks for events stored by other
	// processes (1s); this process's events wake it at once.
	PollInterval time.Duration `koanf:"poll_interval"`
	Sinks        []ExportSink  `koanf:"sinks"`
}

// Export sink types.
const (
	ExportFile    = "file"
	ExportWebhook = "webhook"
	ExportSyslog  = "syslog"
)

// ExportSink is one destination.
type ExportSink struct {
	// Name identifies the sink's cursor: renaming a sink starts it afresh.
	Name string `koanf:"name"`
	Type string `koanf:"type"` // file, webhook or syslog
	// Start is where a new sink begins: oldest (every event the audit log
	// holds, default) or now.
	Start string `koanf:"start"`
	// Batch bounds: max_events (500), max_bytes (4 MiB), max_wait (0
	// for file and syslog, 1s for webhook).
	MaxEvents int           `koanf:"max_events"`
	MaxBytes  int           `koanf:"max_bytes"`
	MaxWait   time.Duration `koanf:"max_wait"`
	// Back-off between failed deliveries: exponential with jitter (1s,
	// 1m).
	MinBackoff time.Duration `koanf:"min_backoff"`
	MaxBackoff time.Duration `koanf:"max_backoff"`

	File    ExportFileSink    `koanf:"file"`
	Webhook ExportWebhookSink `koanf:"webhook"`
	Syslog  ExportSyslogSink  `koanf:"syslog"`
}

// ExportFileSink is a JSON-lines file.
type ExportFileSink struct {
	Path     string        `koanf:"path"`
	MaxBytes int64         `koanf:"max_bytes"` // rotate at this size (100 MiB; 0: never)
	MaxAge   time.Duration `koanf:"max_age"`   // rotate files this old (24h; 0: never)
	MaxFiles int           `koanf:"max_files"` // rotated files kept (0: all)
	Fsync    string        `koanf:"fsync"`     // batch (default) or none
}

// ExportWebhookSink is an HTTPS endpoint.
type ExportWebhookSink struct {
	URL string `koanf:"url"`
	// SecretEnv names the environment variable holding the HMAC-SHA256
	// key of the signature header (required).
	SecretEnv       string `koanf:"secret_env"`
	SignatureHeader string `koanf:"signature_header"` // Ward-Signature
	// HeadersEnv maps request headers to environment variables holding
	// their values (Authorization: WARD_SPLUNK_HEC_AUTH).
	HeadersEnv map[string]string `koanf:"headers_env"`
	Format     string            `koanf:"format"`      // ndjson (default), json_array, splunk_hec
	SourceType string            `koanf:"source_type"` // splunk_hec sourcetype (ocsf:ward)
	CAFile     string            `koanf:"ca_file"`
	Timeout    time.Duration     `koanf:"timeout"` // 10s
}

// ExportSyslogSink is a syslog receiver over TLS.
type ExportSyslogSink struct {
	Address    string `koanf:"address"` // host:port (6514)
	CAFile     string `koanf:"ca_file"`
	ServerName string `koanf:"server_name"`
	Facility   string `koanf:"facility"` // authpriv (default), auth, local0…
	Hostname   string `koanf:"hostname"`
	AppName    string `koanf:"app_name"` // ward
	// StructuredDataID is the SD-ID of Ward's element (ward@32473).
	StructuredDataID string `koanf:"structured_data_id"`
}

var (
	sinkNameRE   = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	headerNameRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	sdIDRE       = regexp.MustCompile(`^[!#-<>-\\^-~]{1,32}$`) // printable ASCII but space, '"', '=', ']'

	sourceTypeRE = regexp.MustCompile(`^[A-Za-z0-9_:.-]{1,64}$`)
)

// syslogFacilities are the facility names export.syslog.facility takes.
var syslogFacilities = []string{"kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
	"ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7"}

func (c *Config) validateExport(v *validator) {
	if c.Export.PollInterval < 0 {
		v.add("export.poll_interval", "must not be negative")
	}
	seen := map[string]int{}
	for i, s := range c.Export.Sinks {
		p := fmt.Sprintf("export.sinks[%d]", i)
		switch j, dup := seen[s.Name]; {
		case !sinkNameRE.MatchString(s.Name):
			v.add(p+".name", "%q is not a sink name (1-64 letters, digits, '_' or '-')", s.Name)
		case dup:
			v.add(p+".name", "%q is also used by export.sinks[%d]", s.Name, j)
		default:
			seen[s.Name] = i
		}
		if s.Start != "" && s.Start != "oldest" && s.Start != "now" {
			v.add(p+".start", "%q is not oldest or now", s.Start)
		}
		if s.MaxEvents < 0 || s.MaxEvents > 10000 {
			v.add(p+".max_events", "must be 1..10000 (0: 500)")
		}
		if s.MaxBytes < 0 {
			v.add(p+".max_bytes", "must not be negative")
		}
		for _, d := range []struct {
			k string
			d time.Duration
		}{{"max_wait", s.MaxWait}, {"min_backoff", s.MinBackoff}, {"max_backoff", s.MaxBackoff}} {
			if d.d < 0 {
				v.add(p+"."+d.k, "must not be negative")
			}
		}
		if s.MinBackoff > 0 && s.MaxBackoff > 0 && s.MaxBackoff < s.MinBackoff {
			v.add(p+".max_backoff", "%v is shorter than min_backoff (%v)", s.MaxBackoff, s.MinBackoff)
		}
		switch s.Type {
		case ExportFile:
			validateExportFile(v, p+".file", s.File)
		case ExportWebhook:
			validateExportWebhook(v, p+".webhook", s.Webhook)
		case ExportSyslog:
			validateExportSyslog(v, p+".syslog", s.Syslog)
		default:
			v.add(p+".type", "%q is not one of file, webhook, syslog", s.Type)
		}
	}
}

func validateExportFile(v *validator, p string, f ExportFileSink) {
	if f.Path == "" {
		v.add(p+".path", "required")
	} else if st, err := os.Stat(f.Path); err == nil && st.IsDir() {
		v.add(p+".path", "%s is a directory", f.Path)
	}
	if f.MaxBytes < 0 {
		v.add(p+".max_bytes", "must not be negative")
	}
	if f.MaxAge < 0 {
		v.add(p+".max_age", "must not be negative")
	}
	if f.MaxFiles < 0 {
		v.add(p+".max_files", "must not be negative")
	}
	if f.Fsync != "" && f.Fsync != "batch" && f.Fsync != "none" {
		v.add(p+".fsync", "%q is not batch or none", f.Fsync)
	}
}

func validateExportWebhook(v *validator, p string, w ExportWebhookSink) {
	if u, err := url.Parse(w.URL); err != nil || u.Scheme != "https" || u.Host == "" {
		v.add(p+".url", "%q is not an https URL", redactedURL(w.URL))
	}
	if !envNameRE.MatchString(w.SecretEnv) {
		v.add(p+".secret_env", "required: the name of the environment variable holding the signing secret")
	}
	if w.SignatureHeader != "" && !headerNameRE.MatchString(w.SignatureHeader) {
		v.add(p+".signature_header", "%q is not a header name", w.SignatureHeader)
	}
	for h, env := range w.HeadersEnv {
		if !headerNameRE.MatchString(h) {
			v.add(p+".headers_env", "%q is not a header name", h)
		}
		if !envNameRE.MatchString(env) {
			v.add(p+".headers_env."+h, "%q is not an environment variable name", env)
		}
	}
	switch w.Format {
	case "", "ndjson", "json_array", "splunk_hec":
	default:
		v.add(p+".format", "%q is not one of ndjson, json_array, splunk_hec", w.Format)
	}
	if w.SourceType != "" && !sourceTypeRE.MatchString(w.SourceType) {
		v.add(p+".source_type", "%q is not a source type (letters, digits, '_', ':', '.', '-')", w.SourceType)
	}
	checkFile(v, p+".ca_file", w.CAFile)
	if w.Timeout < 0 {
		v.add(p+".timeout", "must not be negative")
	}
}

func validateExportSyslog(v *validator, p string, s ExportSyslogSink) {
	if _, port, err := net.SplitHostPort(s.Address); err != nil || port == "" {
		v.add(p+".address", "%q is not host:port", s.Address)
	}
	checkFile(v, p+".ca_file", s.CAFile)
	if s.Facility != "" && !contains(syslogFacilities, s.Facility) {
		v.add(p+".facility", "%q is not a syslog facility (authpriv, auth, local0…local7, …)", s.Facility)
	}
	if s.StructuredDataID != "" && !sdIDRE.MatchString(s.StructuredDataID) {
		v.add(p+".structured_data_id", "%q is not an SD-ID (printable ASCII without space, '=', ']' or '\"', at most 32)", s.StructuredDataID)
	}
}

func checkFile(v *validator, p, f string) {
	if f == "" {
		return
	}
	if st, err := os.Stat(f); err != nil {
		v.add(p, "%v", err)
	} else if st.IsDir() {
		v.add(p, "%s is a directory", f)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// redactedURL drops a URL's user information and query, which may hold
// credentials, from messages.
func redactedURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery = nil, ""
	return u.String()
}
