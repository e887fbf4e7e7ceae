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
// limits, from valid UTF-8, Parse accepts.
func FuzzParse(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"b":"x"}`, `{"a":{"b":[1,"]}"]},"c":null}`, `{"a":1,"a":2}`,
		`{"\u0061":1,"a":2}`, `{"a":"\ud800"}`, `[1]`, ` {"a" : true } `, `{"a":1}x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
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
