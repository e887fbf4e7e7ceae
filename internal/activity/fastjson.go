package activity

import (
	"strconv"
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

// interner shares strings; it forgets everything when full, so it stays
// bounded whatever it reads.
type interner struct {
	m map[string]string
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
	for i := d.i; i < len(b); i++ {
		c := b[i]
		if !special[c] {
			continue
		}
		switch {
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
	return nil, false
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
		f, err := strconv.ParseFloat(string(num), 64)
		if err != nil {
			return false
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
	case "kind", "client_id", "grant", "proof", "result", "reason", "resource", "signal", "user_agent", "as_org", "country", "city":
		v = d.in.str(s) // few distinct values
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
