package export

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Syslog facilities by name (RFC 5424 §6.2.1).
var Facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8,
	"cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13, "alert": 14, "clock": 15,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// DefaultSDID is the SD-ID of Ward's structured data element. 32473 is
// the private enterprise number RFC 5612 reserves for documentation;
// set SyslogOptions.SDID to one under an enterprise number of your own
// where that matters.
const DefaultSDID = "ward@32473"

// SyslogOptions configure a syslog-over-TLS sink.
type SyslogOptions struct {
	Address    string // host:port (6514 is the registered port)
	CAFile     string // added to the system's roots
	ServerName string // checked in the certificate (default: Address's host)
	Facility   int    // default authpriv (10)
	Hostname   string // HOSTNAME (default os.Hostname)
	AppName    string // APP-NAME (default ward)
	SDID       string // default DefaultSDID
	Timeout    time.Duration
	// ResendWindow: a batch counts as read once the connection it was
	// written to has stayed up this long after; until then it is written
	// again on a new connection if that one breaks (default 10s).
	ResendWindow time.Duration
	// TLSConfig replaces the one built from CAFile and ServerName (tests).
	TLSConfig *tls.Config
}

// SyslogSink writes RFC 5424 messages over TLS with RFC 5425 framing
// (octet counting: "LEN SP MSG"). Each message is
//
//	<PRI>1 TIMESTAMP HOSTNAME ward PROCID CODE [ward@32473 code="W2005E" type="…" id="…" seq="…"] OCSF-JSON
//
// PRI from the facility and the record's severity, MSGID the event code,
// MSG the OCSF record: ASCII JSON, so it is sent without a BOM (RFC 5424
// MSG-ANY) and receivers parse it as JSON as it is.
//
// Syslog has no acknowledgement: a batch counts as delivered when it is
// written to the connection. Each batch is kept until the connection has
// stayed up ResendWindow after it; a connection that breaks before (seen
// before the next write, or by a check every ResendWindow/10 while
// batches are kept, whether or not more records come) has its kept
// batches written again on a new one, as soon as one can be made (the
// receiver may get them twice). That covers a receiver that went away
// with them unread in its buffers. Use the webhook sink where every
// record must be acknowledged.
type SyslogSink struct {
	o      SyslogOptions
	tc     *tls.Config
	procID string

	mu       sync.Mutex
	conn     net.Conn
	w        *bufio.Writer
	recent   []sentBatch // not yet ResendWindow old on a live connection
	msg      bytes.Buffer
	watching bool // watch runs
	closed   bool
}

type sentBatch struct {
	at    time.Time // last written
	first time.Time // first written
	items []Item
}

// keepFactor bounds how long a batch is kept for writing again:
// keepFactor × ResendWindow after it was first written (a minute by
// default), so that a receiver that breaks every connection sooner than
// ResendWindow does not make the sink hold, and write again, ever more.
const keepFactor = 6

// NewSyslogSink checks o; it connects on the first delivery.
func NewSyslogSink(o SyslogOptions) (*SyslogSink, error) {
	host, _, err := net.SplitHostPort(o.Address)
	if err != nil {
		return nil, fmt.Errorf("export: syslog: address %q: %w", o.Address, err)
	}
	if o.Facility == 0 {
		o.Facility = Facilities["authpriv"]
	}
	if o.Hostname == "" {
		o.Hostname, _ = os.Hostname()
	}
	o.Hostname = header(o.Hostname, 255)
	o.AppName = header(o.AppName, 48)
	if o.AppName == "-" {
		o.AppName = "ward"
	}
	if o.SDID == "" {
		o.SDID = DefaultSDID
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.ResendWindow <= 0 {
		o.ResendWindow = 10 * time.Second
	}
	tc := o.TLSConfig
	if tc == nil {
		sn := o.ServerName
		if sn == "" {
			sn = host
		}
		if tc, err = tlsClientConfig(o.CAFile, sn); err != nil {
			return nil, fmt.Errorf("export: syslog: %w", err)
		}
	}
	return &SyslogSink{o: o, tc: tc, procID: strconv.Itoa(os.Getpid())}, nil
}

// header makes s a valid RFC 5424 header field: printable US-ASCII
// without spaces, at most n octets, "-" when empty.
func header(s string, n int) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s) && len(b) < n; i++ {
		if c := s[i]; c > 32 && c < 127 {
			b = append(b, c)
		}
	}
	if len(b) == 0 {
		return "-"
	}
	return string(b)
}

// Deliver implements Sink.
func (s *SyslogSink) Deliver(ctx context.Context, items []Item) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("syslog: sink closed")
	}
	now := time.Now()
	s.expire(now)
	if s.conn != nil && !s.alive() {
		s.drop()
	}
	if s.conn == nil {
		if err := s.reconnect(ctx, now); err != nil {
			return err
		}
	} else {
		s.trim(now) // the connection is up: older batches were read
	}
	if err := s.write(items); err != nil {
		// items come again with the retry, after the recent batches.
		s.drop()
		return err
	}
	s.recent = append(s.recent, sentBatch{at: now, first: now, items: items})
	if !s.watching {
		s.watching = true
		go s.watch()
	}
	return nil
}

