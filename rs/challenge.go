package rs

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxChallengeHeader bounds the WWW-Authenticate text ParseChallenges
// reads, so a hostile server cannot make a client parse megabytes.
const maxChallengeHeader = 16 << 10

// Challenge is one authentication challenge of a WWW-Authenticate header
// (RFC 9110 §11.6.1), as a resource answers a rejected request. The
// convenience fields are filled from Params by ParseChallenges.
type Challenge struct {
	// Scheme is the auth-scheme as sent (compare case-insensitively).
	Scheme string
	// Token68 is the token68 form, if the challenge used it instead of
	// parameters.
	Token68 string
	// Params holds the auth-params by lower-cased name.
	Params map[string]string

	Error            string
	ErrorDescription string
	Scope            string
	// Algs are the DPoP algorithms the resource accepts (RFC 9449 §7.1).
	Algs []string
	// ACRValues and MaxAge are the RFC 9470 step-up parameters; MaxAge is
	// -1 if absent.
	ACRValues []string
	MaxAge    int
	// Claims is the decoded claims challenge JSON (the "claims"
	// parameter), ready to be sent back as the OAuth "claims" request
	// parameter; nil if absent or undecodable (ClaimsErr says why).
	Claims    json.RawMessage
	ClaimsErr error

	order []string // parameter order for String
}

func (c *Challenge) set(name, value string) {
	if c.Params == nil {
		c.Params = make(map[string]string)
	}
	name = strings.ToLower(name)
	if _, ok := c.Params[name]; !ok {
		c.order = append(c.order, name)
	}
	c.Params[name] = value
}

