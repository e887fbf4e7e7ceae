package rs

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"unicode/utf8"
)

// maxMembers bounds the members of any JSON object looked into (JOSE
// header, SET claims, subjects, events), which keeps the duplicate check
// cheap on hostile input.
const maxMembers = 64

var (
	errJSON      = errors.New("malformed JSON object")
	errDuplicate = errors.New("duplicate JSON member")
	errMembers   = errors.New("too many JSON members")
)

// member is one member of a JSON object: its unescaped name and its raw,
// still encoded value.
type member struct {
	name string
	raw  []byte
}

// object is the members of one JSON object, in input order.
type object []member

// get returns the raw value of name, or nil.
func (o object) get(name string) []byte {
	for _, m := range o {
		if m.name == name {
			return m.raw
		}
	}
	return nil
}

// parseObject strictly splits a JSON object into its members: valid UTF-8,
// valid JSON, an object at the top, member names unique after unescaping
// and compared case-sensitively. A duplicate member is rejected instead of
// "last one wins", so that no two JSON parsers can read a signed document
// differently (RFC 7515 §5.2, RFC 8725 §3.8-style parser differentials).
func parseObject(data []byte) (object, error) {
	if !utf8.Valid(data) || !json.Valid(data) {
		return nil, errJSON
	}
	i := skipWS(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, errJSON
	}
	i = skipWS(data, i+1)
	var dst object
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
// string that starts at data[i] == '"', or -1.
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

// scanValue returns the index just past the JSON value starting at
// data[i], or -1. The input is already known to be valid JSON.
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

// unquote decodes a raw JSON string (with its quotes); ok is false for any
// other JSON value.
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

// stringArray decodes a raw JSON array of strings.
func stringArray(raw []byte) ([]string, bool) {
	if len(raw) == 0 || raw[0] != '[' {
		return nil, false
	}
	var l []string
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, false
	}
	return l, true
}

// stringOrArray decodes a JSON string or an array of strings (the "aud"
// claim, RFC 7519 §4.1.3).
func stringOrArray(raw []byte) ([]string, bool) {
	if s, ok := unquote(raw); ok {
		return []string{s}, true
	}
	return stringArray(raw)
}

// maxNumericDate is far beyond any sane time (year ~36812) and keeps
// arithmetic on seconds from overflowing.
const maxNumericDate = 1 << 40

// numericDate parses a JSON number as an RFC 7519 NumericDate in whole
// seconds (a fraction is truncated). Negative, non-finite and absurdly
// large values are rejected.
func numericDate(raw []byte) (int64, bool) {
	if len(raw) == 0 || raw[0] < '0' || raw[0] > '9' {
		return 0, false
	}
	if v, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return v, v <= maxNumericDate
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return 0, false
	}
	return int64(f), true
}
