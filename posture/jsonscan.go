package posture

import (
	"bytes"
	"encoding/json"

	"github.com/ward-idp/ward/jsonobj"
)

// The report's claims are checked in one cheap pass and decoded in a
// second, without reflection:
//
//  1. jsonobj.ValidDeep: valid UTF-8, valid JSON, a top-level object,
//     nesting at most jsonobj.MaxDepth deep and no object anywhere with a
//     member name twice, compared after unescaping (encoding/json would
//     silently keep the last, which invites parser differentials);
//  2. objIter walks the members of one object, whose syntax pass 1 has
//     vouched for, and the typed decoders take the values they know,
//     rejecting every other name and every mistyped value.

func skipWS(data []byte, i int) int { return jsonobj.SkipWS(data, i) }

// scanString returns the index just past the closing quote of the valid
// JSON string starting at data[i] == '"' (len(data) if it is not closed,
// which the validity check before rules out).
func scanString(data []byte, i int) int {
	if end := jsonobj.ScanString(data, i); end >= 0 {
		return end
	}
	return len(data)
}

// scanScalar returns the index just past the number or literal at data[i].
func scanScalar(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return i
		}
		i++
	}
	return i
}

// unescapeName returns the content of the quoted JSON string raw,
// unescaped; without escapes it is a subslice of raw.
func unescapeName(raw []byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return nil, false
	}
	body := raw[1 : len(raw)-1]
	if bytes.IndexByte(body, '\\') < 0 {
		return body, true
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, false
	}
	return []byte(s), true
}

// objIter walks the members of an object that jsonobj.ValidDeep accepted
// (as a whole or as part of a larger document).
type objIter struct {
	b    []byte
	i    int
	name []byte // unescaped name of the current member
	val  []byte // raw value of the current member
	done bool
}

// newObjIter starts at obj, which must begin with '{'.
func newObjIter(obj []byte) objIter {
	return objIter{b: obj, i: skipWS(obj, 1)}
}

// next advances to the next member and reports whether there is one.
func (it *objIter) next() bool {
	if it.done || it.i >= len(it.b) || it.b[it.i] == '}' {
		it.done = true
		return false
	}
	end := scanString(it.b, it.i)
	name, ok := unescapeName(it.b[it.i:end])
	if !ok { // cannot happen after jsonobj.ValidDeep
		it.done = true
		return false
	}
	i := skipWS(it.b, end)
	i = skipWS(it.b, i+1) // ':'
	vend := valueEnd(it.b, i)
	it.name, it.val = name, it.b[i:vend]
	i = skipWS(it.b, vend)
	if i < len(it.b) && it.b[i] == ',' {
		i = skipWS(it.b, i+1)
	}
	it.i = i
	return true
}

// key is the current member's name.
func (it *objIter) key() []byte { return it.name }

// valueEnd returns the index just past the valid JSON value at data[i].
func valueEnd(data []byte, i int) int {
	switch data[i] {
	case '"':
		return scanString(data, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(data); j++ {
			switch data[j] {
			case '"':
				j = scanString(data, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return len(data)
	default:
		return scanScalar(data, i)
	}
}

func isNull(raw []byte) bool { return string(raw) == "null" }

// jsonString decodes a raw JSON string value; null is "" (as
// encoding/json has it for a string); a missing value (nil) or any other
// type is not a string.
func jsonString(raw []byte) (string, bool) {
	if isNull(raw) {
		return "", true
	}
	if len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	s, ok := unescapeName(raw)
	return string(s), ok
}

// setString stores a JSON string (null leaves *dst alone).
func setString(dst *string, raw []byte) bool {
	if isNull(raw) {
		return true
	}
	s, ok := jsonString(raw)
	if ok {
		*dst = s
	}
	return ok
}

// setInt stores a JSON integer that fits int64, as encoding/json decodes
// into an int64: no fraction, no exponent (null leaves *dst alone).
func setInt(dst *int64, raw []byte) bool {
	if isNull(raw) {
		return true
	}
	if len(raw) == 0 {
		return false
	}
	neg := raw[0] == '-'
	d := raw
	if neg {
		d = d[1:]
	}
	if len(d) == 0 || len(d) > 19 {
		return false
	}
	var u uint64
	for _, c := range d {
		if c < '0' || c > '9' {
			return false
		}
		u = u*10 + uint64(c-'0')
	}
	switch {
	case !neg && u > 1<<63-1, neg && u > 1<<63:
		return false
	case neg:
		*dst = -int64(u)
	default:
		*dst = int64(u)
	}
	return true
}