// String formats the challenge (parameter values as quoted strings, in the
// order they were set or parsed).
func (c *Challenge) String() string {
	var b strings.Builder
	b.WriteString(c.Scheme)
	if c.Token68 != "" {
		b.WriteByte(' ')
		b.WriteString(c.Token68)
		return b.String()
	}
	names := c.order
	if len(names) != len(c.Params) {
		names = names[:0:0]
		for n := range c.Params {
			names = append(names, n)
		}
	}
	for i, n := range names {
		if i == 0 {
			b.WriteByte(' ')
		} else {
			b.WriteString(", ")
		}
		b.WriteString(n)
		b.WriteByte('=')
		v := c.Params[n]
		if isDigits(v) {
			b.WriteString(v) // numbers as tokens, like RFC 9470's max_age=5
			continue
		}
		b.WriteByte('"')
		for j := 0; j < len(v); j++ {
			if v[j] == '"' || v[j] == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(v[j])
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

// IsCAE reports whether the challenge asks the client to come back with a
// new token (insufficient_claims, insufficient_user_authentication, or a
// claims parameter).
func (c *Challenge) IsCAE() bool {
	return c.Error == CodeInsufficientClaims || c.Error == CodeInsufficientUserAuthentication || c.Params["claims"] != ""
}

// RequiredNotBefore returns the time a new access token must be issued
// after (the "nbf" value of the claims challenge).
func (c *Challenge) RequiredNotBefore() (time.Time, bool) {
	var req struct {
		AccessToken struct {
			NBF *struct {
				Value json.RawMessage `json:"value"`
			} `json:"nbf"`
		} `json:"access_token"`
	}
	if c.Claims == nil || json.Unmarshal(c.Claims, &req) != nil || req.AccessToken.NBF == nil {
		return time.Time{}, false
	}
	v := req.AccessToken.NBF.Value
	if s, ok := unquote(v); ok {
		v = []byte(s) // Entra sends the number as a string
	}
	sec, ok := numericDate(v)
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(sec, 0), true
}

// RequiredACR returns the acceptable acr values, from acr_values or else
// from the claims challenge.
func (c *Challenge) RequiredACR() []string {
	if len(c.ACRValues) > 0 {
		return c.ACRValues
	}
	var req struct {
		AccessToken struct {
			ACR *struct {
				Value  string   `json:"value"`
				Values []string `json:"values"`
			} `json:"acr"`
		} `json:"access_token"`
	}
	if c.Claims == nil || json.Unmarshal(c.Claims, &req) != nil || req.AccessToken.ACR == nil {
		return nil
	}
	if len(req.AccessToken.ACR.Values) > 0 {
		return req.AccessToken.ACR.Values
	}
	if req.AccessToken.ACR.Value != "" {
		return []string{req.AccessToken.ACR.Value}
	}
	return nil
}

// ParseClaimsChallenge returns the first CAE challenge (see IsCAE) of a
// response's WWW-Authenticate headers.
func ParseClaimsChallenge(h http.Header) (*Challenge, bool) {
	cs, _ := ParseChallenges(h)
	for i := range cs {
		if cs[i].IsCAE() {
			return &cs[i], true
		}
	}
	return nil, false
}

// ParseChallenges parses every WWW-Authenticate field of h. A field that
// does not parse is skipped and reported in the error; the challenges of
// the other fields are still returned.
func ParseChallenges(h http.Header) ([]Challenge, error) {
	var out []Challenge
	var errs []error
	total := 0
	for _, v := range h.Values("WWW-Authenticate") {
		total += len(v)
		if total > maxChallengeHeader {
			errs = append(errs, errors.New("rs: WWW-Authenticate too large"))
			break
		}
		cs, err := parseChallengeList(v)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, cs...)
	}
	return out, errors.Join(errs...)
}

// parseChallengeList parses one field value: 1#challenge, where
// challenge = auth-scheme [ 1*SP ( token68 / #auth-param ) ] and
// auth-param = token BWS "=" BWS ( token / quoted-string ).
// A comma separates parameters and challenges alike; a token followed by
// "=" is a parameter, any other token starts the next challenge.
func parseChallengeList(s string) ([]Challenge, error) {
	p := &chParser{s: s}
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
		c.fill()
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("rs: empty WWW-Authenticate")
	}
	return out, nil
}

type chParser struct {
	s string
	i int
}

func (p *chParser) eof() bool  { return p.i >= len(p.s) }
func (p *chParser) peek() byte { return p.s[p.i] }

func (p *chParser) errf(format string, a ...any) error {
	return fmt.Errorf("rs: WWW-Authenticate at offset %d: "+format, append([]any{p.i}, a...)...)
}

func (p *chParser) ows() {
	for !p.eof() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// sp consumes at least one space or tab.
func (p *chParser) sp() bool {
	j := p.i
	p.ows()
	return p.i > j
}

// skipListSep skips OWS and empty list elements.
func (p *chParser) skipListSep() {
	for {
		p.ows()
		if p.eof() || p.peek() != ',' {
			return
		}
		p.i++
	}
}

func (p *chParser) token() string {
	j := p.i
	for !p.eof() && isTChar(p.s[p.i]) {
		p.i++
	}
	return p.s[j:p.i]
}

// params parses token68 or #auth-param after the scheme and its space. It
// stops before a token that starts the next challenge.
func (p *chParser) params(c *Challenge) error {
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
			if _, dup := c.Params[lname]; dup {
				return p.errf("duplicate parameter %q", lname)
			}
			c.set(lname, v)
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

func (p *chParser) token68() (string, bool) {
	j := p.i
	for !p.eof() && isToken68Char(p.s[p.i]) {
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
func (p *chParser) quoted() (string, error) {
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

func isTChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func isToken68Char(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("-._~+/", c) >= 0
}

func isQuotedPairChar(c byte) bool {
	return c == '\t' || c == ' ' || (c >= 0x21 && c <= 0x7e) || c >= 0x80
}

// fill sets the convenience fields from Params.
func (c *Challenge) fill() {
	c.MaxAge = -1
	c.Error = c.Params["error"]
	c.ErrorDescription = c.Params["error_description"]
	c.Scope = c.Params["scope"]
	c.Algs = strings.Fields(c.Params["algs"])
	c.ACRValues = strings.Fields(c.Params["acr_values"])
	if v, ok := c.Params["max_age"]; ok {
		if n, err := strconv.Atoi(v); err == nil && n >= 0 {
			c.MaxAge = n
		}
	}
	if v, ok := c.Params["claims"]; ok {
		c.Claims, c.ClaimsErr = decodeClaims(v)
	}
}

// decodeClaims accepts the claims challenge as base64url (what Ward
// sends) or padded standard base64 (what Entra sends), and requires a JSON
// object inside.
func decodeClaims(v string) (json.RawMessage, error) {
	var b []byte
	var err error
	if strings.ContainsAny(v, "+/=") {
		b, err = base64.StdEncoding.DecodeString(v)
		if err != nil {
			b, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(v, "="))
		}
	} else {
		b, err = base64.RawURLEncoding.DecodeString(v)
	}
	if err != nil {
		return nil, errors.New("rs: claims challenge is not base64")
	}
	if _, err := parseObject(b); err != nil {
		return nil, errors.New("rs: claims challenge is not a JSON object")
	}
	return b, nil
}
