package activity

import (
	"encoding/binary"
	"math/bits"
	"strconv"
	"time"
	"unicode/utf8"
)

// fastDecode decodes the common form of a line — one JSON object whose
// members are the documented field names exactly, each at most once,
// strings without escapes or control characters, integers as plain
// digits, numbers in JSON's grammar — without reflection: about ten times
// faster than encoding/json, which a backtest of millions of lines needs.
// For anything else it answers false and decodeLine asks encoding/json,
// so the accepted lines and their values are encoding/json's.
func fastDecode(b []byte) (line, bool) { return fastDecodeIn(b, nil) }

// fastDecodeIn is fastDecode sharing the strings that repeat from line to
// line (kinds, users, sessions, clients, user agents, places) through in:
// a reader of millions of lines allocates each once.
func fastDecodeIn(b []byte, in *interner) (line, bool) {
	var l line
	d := fastDec{b: b, in: in}
	d.ws()
	if !d.eat('{') {
		return l, false
	}
	var seen uint32
	d.ws()
	if d.eat('}') {
		return l, d.end()
	}
	for {
		d.ws()
		key, ok := d.str()
		if !ok {
			return l, false
		}
		d.ws()
		if !d.eat(':') {
			return l, false
		}
		d.ws()
		bit, ok := fieldBit(key)
		if !ok || seen&bit != 0 {
			return l, false
		}
		seen |= bit
		if !d.value(&l, key) {
			return l, false
		}
		d.ws()
		if d.eat('}') {
			return l, d.end()
		}
		if !d.eat(',') {
			return l, false
		}
	}
}

// fieldBit numbers the documented fields (for the duplicate check).
func fieldBit(k []byte) (uint32, bool) {
	var i uint
	switch string(k) {
	case "t":
		i = 0
	case "id":
		i = 1
	case "kind":
		i = 2
	case "user":
		i = 3
	case "session_id":
		i = 4
	case "client_id":
		i = 5
	case "device_id":
		i = 6
	case "token_id":
		i = 7
	case "grant":
		i = 8
	case "rt_gen_presented":
		i = 9
	case "rt_gen_issued":
		i = 10
	case "jkt":
		i = 11
	case "bound_jkt":
		i = 12
	case "proof":
		i = 13
	case "result":
		i = 14
	case "reason":
		i = 15
	case "mfa":
		i = 16
	case "resource":
		i = 17
	case "signal":
		i = 18
	case "count":
		i = 19
	case "ip":
		i = 20
	case "user_agent":
		i = 21
	case "asn":
		i = 22
	case "as_org":
		i = 23
	case "country":
		i = 24
	case "city":
		i = 25
	case "lat":
		i = 26
	case "lon":
		i = 27
	default:
		return 0, false
	}
	return 1 << i, true
}

type fastDec struct {
	b  []byte
	i  int
	in *interner
}

// vocabulary returns the constant for a kind, proof status, result or
// grant type Ward writes (no lookup, no allocation), else interns s.
func vocabulary(s []byte, in *interner) string {
	switch string(s) {
	case "signin":
		return string(KindSignIn)
	case "sso_signin":
		return string(KindSSOSignIn)
	case "refresh":
		return string(KindRefresh)
	case "token":
		return string(KindToken)
	case "token_use":
		return string(KindTokenUse)
	case "device_registration":
		return string(KindDeviceRegistration)
	case "signal":
		return string(KindSignal)
	case "ok":
		return string(ProofOK)
	case "none":
		return string(ProofNone)
	case "missing":
		return string(ProofMissing)
	case "wrong_key":
		return string(ProofWrongKey)
	case "invalid":
		return string(ProofInvalid)
	case ResultSuccess:
		return ResultSuccess
	case ResultFailure:
		return ResultFailure
	case "refresh_token":
		return "refresh_token"
	case "authorization_code":
		return "authorization_code"
	case "client_credentials":
		return "client_credentials"
	}
	return in.str(s)
}

