package export

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"
)

// Webhook body formats.
const (
	// FormatNDJSON is one OCSF record per line
	// (application/x-ndjson): Elastic's HTTP endpoint input, Logstash,
	// Vector, Fluent Bit, Splunk HEC's raw endpoint.
	FormatNDJSON = "ndjson"
	// FormatJSONArray is a JSON array of records (application/json):
	// Azure Monitor's Logs Ingestion API and most custom receivers.
	FormatJSONArray = "json_array"
	// FormatSplunkHEC is Splunk HTTP Event Collector's event format:
	// {"time":…,"sourcetype":…,"event":{record}} objects one after the
	// other (/services/collector/event).
	FormatSplunkHEC = "splunk_hec"
)

// DefaultSignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the
// body under the shared secret.
const DefaultSignatureHeader = "Ward-Signature"

// WebhookOptions configure an HTTPS webhook sink.
type WebhookOptions struct {
	URL string // https only
	// Secret is the HMAC-SHA256 key of the signature header (required).
	Secret []byte
	// SignatureHeader names it (DefaultSignatureHeader).
	SignatureHeader string
	// Headers are sent with every request (an Authorization header for
	// Splunk HEC, say); their values are never logged.
	Headers map[string]string
	Format  string
	// SourceType is the Splunk HEC sourcetype (ocsf:ward).
	SourceType string
	// CAFile adds certificate authorities to the system's (PEM).
	CAFile  string
	Timeout time.Duration // one request (default 10s)
	Log     *slog.Logger
	// Transport replaces the HTTP transport (tests); nil builds one with
	// TLS verification on.
	Transport http.RoundTripper
}

// WebhookSink POSTs batches of records.
//
// A 2xx answer delivers the batch. 408, 429, 5xx, a redirect, a network
// or TLS error, and 401, 403 and 404 (a credential or an address to fix,
// not a bad record) fail it: it is sent again after a back-off, for as
// long as it takes; a Retry-After answer lengthens the wait. Any other
// 4xx (400, 413, 422, …) refuses the content: the batch is split in
// halves and each sent again, so that a record the receiver refuses on
// its own is found; that record is logged (event id and code, never its
// content) and skipped, and the others are delivered.
type WebhookSink struct {
	o      WebhookOptions
	client *http.Client
	log    *slog.Logger
}

// NewWebhookSink checks o and builds the client.
func NewWebhookSink(o WebhookOptions) (*WebhookSink, error) {
	u, err := url.Parse(o.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("export: webhook: %q is not an https URL", o.URL)
	}
	if len(o.Secret) == 0 {
		return nil, errors.New("export: webhook: no signing secret")
	}
	if o.SignatureHeader == "" {
		o.SignatureHeader = DefaultSignatureHeader
	}
	if o.Format == "" {
		o.Format = FormatNDJSON
	}
	if o.SourceType == "" {
		o.SourceType = "ocsf:ward"
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	rt := o.Transport
	if rt == nil {
		tc, err := tlsClientConfig(o.CAFile, "")
		if err != nil {
			return nil, fmt.Errorf("export: webhook: %w", err)
		}
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = tc
		rt = t
	}
	return &WebhookSink{o: o, log: o.Log, client: &http.Client{
		Transport: rt,
		Timeout:   o.Timeout,
		// A redirect would send the signed batch somewhere else: an error.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

// tlsClientConfig verifies servers against the system roots plus the
// PEM certificates of caFile.
func tlsClientConfig(caFile, serverName string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile == "" {
		return tc, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	tc.RootCAs = pool
	return tc, nil
}

// Deliver implements Sink.
func (s *WebhookSink) Deliver(ctx context.Context, items []Item) error {
	err := s.post(ctx, items)
	var rej *rejectedError
	if !errors.As(err, &rej) {
		return err
	}
	if len(items) == 1 {
		s.log.Error("export: webhook refused a record; skipped", "status", rej.status,
			"event_id", items[0].ID, "seq", items[0].Seq, "code", items[0].Code)
		return nil
	}
	half := len(items) / 2
	if err := s.Deliver(ctx, items[:half]); err != nil {
		return err
	}
	return s.Deliver(ctx, items[half:])
}

// rejectedError is a 4xx that refuses the content.
type rejectedError struct{ status int }

func (e *rejectedError) Error() string {
	return "webhook refused the batch: HTTP " + strconv.Itoa(e.status)
}

// retryAfterError carries a Retry-After wait.
type retryAfterError struct {
	status int
	after  time.Duration
}

func (e *retryAfterError) Error() string {
	return fmt.Sprintf("webhook answered HTTP %d (retry after %v)", e.status, e.after)
}

func (s *WebhookSink) post(ctx context.Context, items []Item) error {
	body, ctype := s.body(items)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.o.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("User-Agent", "Ward-Export/1")
	for k, v := range s.o.Headers {
		req.Header.Set(k, v)
	}
	mac := hmac.New(sha256.New, s.o.Secret)
	mac.Write(body)
	req.Header.Set(s.o.SignatureHeader, "sha256="+hex.EncodeToString(mac.Sum(nil)))
	req.Header.Set("Ward-Batch-First-Seq", strconv.FormatInt(items[0].Seq, 10))
	req.Header.Set("Ward-Batch-Last-Seq", strconv.FormatInt(items[len(items)-1].Seq, 10))
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook: %w", redactURL(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch st := resp.StatusCode; {
	case st >= 200 && st < 300:
		return nil
	case st == http.StatusTooManyRequests || st == http.StatusServiceUnavailable:
		if d, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
			return &retryAfterError{status: st, after: d}
		}
		return fmt.Errorf("webhook answered HTTP %d", st)
	case st == http.StatusRequestTimeout, st == http.StatusUnauthorized, st == http.StatusForbidden, st == http.StatusNotFound,
		st < 400, st >= 500:
		return fmt.Errorf("webhook answered HTTP %d", st)
	default:
		return &rejectedError{status: st}
	}
}

// RetryAfter returns the wait a delivery error asks for (Retry-After),
// capped at limit.
func RetryAfter(err error, limit time.Duration) (time.Duration, bool) {
	var ra *retryAfterError
	if errors.As(err, &ra) {
		return min(ra.after, limit), true
	}
	return 0, false
}

func retryAfter(h string) (time.Duration, bool) {
	if h == "" {
		return 0, false
	}
	if n, err := strconv.Atoi(h); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

// redactURL keeps a URL's query (which may hold a token) out of errors.
func redactURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			u.RawQuery, u.User = "", nil
			return &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
		}
	}
	return err
}

func (s *WebhookSink) body(items []Item) ([]byte, string) {
	var b bytes.Buffer
	switch s.o.Format {
	case FormatJSONArray:
		b.WriteByte('[')
		for i, it := range items {
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(it.JSON)
		}
		b.WriteByte(']')
		return b.Bytes(), "application/json"
	case FormatSplunkHEC:
		for _, it := range items {
			b.WriteString(`{"time":`)
			b.WriteString(strconv.FormatFloat(float64(it.Time.UnixMicro())/1e6, 'f', 6, 64))
			b.WriteString(`,"source":"ward","sourcetype":`)
			b.WriteString(strconv.Quote(s.o.SourceType))
			b.WriteString(`,"event":`)
			b.Write(it.JSON)
			b.WriteString("}\n")
		}
		return b.Bytes(), "application/json"
	default:
		for _, it := range items {
			b.Write(it.JSON)
			b.WriteByte('\n')
		}
		return b.Bytes(), "application/x-ndjson"
	}
}

// Close implements Sink.
func (s *WebhookSink) Close() error {
	s.client.CloseIdleConnections()
	return nil
}
