package dpop

import (
	"encoding/json"
	"errors"
	"strconv"
	"unicode/utf8"
)

// maxMembers bounds the number of members of any JSON object the verifier
// looks into (header, jwk, claims). DPoP proofs use fewer than ten; the
// bound keeps the duplicate check cheap on hostile input.
const maxMembers = 64

var (
	errJSON      = errors.New("dpop: malformed JSON object")
	errDuplicate = errors.New("dpop: duplicate JSON member")
	errMembers   = errors.New("dpop: too many JSON members")
)

// member is one member of a JSON object: its unescaped name and its raw,
// still encoded value.
type member struct {
	name string
	raw  []byte
}

// parseObject strictly splits a JSON object into its members. The input
// must be valid UTF-8 and valid JSON whose top-level value is an object;
// member names are compared exactly (case-sensitively) after unescaping and
// must be unique (RFC 7515 §4, RFC 7519 §4: a parser differential on
// duplicate names is a known JOSE attack, so they are rejected). Values are
// returned raw; nested objects are not inspected here.
func parseObject(data []byte, dst []member) ([]member, error) {
	if !utf8.Valid(data) || !json.Valid(data) {
		return nil, errJSON
	}
	i := skipWS(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, errJSON
	}
	i = skipWS(data, i+1)
	if i < len(data) && data[i] == '}' {
		return dst, nil
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return nil, errJSON
		}
		end := scanString(data, i)
		if end < 0 {
			return nil, errJSON
		}
		name, ok := unquote(data[i:end])
		if !ok {
			return nil, errJSON
		}
		i = skipWS(data, end)
		if i >= len(data) || data[i] != ':' {
			return nil, errJSON
		}
		i = skipWS(data, i+1)
		vend := scanValue(data, i)
		if vend < 0 {
			return nil, errJSON
		}
		for _, m := range dst {
			if m.name == name {
				return nil, errDuplicate
			}
		}
		if len(dst) >= maxMembers {
			return nil, errMembers
		}
		dst = append(dst, member{name: name, raw: data[i:vend]})
		i = skipWS(data, vend)
		if i >= len(data) {
			return nil, errJSON
		}
		switch data[i] {
		case ',':
			i = skipWS(data, i+1)
		case '}':
			return dst, nil
		default:
			return nil, errJSON
		}
	}
}

func skipWS(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// scanString returns the index just past the closing quote of the JSON
// string starting at data[i] == '"', or -1.
func scanString(data []byte, i int) int {
	for j := i + 1; j < len(data); j++ {
		switch data[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return -1
}

// scanValue returns the index just past the JSON value starting at data[i],
// or -1. The input is known to be valid JSON.
func scanValue(data []byte, i int) int {
	if i >= len(data) {
		return -1
	}
	switch data[i] {
	case '"':
		return scanString(data, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				end := scanString(data, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	default:
		j := i
		for j < len(data) {
			switch data[j] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return j
			}
			j++
		}
		return j
	}
}

// unquote decodes a raw JSON string value (with its quotes).
func unquote(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	body := raw[1 : len(raw)-1]
	for _, c := range body {
		if c == '\\' {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return "", false
			}
			return s, true
		}
	}
	return string(body), true
}

// numericDate parses a JSON number as an RFC 7519 NumericDate in seconds.
// Fractions are allowed; negative, non-finite and absurdly large values
// are not.
func numericDate(raw []byte) (sec, nsec int64, ok bool) {
	if len(raw) == 0 || !(raw[0] >= '0' && raw[0] <= '9') {
		return 0, 0, false
	}
	const maxSec = 1 << 40 // year ~36812; far beyond any sane iat
	if v, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		if v > maxSec {
			return 0, 0, false
		}
		return v, 0, true
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || f < 0 || f > maxSec || f != f {
		return 0, 0, false
	}
	sec = int64(f)
	nsec = int64((f - float64(sec)) * 1e9)
	return sec, nsec, true
}
