package activity

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits of one line. They bound what a hostile file can make a reader
// hold; Ward's own export never comes near them.
const (
	MaxLine    = 16 << 10 // bytes, newline excluded
	MaxField   = 1024     // bytes of any one string field
	maxCount   = 1 << 30
	maxGen     = 1 << 30
	countryLen = 2
)

// line is the wire form: the documented field names, empty ones left out.
type line struct {
	T                   string   `json:"t"`
	ID                  string   `json:"id"`
	Kind                Kind     `json:"kind"`
	User                string   `json:"user,omitempty"`
	SessionID           string   `json:"session_id,omitempty"`
	ClientID            string   `json:"client_id,omitempty"`
	DeviceID            string   `json:"device_id,omitempty"`
	TokenID             string   `json:"token_id,omitempty"`
	Grant               string   `json:"grant,omitempty"`
	RefreshGenPresented int      `json:"rt_gen_presented,omitempty"`
	RefreshGenIssued    int      `json:"rt_gen_issued,omitempty"`
	JKT                 string   `json:"jkt,omitempty"`
	BoundJKT            string   `json:"bound_jkt,omitempty"`
	Proof               Proof    `json:"proof,omitempty"`
	Result              string   `json:"result,omitempty"`
	Reason              string   `json:"reason,omitempty"`
	MFA                 bool     `json:"mfa,omitempty"`
	Resource            string   `json:"resource,omitempty"`
	Signal              string   `json:"signal,omitempty"`
	Count               int      `json:"count,omitempty"`
	IP                  string   `json:"ip,omitempty"`
	UserAgent           string   `json:"user_agent,omitempty"`
	ASN                 uint32   `json:"asn,omitempty"`
	ASOrg               string   `json:"as_org,omitempty"`
	Country             string   `json:"country,omitempty"`
	City                string   `json:"city,omitempty"`
	Lat                 *float64 `json:"lat,omitempty"`
	Lon                 *float64 `json:"lon,omitempty"`
}

// Marshal returns a's line, without the newline. It validates a first:
// Ward never writes a line its own reader would refuse.
func Marshal(a *Activity) ([]byte, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	l := line{
		T: a.Time.UTC().Format(time.RFC3339Nano), ID: a.ID, Kind: a.Kind,
		User: a.UserID, SessionID: a.SessionID, ClientID: a.ClientID, DeviceID: a.DeviceID,
		TokenID: a.TokenID, Grant: a.Grant,
		RefreshGenPresented: a.RefreshGenPresented, RefreshGenIssued: a.RefreshGenIssued,
		JKT: a.JKT, BoundJKT: a.BoundJKT, Proof: a.Proof, Result: a.Result, Reason: a.Reason,
		MFA: a.MFA, Resource: a.Resource, Signal: a.Signal, Count: a.Count,
		IP: a.IP, UserAgent: a.UserAgent, ASN: a.ASN, ASOrg: a.ASOrg, Country: a.Country, City: a.City,
	}
	if a.HasCoords {
		lat, lon := a.Lat, a.Lon
		l.Lat, l.Lon = &lat, &lon
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&l); err != nil {
		return nil, err
	}
	out := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(out) > MaxLine {
		return nil, fmt.Errorf("activity: line of %d bytes, more than %d", len(out), MaxLine)
	}
	return out, nil
}

// Parse reads one line (without its newline). Unknown fields, wrong types,
// values out of range and oversized fields are errors.
func Parse(b []byte) (Activity, error) { return parse(b, nil) }

