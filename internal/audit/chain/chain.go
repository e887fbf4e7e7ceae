// Package chain makes Ward's audit log tamper-evident.
//
// Every event Ward writes carries a record MAC (HMAC-SHA256 under a key
// sealed under the KEK), computed by the store as it appends the event.
// A sealer in each server process then links the committed events, in
// sequence order, into a SHA-256 hash chain (one link per event in the
// audit_chain table: the chain value after it and whether its MAC was
// valid), and signs checkpoints of the chain with Ward's signing key.
// Verify recomputes the chain from a signed anchor and names the first
// record that was changed, removed or inserted, a checkpoint that does
// not verify, and a tail truncated past the last checkpoint.
//
// The chain follows sequence numbers, which PostgreSQL hands out at
// insert and makes visible at commit: a number missing below visible ones
// is waited for briefly, then filled with an audit.sequence_skipped
// record, an insert that waits for the number's uncommitted holder
// (store.InsertEventAt); so a number can no longer commit once the chain
// passed it, and the sequence numbers of the sealed log are dense. The
// design and what it does not prove are in docs/architecture.md ("The
// tamper-evident audit log") and docs/secops.md.
package chain

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"sync"

	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

// Origins: what the sealer found about an event when it linked it. The
// origin is part of the link's hash.
const (
	// OriginWard: the event's record MAC was valid: Ward wrote it.
	OriginWard = 1
	// OriginLegacy: written before the tamper-evident log existed (at or
	// below the migration's legacy_through, without a MAC).
	OriginLegacy = 2
	// OriginUnknown: no valid record MAC: not written by Ward. Verify
	// reports it as inserted.
	OriginUnknown = 3
)

// HashSize is the size of a chain value.
const HashSize = sha256.Size

// Genesis is the chain value before the first event of a log that has no
// anchor: 32 zero bytes.
var Genesis = make([]byte, HashSize)

// chainDomain separates chain values from every other SHA-256 input.
const chainDomain = "ward-audit-chain-v1\x00"

// Link returns the chain value after an event: SHA-256("ward-audit-
// chain-v1" 0x00 || prev || origin (1 byte) || leaf), leaf being the
// event's store.RecordLeaf (every stored column, its sequence number
// included).
func Link(prev []byte, origin int, leaf [32]byte) []byte {
	var h [HashSize]byte
	linkInto(&h, prev, origin, &leaf)
	return h[:]
}

func linkInto(out *[HashSize]byte, prev []byte, origin int, leaf *[32]byte) {
	var buf [len(chainDomain) + HashSize + 1 + 32]byte
	n := copy(buf[:], chainDomain)
	n += copy(buf[n:], prev)
	buf[n] = byte(origin)
	n++
	n += copy(buf[n:], leaf[:])
	*out = sha256.Sum256(buf[:n])
}

// The record MAC key is a secret of its own, sealed under the KEK like a
// signing key (so a KEK rotation re-seals it and it stays the same): an
// event written before a rotation and sealed after it still verifies.
const (
	recordKeyName = "record-mac"
	// macDomain separates record MACs from other uses of the key.
	macDomain = "ward-audit-mac-v1\x00"
	secretAAD = "ward/audit-secret:"
	keyAAD    = "ward/audit-key:"
)

// SecretAAD is the associated data binding a sealed audit secret to its
// name (store.SealedAuditSecret).
func SecretAAD(name string) []byte { return []byte(secretAAD + name) }

// KeyAAD is the associated data binding a checkpoint key's sealed public
// JWK to its kid (store.SealedAuditKey).
func KeyAAD(kid string) []byte { return []byte(keyAAD + kid) }

// RecordKey returns the record MAC key, creating it (32 random bytes,
// sealed under kek) the first time any process asks.
func RecordKey(ctx context.Context, st store.AuditLog, kek *secret.KEK) ([]byte, error) {
	if kek == nil {
		return nil, errors.New("chain: no key-encryption key")
	}
	sealed, err := st.AuditSecret(ctx, recordKeyName, func() ([]byte, error) {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			return nil, err
		}
		defer clear(k)
		return kek.Seal(k, SecretAAD(recordKeyName))
	})
	if err != nil {
		return nil, fmt.Errorf("chain: record MAC key: %w", err)
	}
	k, err := kek.Open(sealed, SecretAAD(recordKeyName))
	if err != nil {
		return nil, fmt.Errorf("chain: the record MAC key does not open under the key-encryption key: %w", err)
	}
	return k, nil
}

// RecordMAC returns the record MAC function for key:
// HMAC-SHA256(key, "ward-audit-mac-v1" 0x00 || body).
func RecordMAC(key []byte) func(body []byte) []byte {
	pool := sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}
	domain := []byte(macDomain)
	return func(body []byte) []byte {
		h := pool.Get().(hash.Hash)
		h.Reset()
		h.Write(domain)
		h.Write(body)
		sum := h.Sum(make([]byte, 0, sha256.Size))
		pool.Put(h)
		return sum
	}
}

// Configure makes every event st appends from now on carry its record
// MAC, and returns the key. Every process that writes events calls it
// after opening the store (the server, command-line tools).
func Configure(ctx context.Context, st store.AuditLog, kek *secret.KEK) ([]byte, error) {
	key, err := RecordKey(ctx, st, kek)
	if err != nil {
		return nil, err
	}
	st.SetRecordMAC(RecordMAC(key))
	return key, nil
}
