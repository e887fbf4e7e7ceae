package crash

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ward-idp/ward/internal/audit/ocsf/ocsftest"
)

// siemRecord is one OCSF record as a SIEM received it.
type siemRecord struct {
	UID   string // metadata.uid: Ward's event id
	Seq   int64  // metadata.sequence
	Class int    // class_uid
	Code  string // metadata.event_code
	Sev   int    // severity_id
	PRI   int    // syslog only: the message's PRI
	Raw   []byte
}

func parseRecord(line []byte) (siemRecord, error) {
	var r struct {
		ClassUID   int `json:"class_uid"`
		SeverityID int `json:"severity_id"`
		Metadata   struct {
			UID       string `json:"uid"`
			Sequence  int64  `json:"sequence"`
			EventCode string `json:"event_code"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return siemRecord{}, err
	}
	if r.Metadata.UID == "" || r.Metadata.Sequence <= 0 || r.ClassUID == 0 {
		return siemRecord{}, errors.New("not an OCSF record of Ward's (no metadata.uid, metadata.sequence or class_uid)")
	}
	return siemRecord{UID: r.Metadata.UID, Seq: r.Metadata.Sequence, Class: r.ClassUID, Code: r.Metadata.EventCode,
		Sev: r.SeverityID, Raw: append([]byte(nil), line...)}, nil
}

// webhookReceiver is the SIEM's HTTPS endpoint: it checks the
// HMAC-SHA256 signature of each batch (constant time) and the batch
// headers, and keeps the records of the batches it accepted, in arrival
// order. It answers 200 only after it has stored a batch.
type webhookReceiver struct {
	*httptest.Server
	secret []byte

	mu      sync.Mutex
	recs    []siemRecord
	bad     []string // refused requests, why
	batches atomic.Int64
}

func newWebhookReceiver(t *testing.T, secret []byte) *webhookReceiver {
	wr := &webhookReceiver{secret: secret}
	wr.Server = httptest.NewTLSServer(http.HandlerFunc(wr.serve))
	t.Cleanup(wr.Close)
	return wr
}

func (wr *webhookReceiver) refuse(w http.ResponseWriter, status int, format string, a ...any) {
	wr.mu.Lock()
	wr.bad = append(wr.bad, fmt.Sprintf(format, a...))
	wr.mu.Unlock()
	w.WriteHeader(status)
}

func (wr *webhookReceiver) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		// A sender killed in the middle of the request: nothing stored.
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	mac := hmac.New(sha256.New, wr.secret)
	mac.Write(body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	if r.Method != http.MethodPost || !hmac.Equal([]byte(r.Header.Get("Ward-Signature")), []byte(want)) {
		wr.refuse(w, http.StatusUnauthorized, "%s with a bad signature", r.Method)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		wr.refuse(w, http.StatusUnsupportedMediaType, "content type %q", ct)
		return
	}
	var batch []siemRecord
	for _, line := range bytes.Split(bytes.TrimSuffix(body, []byte("\n")), []byte("\n")) {
		rec, err := parseRecord(line)
		if err != nil {
			wr.refuse(w, http.StatusBadRequest, "record: %v: %.200s", err, line)
			return
		}
		batch = append(batch, rec)
	}
	first, _ := strconv.ParseInt(r.Header.Get("Ward-Batch-First-Seq"), 10, 64)
	last, _ := strconv.ParseInt(r.Header.Get("Ward-Batch-Last-Seq"), 10, 64)
	if len(batch) == 0 || first != batch[0].Seq || last != batch[len(batch)-1].Seq {
		wr.refuse(w, http.StatusBadRequest, "batch headers first %d last %d do not match its %d records", first, last, len(batch))
		return
	}
	wr.mu.Lock()
	wr.recs = append(wr.recs, batch...)
	wr.mu.Unlock()
	wr.batches.Add(1)
	w.WriteHeader(http.StatusOK)
}

func (wr *webhookReceiver) records() []siemRecord {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return append([]siemRecord(nil), wr.recs...)
}

func (wr *webhookReceiver) problems() []string {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return append([]string(nil), wr.bad...)
}

// syslogReceiver is the SIEM's syslog-over-TLS input: RFC 5425 frames
// (octet counting), each an RFC 5424 message whose structured data
// repeats the event's id and sequence number and whose MSG is the OCSF
// record. A frame cut off by the sender's death is not a message.
type syslogReceiver struct {
	ln net.Listener

	mu   sync.Mutex
	recs []siemRecord
	bad  []string
}

func newSyslogReceiver(t *testing.T, cert tls.Certificate) *syslogReceiver {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	sr := &syslogReceiver{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go sr.handle(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return sr
}

func (sr *syslogReceiver) problem(format string, a ...any) {
	sr.mu.Lock()
	sr.bad = append(sr.bad, fmt.Sprintf(format, a...))
	sr.mu.Unlock()
}

func (sr *syslogReceiver) handle(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		n, err := r.ReadString(' ')
		if err != nil {
			return
		}
		size, err := strconv.Atoi(strings.TrimSuffix(n, " "))
		if err != nil || size <= 0 || size > 1<<20 || n[0] == '0' {
			sr.problem("bad RFC 5425 frame length %q", n)
			return
		}
		frame := make([]byte, size)
		if _, err := io.ReadFull(r, frame); err != nil {
			return // cut off: the sender died while writing it
		}
		rec, err := parse5424(frame)
		if err != nil {
			sr.problem("%v: %.200s", err, frame)
			return
		}
		sr.mu.Lock()
		sr.recs = append(sr.recs, rec)
		sr.mu.Unlock()
	}
}

// parse5424 parses `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID
// [SD-ID param="value"…] MSG` and checks that the structured data and
// the OCSF record agree.
func parse5424(frame []byte) (siemRecord, error) {
	s := string(frame)
	end := strings.IndexByte(s, '>')
	if !strings.HasPrefix(s, "<") || end < 2 || end > 4 {
		return siemRecord{}, errors.New("no PRI")
	}
	pri, err := strconv.Atoi(s[1:end])
	if err != nil || pri < 0 || pri > 191 {
		return siemRecord{}, fmt.Errorf("PRI %q", s[1:end])
	}
	f := strings.SplitN(s[end+1:], " ", 7)
	if len(f) != 7 || f[0] != "1" {
		return siemRecord{}, errors.New("not an RFC 5424 header (VERSION 1 and six fields)")
	}
	if f[2] != "ward-chain" || f[3] != "ward" {
		return siemRecord{}, fmt.Errorf("HOSTNAME %q APP-NAME %q", f[2], f[3])
	}
	msgID, rest := f[5], f[6]
	if !strings.HasPrefix(rest, "[ward@32473 ") {
		return siemRecord{}, errors.New("no ward@32473 structured data element")
	}
	params := map[string]string{}
	i := len("[ward@32473 ")
	for i < len(rest) && rest[i] != ']' {
		eq := strings.Index(rest[i:], `="`)
		if eq < 0 {
			return siemRecord{}, errors.New("bad SD-PARAM")
		}
		name := strings.TrimSpace(rest[i : i+eq])
		i += eq + 2
		var v strings.Builder
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
			}
			v.WriteByte(rest[i])
		}
		if i >= len(rest) {
			return siemRecord{}, errors.New("unterminated SD-PARAM")
		}
		params[name] = v.String()
		i++ // the closing quote
		for i < len(rest) && rest[i] == ' ' {
			i++
		}
	}
	if i >= len(rest) {
		return siemRecord{}, errors.New("unterminated structured data")
	}
	msg := strings.TrimPrefix(rest[i+1:], " ")
	rec, err := parseRecord([]byte(msg))
	if err != nil {
		return siemRecord{}, fmt.Errorf("MSG: %v", err)
	}
	// authpriv (10) and the syslog severity of the record's.
	if want := 10*8 + map[int]int{0: 6, 1: 6, 2: 5, 3: 4, 4: 3, 5: 2, 6: 0}[rec.Sev]; pri != want {
		return siemRecord{}, fmt.Errorf("PRI %d for severity_id %d, want %d", pri, rec.Sev, want)
	}
	rec.PRI = pri
	if params["id"] != rec.UID || params["seq"] != strconv.FormatInt(rec.Seq, 10) || params["code"] != rec.Code || msgID != rec.Code {
		return siemRecord{}, fmt.Errorf("structured data %v and MSGID %q do not match the record (%s, seq %d, %s)", params, msgID, rec.UID, rec.Seq, rec.Code)
	}
	return rec, nil
}

func (sr *syslogReceiver) records() []siemRecord {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	return append([]siemRecord(nil), sr.recs...)
}

func (sr *syslogReceiver) problems() []string {
	sr.mu.Lock()
	defer sr.mu.Unlock()
	return append([]string(nil), sr.bad...)
}

// fileRecords reads the file sink: the rotated files, oldest first (their
// names carry the rotation time), then the active one.
func fileRecords(t *testing.T, dir, base string) []siemRecord {
	t.Helper()
	ext := filepath.Ext(base)
	stem := strings.TrimSuffix(base, ext)
	rotated, _ := filepath.Glob(filepath.Join(dir, stem+"-*"+ext))
	sort.Strings(rotated)
	var out []siemRecord
	for _, f := range append(rotated, filepath.Join(dir, base)) {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			rec, err := parseRecord(line)
			if err != nil {
				t.Fatalf("file sink %s: %v: %.200s", filepath.Base(f), err, line)
			}
			out = append(out, rec)
		}
	}
	return out
}

// writeCA writes the test servers' certificate as the CA file the sinks
// verify TLS with.
func writeCA(t *testing.T, dir string, srv *httptest.Server) string {
	t.Helper()
	p := filepath.Join(dir, "siem-ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	schemaOnce sync.Once
	schema     *ocsftest.Schema
	schemaErr  error
)

// validateRecords checks records against the vendored OCSF 1.8.0 schema
// (each distinct record once).
func validateRecords(t *testing.T, sink string, recs []siemRecord) {
	t.Helper()
	schemaOnce.Do(func() { schema, schemaErr = ocsftest.Load(ocsftest.Dir()) })
	if schemaErr != nil {
		t.Fatal(schemaErr)
	}
	seen := map[string]bool{}
	bad := 0
	for _, r := range recs {
		if seen[r.UID] {
			continue
		}
		seen[r.UID] = true
		if err := schema.Validate(r.Raw); err != nil {
			if bad++; bad <= 5 {
				t.Errorf("%s: record %s (%s, seq %d) does not validate against OCSF %s: %v", sink, r.UID, r.Code, r.Seq, schema.Version, err)
			}
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d records do not validate", sink, bad)
	}
}
