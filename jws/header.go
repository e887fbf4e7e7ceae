package jws

import (
	"strings"

	"github.com/ward-idp/ward/jsonobj"
)

// MaxHeaderSize bounds the encoded protected header, in bytes. A header
// with an RSA-8192 jwk is under 2 KiB.
const MaxHeaderSize = 8 << 10

// Param names a header parameter ParseHeader decodes.
type Param uint8

// The header parameters ParseHeader decodes.
const (
	ParamAlg Param = 1 << iota
	ParamTyp
	ParamKid
	ParamJWK
)

// Header is a parsed protected header. Alg, Typ and Kid hold the values
// of those parameters when they are JSON strings ("" otherwise: see Has
// and IsString); JWK is the raw JSON value of "jwk" (nil if absent), for
// ParseJWK. Every member stays available, in input order, to First.
type Header struct {
	Alg, Typ, Kid string
	JWK           []byte

	has, str Param
	members  jsonobj.Object
}

// ParseHeader decodes the protected header segment seg: at most
// MaxHeaderSize bytes of canonical base64url (else ErrEncoding or
// ErrHeader) holding one strict JSON object (jsonobj.Parse: valid UTF-8,
// unique case-sensitive names, at most jsonobj.MaxMembers members; and
// jsonobj.CheckValue for every member but jwk: unique names in nested
// objects too, at most jsonobj.MaxDepth levels; else ErrHeader). members is reused for the member list (pass a small array
// on hot paths, or nil). ParseHeader checks nothing about the values:
// that is Rules.Check, or the caller's own order of checks.
func ParseHeader(seg string, members jsonobj.Object) (Header, error) {
	if len(seg) > MaxHeaderSize {
		return Header{}, ErrHeader
	}
	raw, err := DecodeSegment(seg)
	if err != nil {
		return Header{}, err
	}
	ms, err := jsonobj.Parse(raw, members)
	if err != nil {
		return Header{}, ErrHeader
	}
	h := Header{members: ms}
	for _, m := range ms {
		// Nested objects must have unique names too, so that extension
		// members read the same in every parser. The jwk is left to
		// ParseJWK (or Rules.Check), so that callers can say the key is
		// what is wrong.
		if m.Name != "jwk" && (m.Raw[0] == '{' || m.Raw[0] == '[') && jsonobj.CheckValue(m.Raw) != nil {
			return Header{}, ErrHeader
		}
		var p Param
		var dst *string
		switch m.Name {
		case "alg":
			p, dst = ParamAlg, &h.Alg
		case "typ":
			p, dst = ParamTyp, &h.Typ
		case "kid":
			p, dst = ParamKid, &h.Kid
		case "jwk":
			h.has |= ParamJWK
			h.JWK = m.Raw
			continue
		default:
			continue
		}
		h.has |= p
		if s, ok := jsonobj.Unquote(m.Raw); ok {
			*dst = s
			h.str |= p
		}
	}
	return h, nil
}

// Has reports whether the header has parameter p, whatever its type.
func (h *Header) Has(p Param) bool { return h.has&p != 0 }

// IsString reports whether parameter p is present and a JSON string.
func (h *Header) IsString(p Param) bool { return h.str&p != 0 }

// Mistyped reports whether alg, typ or kid is present but not a string
// (RFC 7515 §4.1: they are strings).
func (h *Header) Mistyped() bool {
	return h.has&(ParamAlg|ParamTyp|ParamKid) != h.str&(ParamAlg|ParamTyp|ParamKid)
}

// Len is the number of members.
func (h *Header) Len() int { return len(h.members) }

// First returns the name of the first member, in input order, that is
// one of names, or "".
func (h *Header) First(names ...string) string {
	for _, m := range h.members {
		for _, n := range names {
			if m.Name == n {
				return n
			}
		}
	}
	return ""
}

// Unsupported returns the first of crit, b64, zip and enc in the header,
// or "". None can be honoured: no extension is understood, so no critical
// one (RFC 7515 §4.1.11); b64 (RFC 7797) changes what is signed; zip and
// enc belong to JWE.
func (h *Header) Unsupported() string { return h.First("crit", "b64", "zip", "enc") }

// KeyReference returns the first of jku, x5u, x5c, x5t and x5t#S256 in
// the header, or "": parameters that point at a key elsewhere, which a
// verifier holding its keys (or taking only an inline jwk) must not
// follow (RFC 8725 §3.10).
func (h *Header) KeyReference() string { return h.First("jku", "x5u", "x5c", "x5t", "x5t#S256") }

// Rules are what a caller requires of a protected header.
type Rules struct {
	// Algs are the accepted algorithms. Only supported asymmetric
	// algorithms count: "none", HS256 and anything else not listed in
	// this package are refused even if listed here.
	Algs []Algorithm
	// Typ, when set, is the required typ: compared exactly unless
	// MediaType is set, and a missing typ fails (RFC 8725 §3.11).
	Typ string
	// MediaType compares typ as a media type (RFC 7515 §4.1.9):
	// case-insensitively, "application/" optional when no other '/'
	// appears ("at+jwt" equals "application/AT+JWT").
	MediaType bool
}

// Check applies r to h, in this order: alg, typ and kid must be strings
// if present and a jwk must pass jsonobj.CheckValue (ErrHeader); no crit,
// b64, zip or enc (ErrUnsupported); alg present and allowed (ErrAlg); typ
// as required (ErrTyp). It returns the algorithm.
func (r *Rules) Check(h *Header) (Algorithm, error) {
	if h.Mistyped() || (h.JWK != nil && jsonobj.CheckValue(h.JWK) != nil) {
		return "", ErrHeader
	}
	if h.Unsupported() != "" {
		return "", ErrUnsupported
	}
	alg, ok := r.Alg(h)
	if !ok {
		return "", ErrAlg
	}
	if r.Typ != "" && !r.TypOK(h) {
		return "", ErrTyp
	}
	return alg, nil
}

// Alg returns h's algorithm if it is a string in r.Algs and supported.
func (r *Rules) Alg(h *Header) (Algorithm, bool) {
	if !h.IsString(ParamAlg) || lookup(h.Alg) == nil {
		return "", false
	}
	for _, a := range r.Algs {
		if string(a) == h.Alg {
			return a, true
		}
	}
	return "", false
}

// TypOK reports whether h has the typ r requires (a string, compared as
// r says).
func (r *Rules) TypOK(h *Header) bool {
	if !h.IsString(ParamTyp) {
		return false
	}
	if r.MediaType {
		return MediaTypeEqual(h.Typ, r.Typ)
	}
	return h.Typ == r.Typ
}

// MediaTypeEqual compares two typ values as RFC 7515 §4.1.9 media types:
// case-insensitively, and "application/" may be omitted when no other
// '/' appears.
func MediaTypeEqual(got, want string) bool {
	return strings.EqualFold(stripApplication(got), stripApplication(want))
}

func stripApplication(t string) string {
	const p = "application/"
	if len(t) > len(p) && strings.EqualFold(t[:len(p)], p) && !strings.Contains(t[len(p):], "/") {
		return t[len(p):]
	}
	return t
}
