package jsonobj

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// FuzzParse checks Parse against encoding/json: whatever Parse accepts,
// encoding/json reads as the same object (same names, same raw values);
// whatever encoding/json reads as an object of unique names within the
// limits, from valid UTF-8, Parse accepts. ParseDeep is checked against
// a walk over encoding/json's tokens (checkDeep).
func FuzzParse(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"b":"x"}`, `{"a":{"b":[1,"]}"]},"c":null}`, `{"a":1,"a":2}`,
		`{"\u0061":1,"a":2}`, `{"a":"\ud800"}`, `[1]`, ` {"a" : true } `, `{"a":1}x`} {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"a":{"b":1,"b":2}}`))
	f.Add([]byte(`{"a":[{"b":[[{"c":1,"\u0063":2}]]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDeep(t, data)
		got, err := Parse(data, nil)
		var whole map[string]json.RawMessage
		jerr := json.Unmarshal(data, &whole)
		if err == nil {
			if jerr != nil || whole == nil {
				t.Fatalf("Parse accepted %q, encoding/json: %v", data, jerr)
			}
			if len(whole) != len(got) {
				t.Fatalf("%q: %d members, encoding/json %d", data, len(got), len(whole))
			}
			for _, m := range got {
				w, ok := whole[m.Name]
				if !ok || !bytes.Equal(bytes.TrimSpace(w), m.Raw) {
					t.Fatalf("%q: member %q = %q, encoding/json %q", data, m.Name, m.Raw, w)
				}
			}
			return
		}
		if jerr != nil || whole == nil || !utf8.Valid(data) || len(whole) > MaxMembers {
			return
		}
		// encoding/json keeps the last of duplicate names: count the names.
		var names int
		dec := json.NewDecoder(bytes.NewReader(data))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			return
		}
		for dec.More() {
			if _, err := dec.Token(); err != nil {
				return
			}
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				return
			}
			names++
		}
		if names == len(whole) {
			t.Fatalf("Parse refused %q (%v), a valid object of unique names", data, err)
		}
	})
}

// checkDeep compares ParseDeep with a reference walk over encoding/json's
// tokens: it accepts exactly the objects Parse accepts whose nested
// objects all have unique names, nested at most MaxDepth deep.
func checkDeep(t *testing.T, data []byte) {
	t.Helper()
	_, err := ParseDeep(data, nil)
	_, perr := Parse(data, nil)
	if perr != nil {
		if err == nil {
			t.Fatalf("ParseDeep accepted %q, Parse refuses: %v", data, perr)
		}
		return
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	ok := true
	var walk func(depth int) bool // reads one value; false on a duplicate or depth
	walk = func(depth int) bool {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%q: encoding/json: %v", data, err)
		}
		switch tok {
		case json.Delim('{'):
			if depth+1 > MaxDepth {
				return false
			}
			seen := map[string]bool{}
			for dec.More() {
				name, _ := dec.Token()
				if seen[name.(string)] {
					return false
				}
				seen[name.(string)] = true
				if !walk(depth + 1) {
					return false
				}
			}
			dec.Token()
		case json.Delim('['):
			if depth+1 > MaxDepth {
				return false
			}
			for dec.More() {
				if !walk(depth + 1) {
					return false
				}
			}
			dec.Token()
		}
		return true
	}
	ok = walk(0)
	if ok != (err == nil) {
		t.Fatalf("ParseDeep(%q) = %v, reference says unique and shallow = %v", data, err, ok)
	}
}
