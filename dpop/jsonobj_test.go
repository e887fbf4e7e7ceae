package dpop

import (
	"encoding/json"
	"testing"
)

func TestParseObject(t *testing.T) {
	tests := []struct {
		in    string
		names []string // nil = error
	}{
		{`{}`, []string{}},
		{` { "a" : 1 , "b":"x" } `, []string{"a", "b"}},
		{`{"a":{"b":[1,"]}",{"c":"}"}]},"d":null}`, []string{"a", "d"}},
		{`{"a\"b":true,"\u00e9":false}`, []string{`a"b`, "é"}},
		{`{"a":1,"a":2}`, nil},
		{`{"a":1,"\u0061":2}`, nil},
		{`{"a":1,"A":2}`, []string{"a", "A"}},
		{`[]`, nil},
		{`"a"`, nil},
		{`{"a":1}x`, nil},
		{`{"a":1,}`, nil},
		{`{"a"}`, nil},
		{``, nil},
		{"{\"a\":\"\xff\"}", nil},
	}
	for _, tt := range tests {
		ms, err := parseObject([]byte(tt.in), nil)
		if tt.names == nil {
			if err == nil {
				t.Errorf("parseObject(%q) = %v, want error", tt.in, ms)
			}
			continue
		}
		if err != nil || len(ms) != len(tt.names) {
			t.Errorf("parseObject(%q) = %v, %v; want %q", tt.in, ms, err, tt.names)
			continue
		}
		var whole map[string]json.RawMessage
		if err := json.Unmarshal([]byte(tt.in), &whole); err != nil {
			t.Fatal(err)
		}
		for i, m := range ms {
			if m.name != tt.names[i] {
				t.Errorf("parseObject(%q)[%d] = %q, want %q", tt.in, i, m.name, tt.names[i])
			}
			if !json.Valid(m.raw) || string(m.raw) != string(whole[m.name]) {
				t.Errorf("parseObject(%q)[%q] raw = %q, encoding/json %q", tt.in, m.name, m.raw, whole[m.name])
			}
		}
	}
}

func TestNumericDate(t *testing.T) {
	tests := []struct {
		in        string
		sec, nsec int64
		ok        bool
	}{
		{"1562262616", 1562262616, 0, true},
		{"1562262616.5", 1562262616, 500000000, true},
		{"1.5e9", 1500000000, 0, true},
		{"0", 0, 0, true},
		{"-1", 0, 0, false},
		{`"1562262616"`, 0, 0, false},
		{"null", 0, 0, false},
		{"1e300", 0, 0, false},
		{"99999999999999999999", 0, 0, false},
	}
	for _, tt := range tests {
		sec, nsec, ok := numericDate([]byte(tt.in))
		if ok != tt.ok || ok && (sec != tt.sec || nsec != tt.nsec) {
			t.Errorf("numericDate(%s) = %d, %d, %v; want %d, %d, %v", tt.in, sec, nsec, ok, tt.sec, tt.nsec, tt.ok)
		}
	}
}
