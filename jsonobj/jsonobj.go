// Package jsonobj is a strict reader of JSON objects for security
// documents: JOSE headers and JWKs (package jws), DPoP proof claims, access
// token and Security Event Token claims, SSF poll responses, posture
// reports. It splits an object into its members without decoding them and
// refuses anything two mainstream JSON parsers might read differently:
// invalid UTF-8, duplicate member names (compared after unescaping, so
// "a" and "\u0061" are the same name), more than MaxMembers members.
// Member names are compared exactly (case-sensitively).
//
// It depends on the standard library only; FuzzParse checks it against
// encoding/json.
package jsonobj

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"unicode/utf8"
)

// MaxMembers bounds the members of any JSON object looked into (JOSE
// headers, JWKs, claims, SET subjects and events), which keeps the
// duplicate check cheap on hostile input.
const MaxMembers = 64

// Errors of Parse.
var (
	ErrMalformed = errors.New("malformed JSON object")
	ErrDuplicate = errors.New("duplicate JSON member")
	ErrMembers   = errors.New("too many JSON members")
)

// Member is one member of a JSON object: its unescaped name and its raw,
// still encoded value.
type Member struct {
	Name string
	Raw  []byte
}

// Object is the members of one JSON object, in input order.
type Object []Member

// Get returns the raw value of name, or nil.
func (o Object) Get(name string) []byte {
	for _, m := range o {
		if m.Name == name {
			return m.Raw
		}
	}
	return nil
}

// Parse strictly splits a JSON object into its members, appending them to
// dst[:0] (pass a reused buffer on hot paths, or nil). The input must be
// valid UTF-8 and valid JSON whose top-level value is an object; member
// names are compared exactly (case-sensitively) after unescaping and must
// be unique: a duplicate is rejected instead of "last one wins", so that no
// two JSON parsers can read a signed document differently (RFC 7515 §5.2,
// RFC 8725 §3.8-style parser differentials). Values are returned raw;
// nested objects are not inspected.
func Parse(data []byte, dst Object) (Object, error) {
	dst = dst[:0]
	if !utf8.Valid(data) || !json.Valid(data) {
		return nil, ErrMalformed
	}
	i := SkipWS(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, ErrMalformed
	}
	i = SkipWS(data, i+1)
	if i < len(data) && data[i] == '}' {
		return dst, nil
	}
	for {
		if i >= len(data) || data[i] != '"' {
			return nil, ErrMalformed
		}
		end := ScanString(data, i)
		if end < 0 {
			return nil, ErrMalformed
		}
		name, ok := Unquote(data[i:end])
		if !ok {
			return nil, ErrMalformed
		}
		i = SkipWS(data, end)
		if i >= len(data) || data[i] != ':' {
			return nil, ErrMalformed
		}
		i = SkipWS(data, i+1)
		vend := scanValue(data, i)
		if vend < 0 {
			return nil, ErrMalformed
		}
		for _, m := range dst {
			if m.Name == name {
				return nil, ErrDuplicate
			}
		}
		if len(dst) >= MaxMembers {
			return nil, ErrMembers
		}
		dst = append(dst, Member{Name: name, Raw: data[i:vend]})
		i = SkipWS(data, vend)
		if i >= len(data) {
			return nil, ErrMalformed
		}
		switch data[i] {
		case ',':
			i = SkipWS(data, i+1)
		case '}':
			return dst, nil
		default:
			return nil, ErrMalformed
		}
	}
}

// SkipWS returns the index of the first non-whitespace byte at or after i.
func SkipWS(data []byte, i int) int {
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

// ScanString returns the index just past the closing quote of the JSON
// string that starts at data[i] == '"', or -1.
func ScanString(data []byte, i int) int {
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
		return ScanString(data, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				end := ScanString(data, j)
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

// Unquote decodes a raw JSON string (with its quotes); ok is false for any
// other JSON value.
func Unquote(raw []byte) (string, bool) {
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

// StringArray decodes a raw JSON array of strings.
func StringArray(raw []byte) ([]string, bool) {
	if len(raw) == 0 || raw[0] != '[' {
		return nil, false
	}
	var l []string
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, false
	}
	return l, true
}

// StringOrArray decodes a JSON string or an array of strings (the "aud"
// claim, RFC 7519 §4.1.3).
func StringOrArray(raw []byte) ([]string, bool) {
	if s, ok := Unquote(raw); ok {
		return []string{s}, true
	}
	return StringArray(raw)
}

// MaxNumericDate is far beyond any sane time (year ~36812) and keeps
// arithmetic on seconds from overflowing.
const MaxNumericDate = 1 << 40

// NumericDate parses a JSON number as an RFC 7519 NumericDate: whole
// seconds and the fraction's nanoseconds. Negative, non-finite and
// absurdly large values are rejected.
func NumericDate(raw []byte) (sec, nsec int64, ok bool) {
	if len(raw) == 0 || raw[0] < '0' || raw[0] > '9' {
		return 0, 0, false
	}
	if v, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		if v > MaxNumericDate {
			return 0, 0, false
		}
		return v, 0, true
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > MaxNumericDate {
		return 0, 0, false
	}
	sec = int64(f)
	return sec, int64((f - float64(sec)) * 1e9), true
}
