package identity

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Argon2Params are the argon2id cost parameters used for new password
// hashes. The zero value of a field means its default.
type Argon2Params struct {
	Time      uint32 // iterations; default 2
	MemoryKiB uint32 // memory in KiB; default 19456 (19 MiB, OWASP minimum for t=2)
	Threads   uint8  // parallelism; default 1
}

// Default argon2id parameters (OWASP Password Storage Cheat Sheet: m=19 MiB,
// t=2, p=1).
const (
	DefaultArgon2Time      = 2
	DefaultArgon2MemoryKiB = 19 * 1024
	DefaultArgon2Threads   = 1
)

const (
	saltLen = 16 // bytes of random salt per hash
	keyLen  = 32 // bytes of derived key

	// Bounds accepted when parsing a PHC string, so that a corrupted or
	// planted hash cannot make verification allocate gigabytes or spin.
	maxPHCMemoryKiB = 4 * 1024 * 1024 // 4 GiB
	maxPHCTime      = 64
	minPHCSaltLen   = 8
	minPHCKeyLen    = 16
	maxPHCKeyLen    = 128
	maxPHCSaltLen   = 64

	// maxPasswordBytes bounds what a policy accepts; longer input buys no
	// security and only costs hashing time.
	maxPasswordBytes = 1024
)

// ErrMalformedHash is returned by VerifyPassword for a string that is not
// an argon2id PHC string this package can verify.
var ErrMalformedHash = errors.New("identity: malformed password hash")

func (p Argon2Params) withDefaults() Argon2Params {
	if p.Time == 0 {
		p.Time = DefaultArgon2Time
	}
	if p.MemoryKiB == 0 {
		p.MemoryKiB = DefaultArgon2MemoryKiB
	}
	if p.Threads == 0 {
		p.Threads = DefaultArgon2Threads
	}
	return p
}

func (p Argon2Params) validate() error {
	if p.Time < 1 || p.Time > maxPHCTime {
		return fmt.Errorf("identity: argon2 time must be 1..%d, got %d", maxPHCTime, p.Time)
	}
	if p.Threads < 1 {
		return errors.New("identity: argon2 threads must be at least 1")
	}
	if p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > maxPHCMemoryKiB {
		return fmt.Errorf("identity: argon2 memory must be %d..%d KiB, got %d", 8*uint32(p.Threads), maxPHCMemoryKiB, p.MemoryKiB)
	}
	return nil
}

// HashPassword hashes password with argon2id under p (zero fields take the
// defaults) and a fresh random salt, and returns a PHC string:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
//
// with salt and hash in unpadded standard base64.
func HashPassword(p Argon2Params, password string) (string, error) {
	p = p.withDefaults()
	if err := p.validate(); err != nil {
		return "", err
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, keyLen)
	return encodePHC(p, salt, key), nil
}

func encodePHC(p Argon2Params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.MemoryKiB, p.Time, p.Threads,
		base64.RawStdEncoding.EncodeToString(salt),
		base64.RawStdEncoding.EncodeToString(key))
}

// phc is a parsed argon2id PHC string.
type phc struct {
	params Argon2Params
	salt   []byte
	key    []byte
}

// parsePHC parses and bounds-checks an argon2id PHC string. It accepts only
// the canonical form HashPassword produces (parameters in m,t,p order, no
// optional keyid/data fields, unpadded base64).
func parsePHC(s string) (*phc, error) {
	parts := strings.Split(s, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, hash
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return nil, ErrMalformedHash
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return nil, ErrMalformedHash
	}
	kv := strings.Split(parts[3], ",")
	if len(kv) != 3 {
		return nil, ErrMalformedHash
	}
	var vals [3]uint64
	for i, name := range []string{"m", "t", "p"} {
		k, v, ok := strings.Cut(kv[i], "=")
		if !ok || k != name || v == "" || (len(v) > 1 && v[0] == '0') {
			return nil, ErrMalformedHash
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, ErrMalformedHash
		}
		vals[i] = n
	}
	if vals[2] > 255 {
		return nil, ErrMalformedHash
	}
	p := Argon2Params{MemoryKiB: uint32(vals[0]), Time: uint32(vals[1]), Threads: uint8(vals[2])}
	if p.validate() != nil {
		return nil, ErrMalformedHash
	}
	salt, err := base64.RawStdEncoding.Strict().DecodeString(parts[4])
	if err != nil || len(salt) < minPHCSaltLen || len(salt) > maxPHCSaltLen {
		return nil, ErrMalformedHash
	}
	key, err := base64.RawStdEncoding.Strict().DecodeString(parts[5])
	if err != nil || len(key) < minPHCKeyLen || len(key) > maxPHCKeyLen {
		return nil, ErrMalformedHash
	}
	return &phc{params: p, salt: salt, key: key}, nil
}

