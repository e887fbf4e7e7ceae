package identity

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
)

func TestHashPasswordRoundTrip(t *testing.T) {
	phcStr, err := HashPassword(testParams, goodPassword)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^\$argon2id\$v=19\$m=64,t=1,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)
	if !re.MatchString(phcStr) {
		t.Fatalf("HashPassword = %q, want PHC form matching %s", phcStr, re)
	}
	if strings.Contains(phcStr, goodPassword) {
		t.Fatal("hash contains the password")
	}
	for _, tc := range []struct {
		pw   string
		want bool
	}{
		{goodPassword, true},
		{goodPassword + " ", false},
		{"Correct horse battery", false},
		{"", false},
	} {
		got, err := VerifyPassword(phcStr, tc.pw)
		if err != nil || got != tc.want {
			t.Errorf("VerifyPassword(%q) = %v, %v; want %v, nil", tc.pw, got, err, tc.want)
		}
	}
	// Salted: the same password hashes differently.
	again, _ := HashPassword(testParams, goodPassword)
	if again == phcStr {
		t.Error("two hashes of the same password are equal; salt not random")
	}
}

func TestHashPasswordDefaults(t *testing.T) {
	if testing.Short() {
		t.Skip("default parameters cost 19 MiB per hash")
	}
	phcStr, err := HashPassword(Argon2Params{}, "x")
	if err != nil {
		t.Fatal(err)
	}
	if want := "$argon2id$v=19$m=19456,t=2,p=1$"; !strings.HasPrefix(phcStr, want) {
		t.Errorf("HashPassword(zero params) = %q, want prefix %q", phcStr, want)
	}
}

func TestHashPasswordRejectsBadParams(t *testing.T) {
	for _, p := range []Argon2Params{
		{Time: 1, MemoryKiB: 7, Threads: 1},
		{Time: 1, MemoryKiB: 16, Threads: 4},
		{Time: 1000, MemoryKiB: 64, Threads: 1},
	} {
		if _, err := HashPassword(p, "x"); err == nil {
			t.Errorf("HashPassword(%+v) succeeded, want error", p)
		}
	}
}

// A known vector computed independently with argon2.IDKey, so the PHC
// layout (field order, base64 flavour) is pinned.
func TestVerifyPasswordKnownVector(t *testing.T) {
	salt := []byte("0123456789abcdef")
	key := argon2.IDKey([]byte("hunter2hunter2"), salt, 1, 64, 1, 32)
	s := encodePHC(Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}, salt, key)
	if want := "$argon2id$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$"; !strings.HasPrefix(s, want) {
		t.Fatalf("encodePHC = %q, want prefix %q", s, want)
	}
	ok, err := VerifyPassword(s, "hunter2hunter2")
	if !ok || err != nil {
		t.Fatalf("VerifyPassword(known vector) = %v, %v", ok, err)
	}
}

func TestVerifyPasswordMalformed(t *testing.T) {
	good, err := HashPassword(testParams, "pw")
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, "$") // "", alg, v, params, salt, hash
	with := func(i int, v string) string {
		p := append([]string(nil), parts...)
		p[i] = v
		return strings.Join(p, "$")
	}
	cases := map[string]string{
		"empty":              "",
		"garbage":            "not a hash",
		"bcrypt":             "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
		"argon2i":            with(1, "argon2i"),
		"argon2d":            with(1, "argon2d"),
		"version 16":         with(2, "v=16"),
		"no version":         strings.Replace(good, "$v=19", "", 1),
		"params order":       with(3, "t=1,m=64,p=1"),
		"params missing":     with(3, "m=64,t=1"),
		"params extra":       with(3, "m=64,t=1,p=1,k=2"),
		"params not numeric": with(3, "m=6x,t=1,p=1"),
		"params leading 0":   with(3, "m=064,t=1,p=1"),
		"params negative":    with(3, "m=-64,t=1,p=1"),
		"time zero":          with(3, "m=64,t=0,p=1"),
		"threads zero":       with(3, "m=64,t=1,p=0"),
		"threads 256":        with(3, "m=4096,t=1,p=256"),
		"memory too small":   with(3, "m=4,t=1,p=1"),
		"memory huge":        with(3, "m=4294967295,t=1,p=1"),
		"time huge":          with(3, "m=64,t=100000,p=1"),
		"salt not base64":    with(4, "!!!!"),
		"salt padded":        with(4, parts[4]+"=="),
		"salt too short":     with(4, "AAAA"),
		"hash not base64":    with(5, "%%%"),
		"hash too short":     with(5, "AAAAAAAA"),
		"hash empty":         with(5, ""),
		"trailing field":     good + "$x",
		"leading text":       "x" + good,
		"data field":         with(3, "m=64,t=1,p=1,data=abc"),
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			ok, err := VerifyPassword(s, "pw")
			if ok || !errors.Is(err, ErrMalformedHash) {
				t.Errorf("VerifyPassword(%q) = %v, %v; want false, ErrMalformedHash", s, ok, err)
			}
		})
	}
}

func TestNeedsRehash(t *testing.T) {
	s, _ := HashPassword(testParams, "pw")
	h, err := parsePHC(s)
	if err != nil {
		t.Fatal(err)
	}
	if h.needsRehash(testParams) {
		t.Error("needsRehash(same params) = true")
	}
	if !h.needsRehash(Argon2Params{Time: 2, MemoryKiB: 64, Threads: 1}) {
		t.Error("needsRehash(other params) = false")
	}
}

func TestPasswordPolicy(t *testing.T) {
	cases := []struct {
		pw      string
		wantErr bool
	}{
		{"short", true},
		{"123456789", true},   // 9 < 10
		{"ünïcödé-ok", false}, // 10 runes, more bytes
		{"1234567890", true},  // common
		{"Password123", true}, // common, case-insensitive
		{"aaaaaaaaaaaa", true},
		{"contains-alice-name", true},
		{"tab\tinside-pw", true},
		{strings.Repeat("long ", 300), true}, // > 1024 bytes
		{"a perfectly fine passphrase", false},
		{"\xff\xfe invalid utf8", true},
	}
	for _, tc := range cases {
		err := checkPasswordPolicy(tc.pw, 10, "alice", "alice@example.com")
		if (err != nil) != tc.wantErr {
			t.Errorf("policy(%q) = %v, want error %v", tc.pw, err, tc.wantErr)
		}
		if err != nil {
			if !errors.Is(err, ErrWeakPassword) {
				t.Errorf("policy(%q) error %v does not wrap ErrWeakPassword", tc.pw, err)
			}
			if strings.Contains(err.Error(), tc.pw) {
				t.Errorf("policy error %q contains the password", err)
			}
		}
	}
}

func BenchmarkHashPassword(b *testing.B) {
	p := Argon2Params{}.withDefaults()
	b.Run(fmt.Sprintf("HashPassword/m=%d,t=%d,p=%d", p.MemoryKiB, p.Time, p.Threads), func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := HashPassword(Argon2Params{}, goodPassword); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The raw crypto cost in the same run, for comparison (convention 10).
	b.Run("raw-argon2.IDKey", func(b *testing.B) {
		b.ReportAllocs()
		salt := make([]byte, saltLen)
		for b.Loop() {
			argon2.IDKey([]byte(goodPassword), salt, p.Time, p.MemoryKiB, p.Threads, keyLen)
		}
	})
	s, _ := HashPassword(Argon2Params{}, goodPassword)
	b.Run("VerifyPassword", func(b *testing.B) {
		for b.Loop() {
			if ok, _ := VerifyPassword(s, goodPassword); !ok {
				b.Fatal("verify failed")
			}
		}
	})
}