// reconnect makes a new connection and writes the kept batches on it:
// the previous connection broke, and what it was given recently may not
// have been read. (A receiver's close tells nothing: a TLS close_notify
// comes before unread data is discarded.)
func (s *SyslogSink) reconnect(ctx context.Context, now time.Time) error {
	if err := s.connect(ctx); err != nil {
		return err
	}
	for i := range s.recent {
		if err := s.write(s.recent[i].items); err != nil {
			s.drop()
			return err
		}
		s.recent[i].at = now
	}
	return nil
}

// watch checks the connection every ResendWindow/10 while batches are
// kept: a connection that broke after the last write has its batches
// written again at once, not only when (if) the next records come.
func (s *SyslogSink) watch() {
	tick := max(s.o.ResendWindow/10, 10*time.Millisecond)
	for {
		time.Sleep(tick)
		s.mu.Lock()
		if s.closed {
			s.watching = false
			s.mu.Unlock()
			return
		}
		now := time.Now()
		s.expire(now)
		if s.conn != nil && s.alive() {
			s.trim(now)
		} else {
			s.drop()
			ctx, cancel := context.WithTimeout(context.Background(), s.o.Timeout)
			_ = s.reconnect(ctx, now) // else: again at the next tick, or by Deliver
			cancel()
		}
		if len(s.recent) == 0 {
			s.watching = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
}

// trim forgets batches written longer ago than ResendWindow (the
// connection has been up since: they were read). Batches are in order of
// their last write.
func (s *SyslogSink) trim(now time.Time) {
	i := 0
	for i < len(s.recent) && now.Sub(s.recent[i].at) > s.o.ResendWindow {
		i++
	}
	s.recent = s.recent[i:]
}

// expire forgets batches first written longer ago than keepFactor ×
// ResendWindow, read or not.
func (s *SyslogSink) expire(now time.Time) {
	s.recent = slices.DeleteFunc(s.recent, func(b sentBatch) bool {
		return now.Sub(b.first) > keepFactor*s.o.ResendWindow
	})
}

func (s *SyslogSink) connect(ctx context.Context) error {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: s.o.Timeout, KeepAlive: 30 * time.Second}, Config: s.tc}
	c, err := d.DialContext(ctx, "tcp", s.o.Address)
	if err != nil {
		return fmt.Errorf("syslog: %w", err)
	}
	s.conn, s.w = c, bufio.NewWriterSize(c, 64<<10)
	return nil
}

// alive reports whether the receiver still has the connection open: it
// sends nothing, so a read must time out.
func (s *SyslogSink) alive() bool {
	_ = s.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	var b [1]byte
	_, err := s.conn.Read(b[:])
	_ = s.conn.SetReadDeadline(time.Time{})
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (s *SyslogSink) drop() {
	if s.conn != nil {
		s.conn.Close()
	}
	s.conn, s.w = nil, nil
}

func (s *SyslogSink) write(items []Item) error {
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.o.Timeout))
	for _, it := range items {
		s.format(it)
		s.w.WriteString(strconv.Itoa(s.msg.Len()))
		s.w.WriteByte(' ')
		s.w.Write(s.msg.Bytes())
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("syslog: %w", err)
	}
	return nil
}

// severities maps OCSF severity_id to syslog severities.
var severities = map[int]int{0: 6, 1: 6, 2: 5, 3: 4, 4: 3, 5: 2, 6: 0}

func (s *SyslogSink) format(it Item) {
	m := &s.msg
	m.Reset()
	sev, ok := severities[it.Severity]
	if !ok {
		sev = 6
	}
	m.WriteByte('<')
	m.WriteString(strconv.Itoa(s.o.Facility*8 + sev))
	m.WriteString(">1 ")
	m.WriteString(it.Time.UTC().Format("2006-01-02T15:04:05.000000Z"))
	m.WriteByte(' ')
	m.WriteString(s.o.Hostname)
	m.WriteByte(' ')
	m.WriteString(s.o.AppName)
	m.WriteByte(' ')
	m.WriteString(s.procID)
	m.WriteByte(' ')
	m.WriteString(header(it.Code, 32))
	m.WriteString(" [")
	m.WriteString(s.o.SDID)
	sdParam(m, "code", it.Code)
	sdParam(m, "id", it.ID)
	sdParam(m, "seq", strconv.FormatInt(it.Seq, 10))
	m.WriteString("] ")
	m.Write(it.JSON)
}

// sdParam writes ` name="value"` with the escapes of RFC 5424 §6.3.3.
func sdParam(m *bytes.Buffer, name, value string) {
	m.WriteByte(' ')
	m.WriteString(name)
	m.WriteString(`="`)
	m.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`, `]`, `\]`).Replace(value))
	m.WriteByte('"')
}

// Close implements Sink.
func (s *SyslogSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.drop()
	return nil
}
