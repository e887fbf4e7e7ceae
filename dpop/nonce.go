package dpop

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"sync/atomic"
	"time"
)

const (
	// DefaultNonceLifetime is how long an HMAC nonce stays valid.
	DefaultNonceLifetime = 5 * time.Minute
	// nonceSkew is how far in the future a nonce timestamp may be, for
	// instances sharing a key with slightly different clocks.
	nonceSkew = time.Minute
	nonceMAC  = 16
	nonceLen  = 8 + nonceMAC
)

// NewHMACNonces returns a stateless NonceSource. A nonce is
// base64url(t || HMAC-SHA256(key, t)[:16]) where t is a big-endian Unix
// time in seconds; it is valid for lifetime (DefaultNonceLifetime if not
// positive) after t. Nonce quantises t to a fifth of the lifetime, so every
// caller in the same interval gets the same value and nonces rotate by
// themselves; a nonce is valid for at least four fifths of the lifetime
// after it is handed out. All instances that share key accept each other's
// nonces. key must be a secret of at least 16 (preferably 32) random bytes;
// NewHMACNonces panics on a shorter key, which is a configuration error.
// now is the clock (time.Now if nil).
func NewHMACNonces(key []byte, lifetime time.Duration, now func() time.Time) NonceSource {
	if len(key) < 16 {
		panic("dpop: HMAC nonce key shorter than 16 bytes")
	}
	if lifetime <= 0 {
		lifetime = DefaultNonceLifetime
	}
	if now == nil {
		now = time.Now
	}
	step := int64(lifetime / time.Second / 5)
	if step < 1 {
		step = 1
	}
	return &hmacNonces{
		key:      append([]byte(nil), key...),
		lifetime: int64(lifetime / time.Second),
		step:     step,
		now:      now,
	}
}

type hmacNonces struct {
	key      []byte
	lifetime int64 // seconds
	step     int64 // seconds
	now      func() time.Time
	cur      atomic.Pointer[cachedNonce]
}

type cachedNonce struct {
	t     int64
	value string
}

// Nonce implements NonceSource.
func (h *hmacNonces) Nonce() string {
	t := h.now().Unix()
	t -= t % h.step
	if c := h.cur.Load(); c != nil && c.t == t {
		return c.value
	}
	var b [nonceLen]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t))
	copy(b[8:], h.mac(b[:8]))
	v := b64Enc.EncodeToString(b[:])
	h.cur.Store(&cachedNonce{t: t, value: v})
	return v
}

// Check implements NonceSource.
func (h *hmacNonces) Check(nonce string) bool {
	now := h.now().Unix()
	// Almost every proof carries the nonce this instance hands out now:
	// it was made here, so its MAC need not be computed again.
	if c := h.cur.Load(); c != nil && nonce == c.value {
		return h.fresh(c.t, now)
	}
	if len(nonce) != b64Enc.EncodedLen(nonceLen) {
		return false
	}
	var b [nonceLen]byte
	if n, err := b64.Decode(b[:], []byte(nonce)); err != nil || n != nonceLen {
		return false
	}
	t := int64(binary.BigEndian.Uint64(b[:8]))
	if !h.fresh(t, now) {
		return false
	}
	return hmac.Equal(b[8:], h.mac(b[:8]))
}

// fresh reports whether a nonce made at t is still valid at now.
func (h *hmacNonces) fresh(t, now int64) bool {
	return t >= 0 && t <= now+int64(nonceSkew/time.Second) && now-t <= h.lifetime
}

func (h *hmacNonces) mac(ts []byte) []byte {
	m := hmac.New(sha256.New, h.key)
	m.Write(ts)
	return m.Sum(nil)[:nonceMAC]
}
