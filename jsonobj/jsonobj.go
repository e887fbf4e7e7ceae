// Package jsonobj is a strict reader of JSON objects for security
// documents: JOSE headers and JWKs (package jws), DPoP proof claims, access
// token and Security Event Token claims, SSF poll responses, posture
// reports. It splits an object into its members without decoding them and
// refuses anything two mainstream JSON parsers might read differently:
// invalid UTF-8, duplicate member names (compared after unescaping, so
// "a" and "\u0061" are the same name), more than MaxMembers members.
// Member names are compared exactly (case-sensitively).
//
// Parse checks the top-level object, whose members its caller reads;
// ParseDeep also checks every nested object, for documents whose other
// members someone else may read (a JOSE header's extensions).
//
// It depends on the standard library only; FuzzParse checks it against
// encoding/json.
package jsonobj

import (
	"bytes"
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
	if !utf8.Valid(data) || !json.Valid(data) {
		return nil, ErrMalformed
	}
	return parseValid(data, dst)
}

// parseValid is Parse for data already known to be valid UTF-8 JSON.
func parseValid(data []byte, dst Object) (Object, error) {
	dst = dst[:0]
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

// MaxDepth bounds the nesting of arrays and objects ParseDeep and
// ValidDeep accept.
const MaxDepth = 16

// ErrDepth: nested deeper than MaxDepth.
var ErrDepth = errors.New("JSON nested too deeply")

// ParseDeep is Parse for a document whose nested values others may read
// too (a JOSE header's extension members, a JWK, a posture report): every
// object at every depth must have unique member names (compared after
// unescaping), and nesting is at most MaxDepth deep. Only the top-level
// object is bounded by MaxMembers.
func ParseDeep(data []byte, dst Object) (Object, error) {
	if err := ValidDeep(data); err != nil {
		return nil, err
	}
	return parseValid(data, dst)
}

// ValidDeep checks what ParseDeep requires beyond Parse's top-level
// rules: valid UTF-8 JSON, a top-level object, unique names in every
// object, at most MaxDepth levels. It returns ErrMalformed, ErrDuplicate
// or ErrDepth.
func ValidDeep(data []byte) error {
	if !utf8.Valid(data) || !json.Valid(data) {
		return ErrMalformed
	}
	i := SkipWS(data, 0)
	if i >= len(data) || data[i] != '{' {
		return ErrMalformed
	}
	_, err := walkValue(data, i, 0)
	return err
}

// CheckValue is ValidDeep for any JSON value, such as a member's raw
// value from Parse: valid UTF-8 JSON whose objects, at every depth, have
// unique member names, nested at most MaxDepth deep.
func CheckValue(raw []byte) error {
	if !utf8.Valid(raw) || !json.Valid(raw) {
		return ErrMalformed
	}
	i := SkipWS(raw, 0)
	switch raw[i] {
	case '{', '[':
		_, err := walkValue(raw, i, 0)
		return err
	}
	return nil
}

// walkValue walks the valid JSON value at data[i] and returns the index
// just past it; it checks depth and duplicate member names.
func walkValue(data []byte, i, depth int) (int, error) {
	switch data[i] {
	case '{':
		return walkObject(data, i, depth+1)
	case '[':
		if depth+1 > MaxDepth {
			return 0, ErrDepth
		}
		i = SkipWS(data, i+1)
		if data[i] == ']' {
			return i + 1, nil
		}
		for {
			end, err := walkValue(data, i, depth+1)
			if err != nil {
				return 0, err
			}
			i = SkipWS(data, end)
			if data[i] == ']' {
				return i + 1, nil
			}
			i = SkipWS(data, i+1) // ','
		}
	default:
		return scanValue(data, i), nil
	}
}

func walkObject(data []byte, i, depth int) (int, error) {
	if depth > MaxDepth {
		return 0, ErrDepth
	}
	i = SkipWS(data, i+1)
	if data[i] == '}' {
		return i + 1, nil
	}
	// Names are compared in a small array, then in a map once there are
	// many, so that a hostile object cannot make the check quadratic.
	var small [16][]byte
	names := small[:0]
	var many map[string]struct{}
	for {
		end := ScanString(data, i)
		name, ok := unescapeName(data[i:end])
		if !ok {
			return 0, ErrMalformed
		}
		if many != nil {
			if _, dup := many[string(name)]; dup {
				return 0, ErrDuplicate
			}
			many[string(name)] = struct{}{}
		} else {
			for _, n := range names {
				if bytes.Equal(n, name) {
					return 0, ErrDuplicate
				}
			}
			names = append(names, name)
			if len(names) == len(small) {
				many = make(map[string]struct{}, 2*len(small))
				for _, n := range names {
					many[string(n)] = struct{}{}
				}
			}
		}
		i = SkipWS(data, end)
		i = SkipWS(data, i+1) // ':'
		vend, err := walkValue(data, i, depth)
		if err != nil {
			return 0, err
		}
		i = SkipWS(data, vend)
		if data[i] == '}' {
			return i + 1, nil
		}
		i = SkipWS(data, i+1) // ','
	}
}

// unescapeName returns the content of the quoted JSON string raw,
// unescaped; without escapes it is a subslice of raw (no allocation).
func unescapeName(raw []byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return nil, false
	}
	body := raw[1 : len(raw)-1]
	if bytes.IndexByte(body, '\\') < 0 {
		return body, true
	}
	s, ok := Unquote(raw)
	return []byte(s), ok
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
