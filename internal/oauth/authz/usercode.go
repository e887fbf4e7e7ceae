package authz

import (
	"crypto/rand"
	"strings"
	"unicode"
)

// The device authorization grant's user codes (RFC 8628 §6.1): the
// device authorization endpoint draws them, the verification page reads
// what a person typed.

// VerificationPath is the verification URI's path: the page where the
// user types the code.
const VerificationPath = "/device"

const (
	// userCodeAlphabet is RFC 8628 §6.1's base-20 set: no vowels (no
	// words), no digits or letters that are easily confused.
	userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"
	userCodeLen      = 8
)

// NewUserCode draws a user code uniformly from the base-20 alphabet
// (rejection sampling: bytes >= 240 are discarded): 8 characters, about
// 34.5 bits.
func NewUserCode() string {
	out := make([]byte, 0, userCodeLen)
	var buf [16]byte
	for len(out) < userCodeLen {
		if _, err := rand.Read(buf[:]); err != nil {
			panic(err) // crypto/rand does not fail on supported platforms
		}
		for _, b := range buf {
			if b < 240 && len(out) < userCodeLen {
				out = append(out, userCodeAlphabet[int(b)%len(userCodeAlphabet)])
			}
		}
	}
	return string(out)
}

// NormalizeUserCode turns what a person typed into the stored form: upper
// case, without dashes or spaces (RFC 8628 §6.1).
func NormalizeUserCode(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || unicode.IsSpace(r) {
			return -1
		}
		return unicode.ToUpper(r)
	}, s)
}

// ValidUserCode reports whether a normalised code can be a user code.
func ValidUserCode(s string) bool {
	if len(s) != userCodeLen {
		return false
	}
	for i := range len(s) {
		if !strings.ContainsRune(userCodeAlphabet, rune(s[i])) {
			return false
		}
	}
	return true
}

// FormatUserCode shows a normalised code as XXXX-XXXX.
func FormatUserCode(s string) string {
	if len(s) != userCodeLen {
		return s
	}
	return s[:4] + "-" + s[4:]
}
