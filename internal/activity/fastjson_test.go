package activity

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"
	"time"
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
		`{"lat":-0,"lon":-33.868800}`, `{"lat":9007199254740993.5,"lon":0.1}`, `{"lat":48.1409,"lon":11.5622}`,
		`{"lat":0.0000000000000000000001,"lon":12345678901234567}`,
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

// TestExactFloat: wherever exactFloat answers, its float64 is
// strconv.ParseFloat's, bit for bit (coordinates as generators and GeoIP
// databases write them, and the edges of its exact range).
func TestExactFloat(t *testing.T) {
	check := func(s string) {
		t.Helper()
		got, ok := exactFloat([]byte(s))
		if !ok {
			return
		}
		want, err := strconv.ParseFloat(s, 64)
		if err != nil || math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("exactFloat(%q) = %v (%#x), ParseFloat: %v (%#x), %v", s, got, math.Float64bits(got), want, math.Float64bits(want), err)
		}
	}
	for _, s := range []string{"0", "-0", "0.0", "-0.000", "1", "48.1409", "-122.4194", "9007199254740991",
		"9007199254740992", "900719925474099.1", "0.1", "0.3", "0.0000000000000000000001", "1.00000000000000000000001",
		"123456789012345678", "1234567890123456789"} {
		check(s)
	}
	// Beyond its exact range it leaves the number to strconv.
	for _, s := range []string{"", "-", ".", "1e5", "1.2.3", "9007199254740992", "12345678901234567890", "1.00000000000000000000001"} {
		if f, ok := exactFloat([]byte(s)); ok {
			t.Fatalf("exactFloat(%q) = %v, want no answer", s, f)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		f := (rng.Float64() - 0.5) * 360
		check(strconv.FormatFloat(f, 'f', rng.IntN(16), 64))
	}
}

// TestSpecialBytes: the eight-byte test finds the byte table's first
// special byte, for every byte value at every position among ordinary and
// special bytes.
func TestSpecialBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 2000; round++ {
		var w [8]byte
		for i := range w {
			w[i] = byte(0x20 + rng.IntN(0x5f))
			if rng.IntN(8) == 0 {
				w[i] = byte(rng.IntN(256))
			}
		}
		for pos := 0; pos < 8; pos++ {
			for v := 0; v < 256; v++ {
				x := w
				x[pos] = byte(v)
				want := 8 // the first special byte
				for i, c := range x {
					if special[c] {
						want = i
						break
					}
				}
				var u uint64
				for i := 7; i >= 0; i-- {
					u = u<<8 | uint64(x[i])
				}
				if got := bits.TrailingZeros64(specialBytes(u)) >> 3; got != want {
					t.Fatalf("specialBytes(% x): first special byte %d, want %d", x, got, want)
				}
			}
		}
	}
}

// TestReaderTimes: the reader's memory of the last time read never lends
// one line's time to another, nor hides a bad time.
func TestReaderTimes(t *testing.T) {
	ts := []string{"2026-12-06T09:30:00Z", "2026-12-06T09:30:00Z", "2026-12-06T09:30:00+02:00", "2026-12-06T09:30:00.5Z",
		"2026-12-06T09:30:0Z", "2026-12-06T09:30:0Z", "2026-12-06T09:30:00.5Z", "2026-12-06T09:30:01Z", "2026-12-06T09:30:00Z"}
	var in bytes.Buffer
	for i, ts := range ts {
		in.WriteString(`{"t":"` + ts + `","id":"e` + strconv.Itoa(i) + `","kind":"signin"}` + "\n")
	}
	rd := NewReader(&in)
	for i, ts := range ts {
		a, err := rd.Next()
		want, werr := time.Parse(time.RFC3339Nano, ts)
		if (err != nil) != (werr != nil) {
			t.Fatalf("line %d (%s): error %v, want %v", i+1, ts, err, werr)
		}
		if err == nil && (!a.Time.Equal(want) || a.Time.String() != want.String()) {
			t.Fatalf("line %d: time %v, want %v", i+1, a.Time, want)
		}
	}
}
