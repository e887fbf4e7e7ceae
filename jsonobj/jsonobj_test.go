package jsonobj

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
		ms, err := Parse([]byte(tt.in), nil)
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
			if m.Name != tt.names[i] {
				t.Errorf("parseObject(%q)[%d] = %q, want %q", tt.in, i, m.Name, tt.names[i])
			}
			if !json.Valid(m.Raw) || string(m.Raw) != string(whole[m.Name]) {
				t.Errorf("parseObject(%q)[%q] raw = %q, encoding/json %q", tt.in, m.Name, m.Raw, whole[m.Name])
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
		sec, nsec, ok := NumericDate([]byte(tt.in))
		if ok != tt.ok || ok && (sec != tt.sec || nsec != tt.nsec) {
			t.Errorf("numericDate(%s) = %d, %d, %v; want %d, %d, %v", tt.in, sec, nsec, ok, tt.sec, tt.nsec, tt.ok)
		}
	}
}

// TestParseLimits: more than MaxMembers members, and a duplicate after
// escaping, are refused with their own errors; a reused buffer is
// overwritten, not appended to.
func TestParseLimits(t *testing.T) {
	var b strings.Builder
	b.WriteString("{")
	for i := range MaxMembers + 1 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "%q:%d", fmt.Sprint("m", i), i)
	}
	b.WriteString("}")
	if _, err := Parse([]byte(b.String()), nil); !errors.Is(err, ErrMembers) {
		t.Errorf("%d members: %v, want ErrMembers", MaxMembers+1, err)
	}
	if _, err := Parse([]byte(`{"a":1,"\u0061":2}`), nil); !errors.Is(err, ErrDuplicate) {
		t.Errorf("escaped duplicate: %v, want ErrDuplicate", err)
	}
	buf := Object{{Name: "stale"}}
	got, err := Parse([]byte(`{"x":1}`), buf)
	if err != nil || len(got) != 1 || got.Get("x") == nil || got.Get("stale") != nil {
		t.Errorf("reused buffer: %v %v", got, err)
	}
}

func TestStrings(t *testing.T) {
	if l, ok := StringOrArray([]byte(`"a"`)); !ok || len(l) != 1 || l[0] != "a" {
		t.Errorf("string: %v %v", l, ok)
	}
	if l, ok := StringOrArray([]byte(`["a","b"]`)); !ok || len(l) != 2 {
		t.Errorf("array: %v %v", l, ok)
	}
	for _, bad := range []string{`1`, `["a",1]`, `{"a":"b"}`, `null`} {
		if _, ok := StringOrArray([]byte(bad)); ok {
			t.Errorf("StringOrArray(%s) accepted", bad)
		}
	}
	if s, ok := Unquote([]byte(`"a\"b"`)); !ok || s != `a"b` {
		t.Errorf("Unquote escaped: %q %v", s, ok)
	}
}

func TestParseDeep(t *testing.T) {
	nest := func(n int, inner string) string {
		return strings.Repeat(`{"a":`, n-1) + inner + strings.Repeat(`}`, n-1)
	}
	var many strings.Builder
	many.WriteString(`{"x":{`)
	for i := range 20 {
		fmt.Fprintf(&many, `"m%d":1,`, i)
	}
	many.WriteString(`"m17":2}}`)
	tests := []struct {
		in  string
		err error
	}{
		{`{"a":{"b":1,"c":[{"d":1},{"d":2}]}}`, nil},
		{`{"a":{"b":1,"b":2}}`, ErrDuplicate},
		{`{"a":{"b":1,"\u0062":2}}`, ErrDuplicate},
		{`{"a":[1,{"b":1,"b":2}]}`, ErrDuplicate},
		{`{"a":{"b":1,"B":2}}`, nil},
		{many.String(), ErrDuplicate},
		{nest(MaxDepth, `{}`), nil},
		{nest(MaxDepth+1, `{}`), ErrDepth},
		{`{"a":` + strings.Repeat(`[`, MaxDepth) + strings.Repeat(`]`, MaxDepth) + `}`, ErrDepth},
		{`{"a":` + strings.Repeat(`[`, MaxDepth-1) + strings.Repeat(`]`, MaxDepth-1) + `}`, nil},
		{`{"a":1,"a":2}`, ErrDuplicate},
		{`[{"a":1}]`, ErrMalformed},
		{"{\"a\":\"\xff\"}", ErrMalformed},
		{`{"a":{"b":1}`, ErrMalformed},
	}
	for _, tc := range tests {
		obj, err := ParseDeep([]byte(tc.in), nil)
		if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("ParseDeep(%.60q) = %v, want %v", tc.in, err, tc.err)
		}
		if err == nil {
			want, _ := Parse([]byte(tc.in), nil)
			if fmt.Sprint(obj) != fmt.Sprint(want) {
				t.Errorf("ParseDeep(%.60q) = %v, Parse %v", tc.in, obj, want)
			}
		}
		if err := ValidDeep([]byte(tc.in)); !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("ValidDeep(%.60q) = %v, want %v", tc.in, err, tc.err)
		}
	}
}

func TestCheckValue(t *testing.T) {
	for in, want := range map[string]error{
		`1`: nil, `"a"`: nil, `null`: nil, `[]`: nil, `{}`: nil,
		`[{"a":1},{"a":1}]`:        nil,
		`[{"a":1,"a":1}]`:          ErrDuplicate,
		`{"a":{"b":1,"\u0062":2}}`: ErrDuplicate,
		strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth):     nil,
		strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1): ErrDepth,
		`[1,]`: ErrMalformed, ``: ErrMalformed, "\"\xff\"": ErrMalformed,
	} {
		if err := CheckValue([]byte(in)); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Errorf("CheckValue(%.40q) = %v, want %v", in, err, want)
		}
	}
}
