// Package httpauth reads and writes HTTP authentication challenges, the
// WWW-Authenticate header of RFC 9110 §11.6.1: the one parser and the one
// writer behind Ward's servers (OAuth and resource errors, RFC 6750 §3 and
// RFC 9449 §7), its resource-server package and its clients (the DPoP
// transport, the device agent).
//
// The parser is strict and bounded: a field is 1#challenge, a challenge an
// auth-scheme followed by a token68 or by auth-params (token BWS "=" BWS
// ( token / quoted-string ), quoted-pairs unescaped), challenges and
// parameters separated by commas; parameter names are case-insensitive
// and returned in lower case, and a name twice in one challenge is an
// error. A field that does not parse yields no challenge at all (nothing
// is guessed from a part of it); the fields of one response are read up to
// MaxLength bytes in all.
//
// The writer emits what the parser reads back: Challenge.String. It
// depends on the standard library only.
package httpauth

import (
	"errors"
	"fmt"
	"strings"
)

// MaxLength bounds the WWW-Authenticate text Parse reads, all fields
// together, so that a hostile server cannot make a client parse megabytes.
const MaxLength = 16 << 10

// Param is one auth-param.
type Param struct {
	Name, Value string
}

// Challenge is one authentication challenge.
type Challenge struct {
	// Scheme is the auth-scheme as sent; compare it case-insensitively.
	Scheme string
	// Token68 is the token68 form, if the challenge has one instead of
	// parameters.
	Token68 string
	// Params are the auth-params in order; Parse returns the names in
	// lower case.
	Params []Param
}

// Get returns the value of the parameter name (compared
// case-insensitively).
func (c *Challenge) Get(name string) (string, bool) {
	for _, p := range c.Params {
		if strings.EqualFold(p.Name, name) {
			return p.Value, true
		}
	}
	return "", false
}

// Param returns the value of the parameter name, or "".
func (c *Challenge) Param(name string) string {
	v, _ := c.Get(name)
	return v
}

// String formats the challenge for a WWW-Authenticate field: the scheme,
// then the token68 or the parameters, comma-separated, in order. A value
// of digits only is written as a token (max_age=5, as RFC 9470 shows it),
// any other as a quoted-string with '"' and '\' escaped; control
// characters other than HTAB, which no header field may carry, are
// written as spaces. Scheme and parameter names must be tokens.
func (c Challenge) String() string {
	var b strings.Builder
	b.WriteString(c.Scheme)
	if c.Token68 != "" {
		b.WriteByte(' ')
		b.WriteString(c.Token68)
		return b.String()
	}
	for i, p := range c.Params {
		if i == 0 {
			b.WriteByte(' ')
		} else {
			b.WriteString(", ")
		}
		b.WriteString(p.Name)
		b.WriteByte('=')
		if isDigits(p.Value) {
			b.WriteString(p.Value)
			continue
		}
		b.WriteByte('"')
		for j := 0; j < len(p.Value); j++ {
			switch ch := p.Value[j]; {
			case ch == '"' || ch == '\\':
				b.WriteByte('\\')
				b.WriteByte(ch)
			case (ch < 0x20 && ch != '\t') || ch == 0x7f:
				b.WriteByte(' ')
			default:
				b.WriteByte(ch)
			}
		}
		b.WriteByte('"')
	}
	return b.String()
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// ErrorParams returns the parameters of an RFC 6750 §3 error (also the
// form of RFC 9449 §7.1 for DPoP): error, and error_description when
// description is set. RFC 6750 allows no '"' in a description: each
// becomes an apostrophe.
func ErrorParams(code, description string) []Param {
	ps := []Param{{"error", code}}
	if description != "" {
		ps = append(ps, Param{"error_description", strings.ReplaceAll(description, `"`, `'`)})
	}
	return ps
}

// Parse parses WWW-Authenticate field values (http.Header.Values). A
// field that does not parse is skipped and reported in the error; the
// challenges of the other fields are still returned. Reading stops, with
// an error, past MaxLength bytes.
func Parse(fields ...string) ([]Challenge, error) {
	var out []Challenge
	var errs []error
	total := 0
	for _, v := range fields {
		total += len(v)
		if total > MaxLength {
			errs = append(errs, errors.New("httpauth: WWW-Authenticate too large"))
			break
		}
		cs, err := ParseField(v)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, cs...)
	}
	return out, errors.Join(errs...)
}

