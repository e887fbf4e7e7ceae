package export_test

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/audit/export"
	"github.com/ward-idp/ward/internal/audit/ocsf"
	"github.com/ward-idp/ward/internal/audit/ocsf/ocsftest"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

var (
	schemaOnce sync.Once
	schema     *ocsftest.Schema
	schemaErr  error
)

// validate checks every record against the vendored OCSF schema.
func validate(t *testing.T, recs [][]byte) {
	t.Helper()
	schemaOnce.Do(func() { schema, schemaErr = ocsftest.Load(ocsftest.Dir()) })
	if schemaErr != nil {
		t.Fatal(schemaErr)
	}
	for _, r := range recs {
		if err := schema.Validate(r); err != nil {
			t.Fatalf("record does not validate: %v\n%s", err, r)
		}
	}
}

func openStore(t testing.TB) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// appendEvents stores n events of every mapped kind, in turn, and
// returns their ids in sequence order.
func appendEvents(t testing.TB, st store.Store, n int) []string {
	t.Helper()
	types := audit.EventTypes()
	ids := make([]string, n)
	for i := range n {
		id := fmt.Sprintf("ev-%06d", i)
		_, err := st.AppendEvent(context.Background(), &model.Event{ID: id, Type: types[i%len(types)], Time: time.Now(),
			Actor: "u1", UserID: "u1", ClientID: "demo-spa", IP: "192.0.2.1", UserAgent: "test/1", Outcome: model.OutcomeSuccess,
			Data: map[string]string{"i": strconv.Itoa(i)}})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	return ids
}

func start(t *testing.T, st export.Source, owner string, sinks ...export.SinkConfig) *export.Exporter {
	t.Helper()
	e, err := export.Start(context.Background(), export.Options{Store: st, Mapper: ocsf.NewMapper("test"), Owner: owner,
		PollInterval: 50 * time.Millisecond, LeaseTTL: 3 * time.Second}, sinks)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// waitCursor waits until sink's cursor reaches seq.
func waitCursor(t testing.TB, st store.Store, sink string, seq int64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		cs, err := st.ListExportCursors(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.Sink == sink && c.Seq >= seq {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	cs, _ := st.ListExportCursors(context.Background())
	t.Fatalf("sink %s did not reach seq %d within %v: %+v", sink, seq, within, cs)
}

// ids reads metadata.uid of each record.
func ids(t *testing.T, recs [][]byte) []string {
	t.Helper()
	out := make([]string, len(recs))
	for i, r := range recs {
		var rec struct {
			Metadata struct {
				UID string `json:"uid"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(r, &rec); err != nil {
			t.Fatalf("record %d: %v: %s", i, err, r)
		}
		out[i] = rec.Metadata.UID
	}
	return out
}

func sameIDs(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("record %d is %s, want %s (order or content)", i, got[i], want[i])
		}
	}
}

func readLines(t *testing.T, paths ...string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			out = append(out, append([]byte(nil), sc.Bytes()...))
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// The file sink writes every event once, in order, rotating by size and
// keeping max_files; every line is a valid OCSF record.
func TestFileSinkRotationOrderContents(t *testing.T) {
	st := openStore(t)
	want := appendEvents(t, st, 600)
	path := filepath.Join(t.TempDir(), "ocsf", "ward.jsonl")
	fs, err := export.NewFileSink(export.FileOptions{Path: path, MaxBytes: 64 << 10, MaxFiles: 100})
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, st, "i1", export.SinkConfig{Name: "file", Sink: fs, Batch: export.Batching{MaxEvents: 100}})
	waitCursor(t, st, "file", 600, 20*time.Second)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	rotated := export.RotatedFiles(path)
	if len(rotated) < 3 {
		t.Fatalf("%d rotated files, want several at 64 KiB each", len(rotated))
	}
	for _, p := range append(rotated, path) {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 64<<10 {
			t.Errorf("%s has %d bytes, more than max_bytes", p, st.Size())
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", p, st.Mode().Perm())
		}
	}
	recs := readLines(t, append(rotated, path)...)
	sameIDs(t, ids(t, recs), want)
	validate(t, recs)

	// max_files prunes the oldest rotated files.
	st2 := openStore(t)
	appendEvents(t, st2, 600)
	path2 := filepath.Join(t.TempDir(), "ward.jsonl")
	fs2, _ := export.NewFileSink(export.FileOptions{Path: path2, MaxBytes: 32 << 10, MaxFiles: 2})
	e2 := start(t, st2, "i1", export.SinkConfig{Name: "file", Sink: fs2, Batch: export.Batching{MaxEvents: 50}})
	waitCursor(t, st2, "file", 600, 20*time.Second)
	e2.Close()
	if n := len(export.RotatedFiles(path2)); n != 2 {
		t.Errorf("%d rotated files kept, want max_files 2", n)
	}
}

// Age-based rotation: a file older than max_age is rotated before the
// next batch.
func TestFileSinkRotatesByAge(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Date(2026, 4, 1, 10, 0, 0, 0, time.UTC).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	path := filepath.Join(t.TempDir(), "ward.jsonl")
	fs, err := export.NewFileSink(export.FileOptions{Path: path, MaxAge: time.Hour, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	item := func(i int) export.Item {
		return export.Item{Seq: int64(i), ID: strconv.Itoa(i), JSON: []byte(`{"n":` + strconv.Itoa(i) + `}`)}
	}
	must(t, fs.Deliver(context.Background(), []export.Item{item(1), item(2)}))
	now.Add(int64(59 * time.Minute))
	must(t, fs.Deliver(context.Background(), []export.Item{item(3)}))
	if n := len(export.RotatedFiles(path)); n != 0 {
		t.Fatalf("rotated after 59m: %d files", n)
	}
	now.Add(int64(2 * time.Minute))
	must(t, fs.Deliver(context.Background(), []export.Item{item(4)}))
	rot := export.RotatedFiles(path)
	if len(rot) != 1 || !strings.Contains(rot[0], "20260401T110100.000000000Z") {
		t.Fatalf("rotated files %v, want one named by the rotation time", rot)
	}
	if got := string(readAll(t, rot[0])); got != "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n" {
		t.Errorf("rotated file: %q", got)
	}
	if got := string(readAll(t, path)); got != "{\"n\":4}\n" {
		t.Errorf("active file: %q", got)
	}
}

// A line cut short by a crash is removed when the sink opens the file,
// so the records sent again start on a line of their own.
func TestFileSinkTrimsPartialLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ward.jsonl")
	must(t, os.WriteFile(path, []byte("{\"n\":1}\n{\"n\":2"), 0o600))
	fs, err := export.NewFileSink(export.FileOptions{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	must(t, fs.Deliver(context.Background(), []export.Item{{Seq: 2, JSON: []byte(`{"n":2}`)}}))
	fs.Close()
	if got := string(readAll(t, path)); got != "{\"n\":1}\n{\"n\":2}\n" {
		t.Errorf("file: %q", got)
	}
}

// After a kill -9 the cursor is behind what the file holds (records
// written and synced, the cursor not moved yet): the restarted sink
// writes those records only once. The batch in flight straddles a
// rotation, and its last line was cut by the crash: that one record is
// written again, the others are not.
func TestFileSinkResumesWithoutRepeats(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ward.jsonl")
	item := func(i int) export.Item {
		return export.Item{Seq: int64(i), ID: fmt.Sprintf("ev-%03d", i),
			JSON: fmt.Appendf(nil, `{"metadata":{"uid":"ev-%03d","sequence":%d},"pad":"%0100d"}`, i, i, 0)}
	}
	items := func(from, to int) []export.Item {
		var out []export.Item
		for i := from; i <= to; i++ {
			out = append(out, item(i))
		}
		return out
	}
	opts := export.FileOptions{Path: path, MaxBytes: 1500} // about ten records a file
	fs, err := export.NewFileSink(opts)
	must(t, err)
	must(t, fs.Deliver(context.Background(), items(1, 20)))  // the cursor moved to 20
	must(t, fs.Deliver(context.Background(), items(21, 32))) // the process dies before the cursor moves
	fs.Close()
	// The crash cut record 32's line.
	b := readAll(t, path)
	must(t, os.WriteFile(path, b[:len(b)-20], 0o600))

	fs, err = export.NewFileSink(opts)
	must(t, err)
	defer fs.Close()
	must(t, fs.Warm(context.Background(), 20))
	// The exporter sends everything after its cursor again, in batches.
	must(t, fs.Deliver(context.Background(), items(21, 26)))
	must(t, fs.Deliver(context.Background(), items(27, 40)))

	var got []string
	for _, p := range append(export.RotatedFiles(path), path) {
		for _, l := range readLines(t, p) {
			var r struct {
				Metadata struct{ UID string } `json:"metadata"`
			}
			if err := json.Unmarshal(l, &r); err != nil {
				t.Fatalf("%s: %q: %v", p, l, err)
			}
			got = append(got, r.Metadata.UID)
		}
	}
	var want []string
	for i := 1; i <= 40; i++ {
		want = append(want, fmt.Sprintf("ev-%03d", i))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("records in the files:\n%v\nwant each once, in order:\n%v", got, want)
	}
	if len(export.RotatedFiles(path)) < 2 {
		t.Errorf("no rotation in the batch in flight: the test does not cover it")
	}
}

func readAll(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// webhookServer is a real HTTPS receiver that checks the signature,
// fails while down is set, and keeps what it accepted.
type webhookServer struct {
	*httptest.Server
	secret   []byte
	down     atomic.Bool
	status   atomic.Int32 // answer while down
	mu       sync.Mutex
	got      [][]byte
	requests atomic.Int64
	badSig   atomic.Int64
	refuse   string // a record containing this is answered 422 (when alone or not)
}

func newWebhookServer(t testing.TB, secret []byte) *webhookServer {
	w := &webhookServer{secret: secret}
	w.status.Store(http.StatusServiceUnavailable)
	w.Server = httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.requests.Add(1)
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, w.secret)
		mac.Write(body)
		if r.Header.Get("Ward-Signature") != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
			w.badSig.Add(1)
			rw.WriteHeader(http.StatusUnauthorized)
			return
		}
		if w.down.Load() {
			rw.WriteHeader(int(w.status.Load()))
			return
		}
		if r.Header.Get("Content-Type") != "application/x-ndjson" {
			rw.WriteHeader(http.StatusUnsupportedMediaType)
			return
		}
		lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
		if w.refuse != "" && strings.Contains(string(body), w.refuse) {
			rw.WriteHeader(http.StatusUnprocessableEntity)
			return
		}
		w.mu.Lock()
		for _, l := range lines {
			w.got = append(w.got, []byte(l))
		}
		w.mu.Unlock()
		rw.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(w.Close)
	return w
}

func (w *webhookServer) records() [][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([][]byte(nil), w.got...)
}

// caFile writes the test server's certificate as a CA file: the sink
// verifies TLS with it, as an operator's custom CA.
func caFile(t testing.TB, cert *x509.Certificate) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	must(t, os.WriteFile(p, pemCert(cert), 0o600))
	return p
}

// The webhook sink against a real HTTPS server that fails for a while and
// recovers: nothing lost, in order, once per event id; batches are
// signed; TLS is verified.
func TestWebhookOutageAndRecovery(t *testing.T) {
	st := openStore(t)
	secret := []byte("a shared secret of thirty-two by")
	srv := newWebhookServer(t, secret)
	srv.down.Store(true)
	want := appendEvents(t, st, 300)
	wh, err := export.NewWebhookSink(export.WebhookOptions{URL: srv.URL + "/ingest", Secret: secret,
		CAFile: caFile(t, srv.Certificate())})
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, st, "i1", export.SinkConfig{Name: "hook", Sink: wh, Batch: export.Batching{MaxEvents: 64, MaxWait: 100 * time.Millisecond},
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	defer e.Close()
	// Down: requests fail and are retried, nothing advances.
	deadline := time.Now().Add(10 * time.Second)
	for srv.requests.Load() < 5 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if srv.requests.Load() < 5 {
		t.Fatalf("only %d requests while down: no retries", srv.requests.Load())
	}
	if s := e.Stats("hook"); s.Delivered != 0 || s.Failures == 0 {
		t.Fatalf("while down: %+v", s)
	}
	// More events during the outage, then recovery.
	want = append(want, appendEventsFrom(t, st, 300, 200)...)
	srv.status.Store(http.StatusTooManyRequests)
	time.Sleep(100 * time.Millisecond)
	srv.down.Store(false)
	waitCursor(t, st, "hook", 500, 20*time.Second)
	recs := srv.records()
	sameIDs(t, ids(t, recs), want)
	validate(t, recs)
	if srv.badSig.Load() != 0 {
		t.Errorf("%d requests with a bad signature", srv.badSig.Load())
	}
}

func appendEventsFrom(t *testing.T, st store.Store, from, n int) []string {
	t.Helper()
	out := make([]string, n)
	for i := range n {
		id := fmt.Sprintf("ev-%06d", from+i)
		if _, err := st.AppendEvent(context.Background(), &model.Event{ID: id, Type: model.EventSignInSucceeded, Time: time.Now(),
			UserID: "u1", Actor: "u1", Outcome: model.OutcomeSuccess}); err != nil {
			t.Fatal(err)
		}
		out[i] = id
	}
	return out
}

// TLS verification is on: a server whose certificate no configured CA
// signed gets nothing.
func TestWebhookVerifiesTLS(t *testing.T) {
	srv := newWebhookServer(t, []byte("k"))
	wh, err := export.NewWebhookSink(export.WebhookOptions{URL: srv.URL, Secret: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	err = wh.Deliver(context.Background(), []export.Item{{Seq: 1, ID: "x", JSON: []byte(`{}`)}})
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("unverified server: %v", err)
	}
	if srv.requests.Load() != 0 {
		t.Fatal("a request reached an unverified server")
	}
	if _, err := export.NewWebhookSink(export.WebhookOptions{URL: strings.Replace(srv.URL, "https", "http", 1), Secret: []byte("k")}); err == nil {
		t.Fatal("plain http accepted")
	}
}

// A record the receiver refuses (422) is isolated by halving the batch,
// logged and skipped; every other record is delivered, in order.
func TestWebhookSkipsRefusedRecord(t *testing.T) {
	st := openStore(t)
	secret := []byte("k")
	srv := newWebhookServer(t, secret)
	srv.refuse = `"uid":"ev-000037"`
	want := appendEvents(t, st, 100)
	wh, _ := export.NewWebhookSink(export.WebhookOptions{URL: srv.URL, Secret: secret, CAFile: caFile(t, srv.Certificate())})
	e := start(t, st, "i1", export.SinkConfig{Name: "hook", Sink: wh, Batch: export.Batching{MaxEvents: 100}})
	defer e.Close()
	waitCursor(t, st, "hook", 100, 10*time.Second)
	sameIDs(t, ids(t, srv.records()), append(append([]string(nil), want[:37]...), want[38:]...))
}

// syslogListener is a real TLS syslog receiver that parses RFC 5425
// frames (octet counting) and RFC 5424 headers.
type syslogListener struct {
	ln   net.Listener
	mu   sync.Mutex
	msgs []syslogMsg
	// dropAfter closes the connection (with data unread, a reset) after
	// this many messages on it, once.
	dropAfter atomic.Int64
	// dropIdle closes the next connection after this long without
	// reading anything from it (a reset: what was written is lost), once.
	dropIdle atomic.Int64 // nanoseconds
	conns    atomic.Int64
}

type syslogMsg struct {
	pri, version, ts, host, app, procid, msgid, sd, msg string
}

func newSyslogListener(t *testing.T) (*syslogListener, *tls.Config) {
	srv := httptest.NewUnstartedServer(nil) // for its certificate only
	srv.StartTLS()
	cert := srv.TLS.Certificates[0]
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	srv.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	l := &syslogListener{ln: ln}
	go l.serve(t)
	t.Cleanup(func() { ln.Close() })
	return l, &tls.Config{RootCAs: pool, ServerName: "example.com"}
}

func (l *syslogListener) serve(t *testing.T) {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.conns.Add(1)
		go l.handle(t, c)
	}
}

func (l *syslogListener) handle(t *testing.T, c net.Conn) {
	defer c.Close()
	if d := l.dropIdle.Swap(0); d > 0 {
		if tc, ok := c.(*tls.Conn); ok {
			_ = tc.Handshake() // the client connects, then writes unread
		}
		time.Sleep(time.Duration(d))
		return
	}
	r := bufio.NewReader(c)
	n := int64(0)
	for {
		lenStr, err := r.ReadString(' ')
		if err != nil {
			return
		}
		size, err := strconv.Atoi(strings.TrimSuffix(lenStr, " "))
		if err != nil || size <= 0 || size > 1<<20 {
			t.Errorf("bad RFC 5425 frame length %q", lenStr)
			return
		}
		buf := make([]byte, size)
		if _, err := io.ReadFull(r, buf); err != nil {
			return
		}
		m, err := parse5424(string(buf))
		if err != nil {
			t.Errorf("%v: %q", err, buf)
			return
		}
		n++
		if d := l.dropAfter.Load(); d > 0 && n == d {
			l.dropAfter.Store(0)
			// Close without reading the rest: the kernel resets the
			// connection and what was in flight is lost.
			return
		}
		l.mu.Lock()
		l.msgs = append(l.msgs, m)
		l.mu.Unlock()
	}
}

func parse5424(s string) (syslogMsg, error) {
	var m syslogMsg
	if !strings.HasPrefix(s, "<") {
		return m, fmt.Errorf("no PRI")
	}
	end := strings.IndexByte(s, '>')
	m.pri = s[1:end]
	f := strings.SplitN(s[end+1:], " ", 7)
	if len(f) != 7 {
		return m, fmt.Errorf("short header")
	}
	m.version, m.ts, m.host, m.app, m.procid, m.msgid = f[0], f[1], f[2], f[3], f[4], f[5]
	rest := f[6]
	if !strings.HasPrefix(rest, "[") {
		return m, fmt.Errorf("no structured data")
	}
	// The SD element ends at the first unescaped "]".
	i := 1
	for ; i < len(rest); i++ {
		if rest[i] == '\\' {
			i++
			continue
		}
		if rest[i] == ']' {
			break
		}
	}
	m.sd, m.msg = rest[:i+1], strings.TrimPrefix(rest[i+1:], " ")
	if _, err := time.Parse(time.RFC3339Nano, m.ts); err != nil {
		return m, fmt.Errorf("timestamp: %v", err)
	}
	return m, nil
}

func (l *syslogListener) messages() []syslogMsg {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]syslogMsg(nil), l.msgs...)
}

// The syslog sink against a real TLS listener: RFC 5425 frames, RFC 5424
// headers with the event code as MSGID and in structured data, the OCSF
// record as MSG; a receiver that drops the connection with data unread
// gets the lost batch again on the next connection.
func TestSyslogSink(t *testing.T) {
	st := openStore(t)
	l, tc := newSyslogListener(t)
	l.dropAfter.Store(150)
	want := appendEvents(t, st, 400)
	sl, err := export.NewSyslogSink(export.SyslogOptions{Address: l.ln.Addr().String(), TLSConfig: tc, Hostname: "idp-1"})
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, st, "i1", export.SinkConfig{Name: "syslog", Sink: sl, Batch: export.Batching{MaxEvents: 100},
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	waitCursor(t, st, "syslog", 400, 20*time.Second)
	e.Close()
	deadline := time.Now().Add(5 * time.Second)
	var msgs []syslogMsg
	// Wait for 400 distinct records: resent batches arrive twice, so the
	// count of messages can reach 400 while the listener is still reading.
	for time.Now().Before(deadline) {
		msgs = l.messages()
		distinct := map[string]bool{}
		for _, id := range ids(t, recsOf(msgs)) {
			distinct[id] = true
		}
		if len(distinct) >= 400 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if l.conns.Load() < 2 {
		t.Fatalf("%d connections: the drop was not noticed", l.conns.Load())
	}
	// Every event at least once, in order once repeats are removed; a
	// repeat only of the batch that was in flight.
	got := ids(t, recsOf(msgs))
	var dedup []string
	seen := map[string]bool{}
	for _, id := range got {
		if !seen[id] {
			seen[id] = true
			dedup = append(dedup, id)
		}
	}
	sameIDs(t, dedup, want)
	if len(got)-len(dedup) >= len(want) {
		t.Errorf("%d repeats: more than what was in flight", len(got)-len(dedup))
	}
	validate(t, recsOf(msgs))
	m := msgs[0]
	code := audit.Code(audit.EventTypes()[0])
	if m.version != "1" || m.host != "idp-1" || m.app != "ward" || m.msgid != code || m.pri != strconv.Itoa(10*8+6) {
		t.Errorf("header: %+v", m)
	}
	if !strings.HasPrefix(m.sd, `[ward@32473 code="`+code+`" id="ev-000000" seq="1"]`) {
		t.Errorf("structured data: %s", m.sd)
	}
}

func recsOf(ms []syslogMsg) [][]byte {
	out := make([][]byte, len(ms))
	for i, m := range ms {
		out[i] = []byte(m.msg)
	}
	return out
}

// Two instances with the same sink: one exports at a time (the lease);
// the other takes over when the first stops, from where it stopped.
func TestLeaseHandover(t *testing.T) {
	st := openStore(t)
	want := appendEvents(t, st, 200)
	path := filepath.Join(t.TempDir(), "ward.jsonl")
	fs1, _ := export.NewFileSink(export.FileOptions{Path: path})
	e1 := start(t, st, "i1", export.SinkConfig{Name: "file", Sink: fs1})
	waitCursor(t, st, "file", 200, 10*time.Second)
	fs2, _ := export.NewFileSink(export.FileOptions{Path: path + ".2"})
	e2 := start(t, st, "i2", export.SinkConfig{Name: "file", Sink: fs2})
	defer e2.Close()
	want = append(want, appendEventsFrom(t, st, 200, 50)...)
	waitCursor(t, st, "file", 250, 10*time.Second)
	if s := e2.Stats("file"); s.Holding || s.Delivered != 0 {
		t.Fatalf("second instance exported while the first held the lease: %+v", s)
	}
	e1.Close() // releases the lease
	want2 := appendEventsFrom(t, st, 250, 50)
	waitCursor(t, st, "file", 300, 10*time.Second)
	sameIDs(t, ids(t, readLines(t, path)), want)
	sameIDs(t, ids(t, readLines(t, path+".2")), want2)
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// TestSyslogResendsWithoutMoreRecords: a receiver that drops the
// connection with a batch unread gets it again on a new connection even
// when no later records come to notice the break (a quiet period after a
// receiver restart used to lose that batch once ResendWindow had passed).
func TestSyslogResendsWithoutMoreRecords(t *testing.T) {
	l, tc := newSyslogListener(t)
	// The first connection is closed unread once the batch is written
	// (the write itself succeeds: it fits in the socket buffers).
	l.dropIdle.Store(int64(200 * time.Millisecond))
	sl, err := export.NewSyslogSink(export.SyslogOptions{Address: l.ln.Addr().String(), TLSConfig: tc, ResendWindow: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer sl.Close()
	var items []export.Item
	for i := range 50 {
		items = append(items, export.Item{Seq: int64(i + 1), ID: fmt.Sprintf("ev-%03d", i), Code: "W1000I", Time: time.Now(), JSON: []byte(`{}`)})
	}
	if err := sl.Deliver(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	distinct := func() int {
		seen := map[string]bool{}
		for _, m := range l.messages() {
			seen[m.sd] = true
		}
		return len(seen)
	}
	deadline := time.Now().Add(10 * time.Second)
	for distinct() < 50 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 50 records after %d connections: the broken connection's batch was not written again", distinct(), l.conns.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if l.conns.Load() != 2 {
		t.Errorf("%d connections, want 2", l.conns.Load())
	}
	// Once the new connection has stayed up ResendWindow, the batch counts
	// as read: nothing more is written.
	time.Sleep(time.Second)
	if n := len(l.messages()); n > 50+50 {
		t.Errorf("%d messages: the batch was written again more than once", n)
	}
}
