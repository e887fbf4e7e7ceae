package activity

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"
)

// slowDecode is encoding/json's answer, the reference.
func slowDecode(b []byte) (line, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var l line
	if err := dec.Decode(&l); err != nil || dec.More() {
		return line{}, false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return line{}, false
	}
	return l, true
}

// FuzzFastDecode: wherever the fast path answers, encoding/json accepts
// the line too and reads the same values.
func FuzzFastDecode(f *testing.F) {
	a := full()
	b, _ := Marshal(&a)
	f.Add(b)
	for _, s := range []string{
		`{"t":"2026-12-06T09:30:00Z","id":"e","kind":"signin","lat":1,"lon":2}`,
		` { "t" : "x" , "count" : 12 , "mfa" : false , "lat" : -0.5e3 } `,
		`{"T":"x"}`, `{"t":"x","t":"y"}`, `{"t":"\u00e9"}`, `{"t":"é"}`, `{"asn":4294967296}`, `{"lat":01}`,
		`{"count":1.0}`, `{"mfa":null}`, `{"t":"a"} x`, `{}`, `{"lat":1e400}`, "{\"t\":\"\xff\"}", `{"count":-1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		fast, ok := fastDecode(in)
		if !ok {
			return
		}
		slow, sok := slowDecode(in)
		if !sok {
			t.Fatalf("fast path accepted what encoding/json refuses: %q", in)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("fast path read %q differently:\n fast %+v\n slow %+v", in, fast, slow)
		}
	})
}

func TestFastDecodeOwnLines(t *testing.T) {
	a := full()
	b, err := Marshal(&a)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := fastDecode(b); !ok {
		t.Fatalf("the fast path does not read Ward's own line %s", b)
	}
	for _, s := range []string{`{"T":"x"}`, `{"t":"x","t":"y"}`, `{"t":"\u00e9"}`, `{"count":1.0}`, `{"mfa":null}`, `{"t":"a"} x`} {
		if _, ok := fastDecode([]byte(s)); ok {
			t.Errorf("fast path answered %s (encoding/json's business)", s)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	a := full()
	line, _ := Marshal(&a)
	b.Run("fast", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := Parse(line); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, ok := slowDecode(line); !ok {
				b.Fatal("slow")
			}
		}
	})
}
