package sqlstore

import (
	"encoding/json"
	"reflect"
	"testing"
)

var codecCases = [][]string{
	nil, {}, {""}, {"pwd"}, {"pwd", "otp", "hwk"}, {"a b", "x-y_z.1:2/3"},
	{`quo"te`}, {`back\slash`}, {"<html>"}, {"a&b"}, {"tab\t"}, {"nl\n"}, {"é"}, {"\u2028"},
	{"\xff"}, {"del\x7f"}, {"a", "", "b"}, {","}, {"]"}, {"[\"x\"]"},
}

// The fast paths write exactly what json.Marshal writes and read back
// what json.Unmarshal reads.
func TestJSONListMatchesEncodingJSON(t *testing.T) {
	for _, v := range codecCases {
		got := jsonList(v)
		if len(v) == 0 {
			if got != "" {
				t.Errorf("jsonList(%q) = %q, want empty", v, got)
			}
			continue
		}
		want, _ := json.Marshal(v)
		if got != string(want) {
			t.Errorf("jsonList(%q) = %s, want %s", v, got, want)
		}
		back, err := unjsonList(got, "test")
		var ref []string
		_ = json.Unmarshal(want, &ref)
		if err != nil || !reflect.DeepEqual(back, ref) {
			t.Errorf("unjsonList(%s) = %q, %v; want %q", got, back, err, ref)
		}
	}
}

func TestJSONMapMatchesEncodingJSON(t *testing.T) {
	for _, m := range []map[string]string{
		nil, {"a": "1"}, {"grant_type": "client_credentials", "scope": "docs.read", "jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},
		{"b": "2", "a": "1", "": ""}, {"k": `v"`}, {"k<": "v"}, {"k": "é"}, {"k": "a&b"},
	} {
		got := jsonMap(m)
		if len(m) == 0 {
			if got != "" {
				t.Errorf("jsonMap(%v) = %q, want empty", m, got)
			}
			continue
		}
		want, _ := json.Marshal(m)
		if got != string(want) {
			t.Errorf("jsonMap(%v) = %s, want %s", m, got, want)
		}
		back, err := unjsonMap(got, "test")
		if err != nil || !reflect.DeepEqual(back, m) {
			t.Errorf("unjsonMap(%s) = %q, %v; want %q", got, back, err, m)
		}
	}
	for _, s := range []string{`{}`, `{"a":"1","a":"2"}`, `{"a":"1",}`, `{"a" :"1"}`, `{"a":1}`, `{"a":"\u0041"}`, `{"a":"1"`} {
		_, ok := decodePlainMap(s)
		var ref map[string]string
		refErr := json.Unmarshal([]byte(s), &ref)
		got, err := unjsonMap(s, "test")
		if (err != nil) != (refErr != nil) || (err == nil && len(ref) > 0 && !reflect.DeepEqual(got, ref)) {
			t.Errorf("unjsonMap(%s) = %q, %v (fast path %v); encoding/json %q, %v", s, got, err, ok, ref, refErr)
		}
	}
}

// FuzzPlainJSON checks the fast paths against encoding/json: a list
// decodePlainList accepts is what json.Unmarshal reads and in the form
// json.Marshal writes, and jsonList and jsonMap write what json.Marshal
// writes.
func FuzzPlainJSON(f *testing.F) {
	for _, v := range codecCases {
		b, _ := json.Marshal(v)
		f.Add(string(b), "pwd", "otp")
	}
	f.Add(`["a",]`, `a"b`, "<")
	f.Add(`["a"x]`, "", "\xff")
	f.Add(`[ "a"]`, "a", "a")
	f.Add(`{"a":"1","b":"2"}`, "a", "b")
	f.Add(`{"a":"1","a":"2"}`, "a", "")
	f.Add(`{"a":"1",}`, "", "")
	f.Fuzz(func(t *testing.T, s, a, b string) {
		if v, ok := decodePlainList(s); ok {
			var ref []string
			if err := json.Unmarshal([]byte(s), &ref); err != nil {
				t.Fatalf("decodePlainList(%q) = %q, but encoding/json rejects it: %v", s, v, err)
			}
			if len(v) != len(ref) || (len(v) > 0 && !reflect.DeepEqual(v, ref)) {
				t.Fatalf("decodePlainList(%q) = %q, encoding/json %q", s, v, ref)
			}
			if out, _ := json.Marshal(v); len(v) > 0 && string(out) != s {
				t.Fatalf("decodePlainList(%q) accepted a form json.Marshal does not write (%s)", s, out)
			}
		}
		if m, ok := decodePlainMap(s); ok {
			var ref map[string]string
			if err := json.Unmarshal([]byte(s), &ref); err != nil {
				t.Fatalf("decodePlainMap(%q) = %q, but encoding/json rejects it: %v", s, m, err)
			}
			if len(m) != len(ref) || (len(m) > 0 && !reflect.DeepEqual(m, ref)) {
				t.Fatalf("decodePlainMap(%q) = %q, encoding/json %q", s, m, ref)
			}
		}
		v := []string{a, b}
		want, _ := json.Marshal(v)
		if got := jsonList(v); got != string(want) {
			t.Fatalf("jsonList(%q) = %s, want %s", v, got, want)
		}
		m := map[string]string{a: b, b: a}
		want, _ = json.Marshal(m)
		if got := jsonMap(m); got != string(want) {
			t.Fatalf("jsonMap(%q) = %s, want %s", m, got, want)
		}
	})
}