// VerifyPassword reports whether password matches the argon2id PHC string
// phc. The comparison of derived keys is constant-time. A string that is
// not a well-formed argon2id PHC string yields (false, ErrMalformedHash)
// without any hashing.
func VerifyPassword(phcString, password string) (bool, error) {
	h, err := parsePHC(phcString)
	if err != nil {
		return false, err
	}
	return h.verify(password), nil
}

func (h *phc) verify(password string) bool {
	got := argon2.IDKey([]byte(password), h.salt, h.params.Time, h.params.MemoryKiB, h.params.Threads, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(got, h.key) == 1
}

// needsRehash reports whether a hash made with h should be replaced by one
// made with current parameters.
func (h *phc) needsRehash(current Argon2Params) bool {
	return h.params != current || len(h.key) != keyLen || len(h.salt) != saltLen
}

// commonPasswords is a short deny list of the most frequent leaked
// passwords that satisfy a 10-character minimum. It is a floor, not a
// breach corpus.
var commonPasswords = map[string]bool{
	"1234567890": true, "0123456789": true, "0987654321": true, "1111111111": true,
	"12345678910": true, "123456789a": true, "a123456789": true, "1q2w3e4r5t": true,
	"qwertyuiop": true, "password12": true, "password123": true, "password1234": true,
	"passw0rd123": true, "iloveyou12": true, "qwerty1234": true, "qwerty12345": true,
	"1qaz2wsx3edc": true, "zaq12wsxcde3": true, "abcdefghij": true, "abc1234567": true,
	"letmein123": true, "welcome123": true, "changeme123": true, "administrator": true,
	"admin12345": true, "adminadmin": true, "p@ssw0rd123": true, "football123": true,
	"baseball123": true, "sunshine123": true, "princess123": true, "dragon1234": true,
	"monkey1234": true, "superman123": true, "trustno1234": true, "qwertyuiop123": true,
}

// checkPasswordPolicy applies the password policy (NIST SP 800-63B style:
// length over composition rules). The error never contains the password.
func checkPasswordPolicy(password string, minLen int, username, email string) error {
	if !utf8.ValidString(password) {
		return fmt.Errorf("%w: not valid UTF-8", ErrWeakPassword)
	}
	if n := utf8.RuneCountInString(password); n < minLen {
		return fmt.Errorf("%w: must be at least %d characters", ErrWeakPassword, minLen)
	}
	if len(password) > maxPasswordBytes {
		return fmt.Errorf("%w: must be at most %d bytes", ErrWeakPassword, maxPasswordBytes)
	}
	for _, r := range password {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: must not contain control characters", ErrWeakPassword)
		}
	}
	lower := strings.ToLower(password)
	if commonPasswords[lower] {
		return fmt.Errorf("%w: too common", ErrWeakPassword)
	}
	first, _ := utf8.DecodeRuneInString(password)
	if strings.Trim(password, string(first)) == "" {
		return fmt.Errorf("%w: must not repeat a single character", ErrWeakPassword)
	}
	if username != "" && strings.Contains(lower, strings.ToLower(username)) && len(username) >= 4 {
		return fmt.Errorf("%w: must not contain the username", ErrWeakPassword)
	}
	if email != "" && strings.EqualFold(password, email) {
		return fmt.Errorf("%w: must not be the email address", ErrWeakPassword)
	}
	return nil
}
