package rs

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/httpauth"
)

// Challenge is one authentication challenge of a WWW-Authenticate header
// (RFC 9110 §11.6.1), as a resource answers a rejected request, read by
// package httpauth. The convenience fields are filled from Params by
// ParseChallenges.
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

// String formats the challenge (httpauth.Challenge.String: parameter
// values as quoted strings, numbers as tokens, in the order they were set
// or parsed).
func (c *Challenge) String() string { return c.httpauth().String() }

// httpauth returns c as an httpauth.Challenge, parameters in order.
func (c *Challenge) httpauth() httpauth.Challenge {
	h := httpauth.Challenge{Scheme: c.Scheme, Token68: c.Token68}
	names := c.order
	if len(names) != len(c.Params) {
		names = names[:0:0]
		for n := range c.Params {
			names = append(names, n)
		}
	}
	for _, n := range names {
		h.Params = append(h.Params, httpauth.Param{Name: n, Value: c.Params[n]})
	}
	return h
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

// ParseChallenges parses every WWW-Authenticate field of h (package
// httpauth: strict, at most httpauth.MaxLength bytes in all). A field
// that does not parse is skipped and reported in the error; the
// challenges of the other fields are still returned.
func ParseChallenges(h http.Header) ([]Challenge, error) {
	cs, err := httpauth.Parse(h.Values("WWW-Authenticate")...)
	return fromHTTPAuth(cs), err
}

// parseChallengeList parses one field value.
func parseChallengeList(s string) ([]Challenge, error) {
	cs, err := httpauth.ParseField(s)
	if err != nil {
		return nil, err
	}
	return fromHTTPAuth(cs), nil
}

func fromHTTPAuth(cs []httpauth.Challenge) []Challenge {
	var out []Challenge
	for _, hc := range cs {
		c := Challenge{Scheme: hc.Scheme, Token68: hc.Token68}
		for _, p := range hc.Params {
			c.set(p.Name, p.Value)
		}
		c.fill()
		out = append(out, c)
	}
	return out
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