// ParseField parses one field value: 1#challenge, where challenge =
// auth-scheme [ 1*SP ( token68 / #auth-param ) ]. A comma separates
// parameters and challenges alike; a token followed by "=" is a
// parameter, any other token starts the next challenge.
func ParseField(s string) ([]Challenge, error) {
	if len(s) > MaxLength {
		return nil, errors.New("httpauth: WWW-Authenticate too large")
	}
	p := &parser{s: s}
	var out []Challenge
	for {
		p.skipListSep()
		if p.eof() {
			break
		}
		scheme := p.token()
		if scheme == "" {
			return nil, p.errf("expected auth-scheme")
		}
		c := Challenge{Scheme: scheme}
		if !p.eof() && p.peek() != ',' {
			if !p.sp() {
				return nil, p.errf("expected space after auth-scheme")
			}
			if err := p.params(&c); err != nil {
				return nil, err
			}
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("httpauth: empty WWW-Authenticate")
	}
	return out, nil
}

type parser struct {
	s string
	i int
}

func (p *parser) eof() bool  { return p.i >= len(p.s) }
func (p *parser) peek() byte { return p.s[p.i] }

// errf reports a syntax error by offset, never quoting the input.
func (p *parser) errf(format string, a ...any) error {
	return fmt.Errorf("httpauth: WWW-Authenticate at offset %d: "+format, append([]any{p.i}, a...)...)
}

func (p *parser) ows() {
	for !p.eof() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// sp consumes at least one space or tab.
func (p *parser) sp() bool {
	j := p.i
	p.ows()
	return p.i > j
}

// skipListSep skips OWS and empty list elements (RFC 9110 §5.6.1.2).
func (p *parser) skipListSep() {
	for {
		p.ows()
		if p.eof() || p.peek() != ',' {
			return
		}
		p.i++
	}
}

func (p *parser) token() string {
	j := p.i
	for !p.eof() && isTChar(p.s[p.i]) {
		p.i++
	}
	return p.s[j:p.i]
}

// params parses token68 or #auth-param after the scheme and its space. It
// stops before a token that starts the next challenge.
func (p *parser) params(c *Challenge) error {
	first := true
	for {
		if p.eof() || p.peek() == ',' {
			return nil // an empty #auth-param list
		}
		start := p.i
		name := p.token()
		save := p.i
		p.ows()
		isParam := false
		if name != "" && !p.eof() && p.peek() == '=' {
			// "name =" is a parameter unless it is the padding of a
			// token68 (followed by more '=', the end or a comma).
			k := p.i + 1
			for k < len(p.s) && (p.s[k] == ' ' || p.s[k] == '\t') {
				k++
			}
			isParam = k < len(p.s) && (p.s[k] == '"' || isTChar(p.s[k])) && p.s[k] != '='
		}
		switch {
		case isParam:
			p.i++ // '='
			p.ows()
			var v string
			if p.peek() == '"' {
				var err error
				if v, err = p.quoted(); err != nil {
					return err
				}
			} else {
				v = p.token()
			}
			lname := strings.ToLower(name)
			if _, dup := c.Get(lname); dup {
				return p.errf("duplicate parameter %q", lname)
			}
			c.Params = append(c.Params, Param{lname, v})
		case first:
			p.i = start
			t, ok := p.token68()
			if !ok {
				return p.errf("expected auth-param or token68")
			}
			c.Token68 = t
			p.ows()
			if !p.eof() && p.peek() != ',' {
				return p.errf("unexpected text after token68")
			}
			return nil
		case name != "":
			// A token without "=": the next challenge's scheme.
			p.i = start
			return nil
		default:
			p.i = save
			return p.errf("expected auth-param")
		}
		first = false
		p.ows()
		if p.eof() {
			return nil
		}
		if p.peek() != ',' {
			return p.errf("expected comma")
		}
		p.skipListSep()
		if p.eof() {
			return nil
		}
	}
}

func (p *parser) token68() (string, bool) {
	j := p.i
	for !p.eof() && IsToken68Char(p.s[p.i]) {
		p.i++
	}
	if p.i == j {
		return "", false
	}
	for !p.eof() && p.s[p.i] == '=' {
		p.i++
	}
	return p.s[j:p.i], true
}

// quoted parses a quoted-string at p.i (RFC 9110 §5.6.4).
func (p *parser) quoted() (string, error) {
	p.i++ // opening quote
	var b strings.Builder
	for !p.eof() {
		ch := p.s[p.i]
		switch {
		case ch == '"':
			p.i++
			return b.String(), nil
		case ch == '\\':
			if p.i+1 >= len(p.s) || !isQuotedPairChar(p.s[p.i+1]) {
				return "", p.errf("bad quoted-pair")
			}
			b.WriteByte(p.s[p.i+1])
			p.i += 2
		case ch == '\t' || ch == ' ' || ch == 0x21 || (ch >= 0x23 && ch <= 0x5b) || (ch >= 0x5d && ch <= 0x7e) || ch >= 0x80:
			b.WriteByte(ch)
			p.i++
		default:
			return "", p.errf("control character in quoted-string")
		}
	}
	return "", p.errf("unterminated quoted-string")
}

// isTChar reports whether c may appear in a token (RFC 9110 §5.6.2).
func isTChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// IsToken68Char reports whether c may appear in a token68 before its
// padding (RFC 9110 §11.2): the credentials of Authorization headers
// (a DPoP or Bearer access token) have this form too.
func IsToken68Char(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-._~+/", c) >= 0
}

// IsToken68 reports whether s is a non-empty token68 (RFC 9110 §11.2).
func IsToken68(s string) bool {
	i := 0
	for i < len(s) && IsToken68Char(s[i]) {
		i++
	}
	if i == 0 {
		return false
	}
	for i < len(s) && s[i] == '=' {
		i++
	}
	return i == len(s)
}

func isQuotedPairChar(c byte) bool {
	return c == '\t' || c == ' ' || (c >= 0x21 && c <= 0x7e) || c >= 0x80
}
