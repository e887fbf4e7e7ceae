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
	// ResendWindow: the batches written this recently are written again
	// on a new connection after the previous one broke (default 10s).
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
// written to the connection. A closed connection is noticed before the
// next write, and the batches written in the ResendWindow before it
// broke are written again on the new one (the receiver may get them
// twice), which covers a receiver that went away with them unread in its
// buffers. Use the webhook sink where every record must be acknowledged.
type SyslogSink struct {
	o      SyslogOptions
	tc     *tls.Config
	procID string

	mu     sync.Mutex
	conn   net.Conn
	w      *bufio.Writer
	recent []sentBatch // written within ResendWindow
	msg    bytes.Buffer
}

type sentBatch struct {
	at    time.Time
	items []Item
}

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
	now := time.Now()
	if s.conn != nil && !s.alive() {
		s.drop()
	}
	if s.conn == nil {
		if err := s.connect(ctx); err != nil {
			return err
		}
		// The previous connection broke: what it was given recently may
		// not have been read. (A receiver's close tells nothing: a TLS
		// close_notify comes before unread data is discarded.)
		s.trim(now)
		for _, b := range s.recent {
			if err := s.write(b.items); err != nil {
				s.drop()
				return err
			}
		}
	}
	if err := s.write(items); err != nil {
		// items come again with the retry, after the recent batches.
		s.drop()
		return err
	}
	s.recent = append(s.recent, sentBatch{at: now, items: items})
	s.trim(now)
	return nil
}

// trim forgets batches written longer ago than ResendWindow.
func (s *SyslogSink) trim(now time.Time) {
	i := 0
	for i < len(s.recent) && now.Sub(s.recent[i].at) > s.o.ResendWindow {
		i++
	}
	s.recent = s.recent[i:]
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
	s.drop()
	return nil
}