// interner shares strings; it forgets everything when full, so it stays
// bounded whatever it reads.
type interner struct {
	m map[string]string
	// The last time read, as text and parsed: lines come in time order,
	// many in the same second.
	lastT    string
	parsedT  string
	parsed   time.Time
	parsedOK bool
}

// t shares the text of a time with the line before's.
func (in *interner) t(b []byte) string {
	if in == nil {
		return string(b)
	}
	if string(b) != in.lastT {
		in.lastT = string(b)
	}
	return in.lastT
}

// parseTime is time.Parse(time.RFC3339Nano, s), remembering the last.
func (in *interner) parseTime(s string) (time.Time, error) {
	if in != nil && in.parsedOK && s == in.parsedT {
		return in.parsed, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if in != nil {
		in.parsedT, in.parsed, in.parsedOK = s, t, err == nil
	}
	return t, err
}

const (
	maxInterned    = 1 << 14
	maxInternedLen = 256
)

func (in *interner) str(b []byte) string {
	if in == nil || len(b) > maxInternedLen {
		return string(b)
	}
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	if in.m == nil || len(in.m) >= maxInterned {
		in.m = make(map[string]string, 1024)
	}
	s := string(b)
	in.m[s] = s
	return s
}

func (d *fastDec) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *fastDec) eat(c byte) bool {
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// end: only whitespace after the object.
func (d *fastDec) end() bool {
	d.ws()
	return d.i == len(d.b)
}

// str reads a string without escapes or control characters, in valid
// UTF-8 (encoding/json would replace invalid bytes: not the fast path's
// business).
func (d *fastDec) str() ([]byte, bool) {
	if !d.eat('"') {
		return nil, false
	}
	start, ascii := d.i, true
	b := d.b
	for i := d.i; ; i++ {
		// Find the next special byte, eight bytes at a time.
		for {
			if i+8 > len(b) {
				for i < len(b) && !special[b[i]] {
					i++
				}
				break
			}
			if m := specialBytes(binary.LittleEndian.Uint64(b[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		if i >= len(b) {
			return nil, false
		}
		switch c := b[i]; {
		case c == '"':
			s := b[start:i]
			d.i = i + 1
			if !ascii && !utf8.Valid(s) {
				return nil, false
			}
			return s, true
		case c >= 0x80:
			ascii = false
		default: // a backslash or a control character
			return nil, false
		}
	}
}

// specialBytes marks the special bytes among w's eight (little-endian):
// a quote, a backslash, a control character or not ASCII, by the classic
// has-zero-byte tests. A mark above the first may be false (a borrow),
// but the lowest one is exact: str needs only that.
func specialBytes(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	q, bs := w^(ones*'"'), w^(ones*'\\')
	return ((q-ones)&^q | (bs-ones)&^bs | (w-ones*0x20)&^w | w) & highs
}

// special marks the bytes str must look at.
var special = func() (t [256]bool) {
	for c := 0; c < 0x20; c++ {
		t[c] = true
	}
	for c := 0x80; c < 0x100; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// number reads a JSON number's text.
func (d *fastDec) number() ([]byte, bool) {
	start := d.i
	d.eat('-')
	switch {
	case d.eat('0'):
	case d.i < len(d.b) && d.b[d.i] >= '1' && d.b[d.i] <= '9':
		d.digits()
	default:
		return nil, false
	}
	if d.eat('.') {
		if d.digits() == 0 {
			return nil, false
		}
	}
	if d.i < len(d.b) && (d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		d.i++
		if !d.eat('+') {
			d.eat('-')
		}
		if d.digits() == 0 {
			return nil, false
		}
	}
	return d.b[start:d.i], true
}

func (d *fastDec) digits() int {
	n := 0
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
		n++
	}
	return n
}

// uint reads a plain non-negative integer of at most max.
func (d *fastDec) uint(max uint64) (uint64, bool) {
	num, ok := d.number()
	if !ok || len(num) > 19 {
		return 0, false
	}
	var v uint64
	for _, c := range num {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, v <= max
}

func (d *fastDec) value(l *line, key []byte) bool {
	switch string(key) {
	case "rt_gen_presented", "rt_gen_issued", "count":
		v, ok := d.uint(1<<62 - 1)
		if !ok {
			return false
		}
		switch string(key) {
		case "rt_gen_presented":
			l.RefreshGenPresented = int(v)
		case "rt_gen_issued":
			l.RefreshGenIssued = int(v)
		default:
			l.Count = int(v)
		}
		return true
	case "asn":
		v, ok := d.uint(1<<32 - 1)
		l.ASN = uint32(v)
		return ok
	case "mfa":
		switch {
		case d.lit("true"):
			l.MFA = true
		case d.lit("false"):
			l.MFA = false
		default:
			return false
		}
		return true
	case "lat", "lon":
		num, ok := d.number()
		if !ok {
			return false
		}
		f, ok := exactFloat(num)
		if !ok {
			var err error
			if f, err = strconv.ParseFloat(string(num), 64); err != nil {
				return false
			}
		}
		if key[1] == 'a' {
			l.Lat = &f
		} else {
			l.Lon = &f
		}
		return true
	}
	s, ok := d.str()
	if !ok {
		return false
	}
	var v string
	switch string(key) {
	case "kind", "proof", "result", "grant":
		v = vocabulary(s, d.in)
	case "client_id", "reason", "resource", "signal", "user_agent", "as_org", "country", "city":
		v = d.in.str(s) // few distinct values
	case "t":
		v = d.in.t(s)
	default:
		v = string(s)
	}
	switch string(key) {
	case "t":
		l.T = v
	case "id":
		l.ID = v
	case "kind":
		l.Kind = Kind(v)
	case "user":
		l.User = v
	case "session_id":
		l.SessionID = v
	case "client_id":
		l.ClientID = v
	case "device_id":
		l.DeviceID = v
	case "token_id":
		l.TokenID = v
	case "grant":
		l.Grant = v
	case "jkt":
		l.JKT = v
	case "bound_jkt":
		l.BoundJKT = v
	case "proof":
		l.Proof = Proof(v)
	case "result":
		l.Result = v
	case "reason":
		l.Reason = v
	case "resource":
		l.Resource = v
	case "signal":
		l.Signal = v
	case "ip":
		l.IP = v
	case "user_agent":
		l.UserAgent = v
	case "as_org":
		l.ASOrg = v
	case "country":
		l.Country = v
	case "city":
		l.City = v
	default:
		return false
	}
	return true
}

func (d *fastDec) lit(s string) bool {
	if len(d.b)-d.i >= len(s) && string(d.b[d.i:d.i+len(s)]) == s {
		d.i += len(s)
		return true
	}
	return false
}

// pow10 are the powers of ten a float64 holds exactly.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// exactFloat converts a JSON number without exponent whose digits make an
// integer below 2^53 with at most 22 of them after the point — a
// coordinate — as one division of two exactly represented numbers, which
// IEEE 754 rounds correctly: the float64 strconv.ParseFloat returns,
// without its general machinery. Anything else answers false.
func exactFloat(num []byte) (float64, bool) {
	neg := len(num) > 0 && num[0] == '-'
	if neg {
		num = num[1:]
	}
	var m uint64
	digits, frac, point := 0, 0, false
	for _, c := range num {
		switch {
		case c >= '0' && c <= '9':
			if digits++; digits > 18 {
				return 0, false
			}
			m = m*10 + uint64(c-'0')
			if point {
				frac++
			}
		case c == '.' && !point:
			point = true
		default:
			return 0, false
		}
	}
	if digits == 0 || m >= 1<<53 || frac >= len(pow10) {
		return 0, false
	}
	f := float64(m) / pow10[frac]
	if neg {
		f = -f
	}
	return f, true
}