func parse(b []byte, in *interner) (Activity, error) {
	if len(b) > MaxLine {
		return Activity{}, fmt.Errorf("line of %d bytes, more than %d", len(b), MaxLine)
	}
	l, err := decodeLine(b, in)
	if err != nil {
		return Activity{}, err
	}
	t, err := in.parseTime(l.T)
	if err != nil {
		return Activity{}, fmt.Errorf("t: %q is not an RFC 3339 time", clip(l.T))
	}
	a := Activity{
		Time: t, ID: l.ID, Kind: l.Kind,
		UserID: l.User, SessionID: l.SessionID, ClientID: l.ClientID, DeviceID: l.DeviceID,
		TokenID: l.TokenID, Grant: l.Grant,
		RefreshGenPresented: l.RefreshGenPresented, RefreshGenIssued: l.RefreshGenIssued,
		JKT: l.JKT, BoundJKT: l.BoundJKT, Proof: l.Proof, Result: l.Result, Reason: l.Reason,
		MFA: l.MFA, Resource: l.Resource, Signal: l.Signal, Count: l.Count,
		IP: l.IP, UserAgent: l.UserAgent, ASN: l.ASN, ASOrg: l.ASOrg, Country: l.Country, City: l.City,
	}
	switch {
	case l.Lat != nil && l.Lon != nil:
		a.Lat, a.Lon, a.HasCoords = *l.Lat, *l.Lon, true
	case l.Lat != nil || l.Lon != nil:
		return Activity{}, errors.New("lat and lon: give both or neither")
	}
	// Both decoders yield valid UTF-8 (the fast one refuses anything else,
	// encoding/json replaces invalid bytes): no need to check it again.
	if err := a.validate(false); err != nil {
		return Activity{}, err
	}
	return a, nil
}

// decodeLine decodes the JSON object of a line: Ward's own lines (plain
// strings, the documented names in lower case, each once) by the fast
// path, anything else by encoding/json, whose answer is the reference
// (FuzzFastDecode checks that both agree wherever the fast path answers).
func decodeLine(b []byte, in *interner) (line, error) {
	if l, ok := fastDecodeIn(b, in); ok {
		return l, nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var l line
	if err := dec.Decode(&l); err != nil {
		return line{}, fmt.Errorf("not an activity line: %w", jsonReason(err))
	}
	if dec.More() {
		return line{}, errors.New("not an activity line: more than one JSON value")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return line{}, errors.New("not an activity line: text after the JSON object")
	}
	return l, nil
}

var (
	minTime = time.Unix(0, 0)
	maxTime = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Validate reports the first field that is not what the format allows.
func (a *Activity) Validate() error { return a.validate(true) }

// validate is Validate; checkUTF8 false skips the UTF-8 check of strings
// known to be valid.
func (a *Activity) validate(checkUTF8 bool) error {
	if a.Time.IsZero() {
		return errors.New("t: missing")
	}
	// The detectors keep times as Unix nanoseconds, which cover the years
	// 1678–2262; a time outside 1970–2200 is an error in the data anyway.
	if a.Time.Before(minTime) || !a.Time.Before(maxTime) {
		return errors.New("t: out of range (1970 to 2199)")
	}
	if a.ID == "" {
		return errors.New("id: missing")
	}
	if !slices.Contains(Kinds, a.Kind) {
		return fmt.Errorf("kind: %q is not one of %s", clip(string(a.Kind)), kindList())
	}
	if a.Proof != "" && !slices.Contains(Proofs, a.Proof) {
		return fmt.Errorf("proof: %q is not one of ok, missing, wrong_key, invalid, none", clip(string(a.Proof)))
	}
	if a.Result != "" && a.Result != ResultSuccess && a.Result != ResultFailure {
		return fmt.Errorf("result: %q is not success or failure", clip(a.Result))
	}
	for _, f := range []struct{ name, v string }{
		{"id", a.ID}, {"user", a.UserID}, {"session_id", a.SessionID}, {"client_id", a.ClientID},
		{"device_id", a.DeviceID}, {"token_id", a.TokenID}, {"grant", a.Grant}, {"jkt", a.JKT},
		{"bound_jkt", a.BoundJKT}, {"reason", a.Reason}, {"resource", a.Resource}, {"signal", a.Signal},
		{"ip", a.IP}, {"user_agent", a.UserAgent}, {"as_org", a.ASOrg}, {"country", a.Country}, {"city", a.City},
	} {
		if len(f.v) > MaxField {
			return fmt.Errorf("%s: %d bytes, more than %d", f.name, len(f.v), MaxField)
		}
		if checkUTF8 && !utf8.ValidString(f.v) {
			return fmt.Errorf("%s: not valid UTF-8", f.name)
		}
	}
	if a.IP != "" {
		if _, err := netip.ParseAddr(a.IP); err != nil {
			return fmt.Errorf("ip: %q is not an IP address", clip(a.IP))
		}
	}
	if a.Count < 0 || a.Count > maxCount {
		return fmt.Errorf("count: %d is out of range", a.Count)
	}
	if a.RefreshGenPresented < 0 || a.RefreshGenPresented > maxGen || a.RefreshGenIssued < 0 || a.RefreshGenIssued > maxGen {
		return errors.New("rt_gen_presented, rt_gen_issued: out of range")
	}
	if a.Country != "" && (len(a.Country) != countryLen || strings.ToUpper(a.Country) != a.Country) {
		return fmt.Errorf("country: %q is not an ISO 3166-1 alpha-2 code", clip(a.Country))
	}
	if a.HasCoords && (a.Lat < -90 || a.Lat > 90 || a.Lon < -180 || a.Lon > 180 || a.Lat != a.Lat || a.Lon != a.Lon) {
		return errors.New("lat, lon: out of range")
	}
	return nil
}

// Reader reads activity lines. A malformed line is a *LineError and does
// not stop the reader: the next call reads the line after it.
type Reader struct {
	br   *bufio.Reader
	line int
	buf  []byte // the line being read, reused
	in   interner
}

// NewReader reads lines from r.
func NewReader(r io.Reader) *Reader { return &Reader{br: bufio.NewReaderSize(r, 64<<10)} }

// LineError is a line that could not be read.
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// Next returns the next activity, a *LineError for a line it refused, or
// io.EOF at the end. Blank lines are skipped; a line longer than MaxLine
// is skipped without being held in memory.
func (r *Reader) Next() (Activity, error) {
	for {
		b, tooLong, err := r.readLine()
		if err != nil {
			return Activity{}, err
		}
		r.line++
		if tooLong {
			return Activity{}, &LineError{Line: r.line, Err: fmt.Errorf("longer than %d bytes", MaxLine)}
		}
		if len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		a, perr := parse(b, &r.in)
		if perr != nil {
			return Activity{}, &LineError{Line: r.line, Err: perr}
		}
		return a, nil
	}
}

// readLine returns the next line without its newline (and a trailing \r),
// or tooLong after discarding a line beyond MaxLine.
func (r *Reader) readLine() (b []byte, tooLong bool, err error) {
	buf := r.buf[:0]
	defer func() {
		if cap(buf) <= 2*MaxLine+64 {
			r.buf = buf[:0]
		}
	}()
	for {
		frag, err := r.br.ReadSlice('\n')
		if len(buf)+len(frag) > MaxLine+2 {
			tooLong = true
			buf = buf[:0]
		} else if !tooLong {
			buf = append(buf, frag...)
		}
		switch {
		case err == nil:
			return trimEOL(buf), tooLong, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(buf) == 0 && !tooLong {
				return nil, false, io.EOF
			}
			return trimEOL(buf), tooLong, nil
		default:
			return nil, false, err
		}
	}
}

func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// jsonReason shortens encoding/json's errors to what a user can act on,
// without echoing the input.
func jsonReason(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("%s: wrong type (%s)", te.Field, te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at byte %d", se.Offset)
	}
	if s := err.Error(); strings.HasPrefix(s, "json: unknown field ") {
		return fmt.Errorf("unknown field %s", clip(strings.TrimPrefix(s, "json: unknown field ")))
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("incomplete JSON")
	}
	return err
}

// clip bounds a value quoted back in an error message.
func clip(s string) string {
	const n = 64
	if len(s) <= n {
		return s
	}
	for i := n; i > 0; i-- {
		if utf8.RuneStart(s[i]) {
			return s[:i] + "…"
		}
	}
	return ""
}

func kindList() string {
	s := make([]string, len(Kinds))
	for i, k := range Kinds {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}
