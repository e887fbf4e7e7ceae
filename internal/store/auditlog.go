package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// The tamper-evident audit log (internal/audit/chain) keeps, next to the
// events table, a hash chain over the stored events in sequence order
// (audit_chain), signed checkpoints of it (audit_checkpoints), the public
// keys that signed them (audit_keys) and its secrets (audit_secrets), the
// last two sealed under the KEK. AuditLog is the part of the store it
// uses; every Store implements it.
type AuditLog interface {
	// SetRecordMAC makes every event appended from now on (AppendEvent,
	// the writes that commit pending events, InsertEventAt) carry
	// mac(body) in its mac column, body being EventBody of the event
	// (nil: no MAC, the default). mac must be safe for concurrent use and
	// must not call the store.
	SetRecordMAC(mac func(body []byte) []byte)

	// ScanEventRecords calls fn with the stored events with s.After < Seq
	// <= s.Through (0: no upper bound), in ascending Seq order, each with
	// its chain link if it has one. It reads in pages (no long-lived read
	// transaction, memory bounded) and stops at the first error fn
	// returns, which it returns. The record and its slices are reused:
	// valid only until fn returns.
	ScanEventRecords(ctx context.Context, s EventScan, fn func(*EventRecord) error) error
	// InsertEventAt stores e under the sequence number seq, which the
	// sequence already handed out but no event holds: a number skipped by
	// a transaction that rolled back. When an event holds seq, or an
	// uncommitted one does and then commits, it stores nothing and
	// returns false; an uncommitted holder is waited for (bounded by ctx),
	// so that a number is either the committed event's or e's, never
	// both, and an event can no longer commit under seq once e is stored.
	InsertEventAt(ctx context.Context, seq int64, e *model.Event) (bool, error)

	// AuditChainHead returns the link of the highest sealed sequence
	// number (ErrNotFound when nothing is sealed).
	AuditChainHead(ctx context.Context) (*ChainLink, error)
	// AuditChainStart returns the lowest sealed sequence number (0 when
	// nothing is sealed) and LegacyThrough: the highest sequence number
	// stored when the tamper-evident log was introduced (events up to it
	// were written without a MAC).
	AuditChainStart(ctx context.Context) (first, legacyThrough int64, err error)
	// SealEvents stores links, in one transaction. If another sealer
	// sealed one of their sequence numbers meanwhile it stores none and
	// returns ErrAlreadyExists.
	SealEvents(ctx context.Context, links []ChainLink) error

	// CreateAuditCheckpoint stores a checkpoint; ErrAlreadyExists when
	// one exists for its Seq.
	CreateAuditCheckpoint(ctx context.Context, cp *AuditCheckpoint) error
	// AuditCheckpoints returns up to limit checkpoints with after < Seq
	// <= through (0: no bound), ascending (limit 0: all).
	AuditCheckpoints(ctx context.Context, after, through int64, limit int) ([]*AuditCheckpoint, error)
	// LatestAuditCheckpoint returns the checkpoint with the highest Seq
	// (ErrNotFound when none).
	LatestAuditCheckpoint(ctx context.Context) (*AuditCheckpoint, error)
	// PutAuditKey records the sealed public key that signs checkpoints
	// under its kid; a kid recorded before is left as it is.
	PutAuditKey(ctx context.Context, k *AuditKey) error
	// ListAuditKeys returns every recorded key, oldest first.
	ListAuditKeys(ctx context.Context) ([]*AuditKey, error)
	// AuditSecret returns the sealed secret called name, storing
	// create()'s result first when there is none (concurrent callers all
	// get the one stored).
	AuditSecret(ctx context.Context, name string, create func() ([]byte, error)) ([]byte, error)

	// DeleteAuditSegment is audit retention: in one transaction it
	// deletes the events and chain links with Seq <= through and the
	// checkpoints below through, so that the checkpoint at through
	// remains as the anchor the rest of the chain is verified from. It
	// returns how many events it deleted.
	DeleteAuditSegment(ctx context.Context, through int64) (int, error)
	// EventSeqAt returns the sequence number of the first event stamped
	// at or after t (first) or of the last one stamped before t (!first);
	// ErrNotFound when there is none.
	EventSeqAt(ctx context.Context, t time.Time, first bool) (int64, error)
	// CountEventsAfter counts the events with Seq > seq.
	CountEventsAfter(ctx context.Context, seq int64) (int64, error)
}

// EventScan selects the records ScanEventRecords reads.
type EventScan struct {
	After, Through int64
	// Body asks for each record's Body and MAC (the sealer checks the
	// MAC); without it only Leaf is computed, which is cheaper.
	Body bool
}

// EventRecord is one stored event as the audit chain sees it.
type EventRecord struct {
	Seq int64
	// Leaf is RecordLeaf of every stored column of the event.
	Leaf [32]byte
	// Body is EventBody of the stored columns and MAC the stored record
	// MAC (nil: none); only with EventScan.Body.
	Body []byte
	MAC  []byte
	// Origin and Hash are the chain link (Origin 0 and Hash nil: the
	// event is not sealed).
	Origin int
	Hash   []byte
}

// ChainLink is one sealed event: its position (Seq), what the sealer
// found about its origin, and the chain hash after it.
type ChainLink struct {
	Seq    int64
	Origin int
	Hash   []byte
}

// AuditCheckpoint is a signed statement of the chain: the hash after Seq
// at CreatedAt. JWS is the compact ES256 JWS whose payload states it (the
// other fields repeat it for queries; only the signed payload is
// trusted).
type AuditCheckpoint struct {
	Seq       int64
	Hash      []byte
	CreatedAt time.Time
	KID       string
	JWS       string
}

// AuditKey is a public key that signs checkpoints: its JWK sealed under
// the KEK (Sealed kind SealedAuditKey), so that one who can write the
// database but has not the KEK cannot add a key of their own.
type AuditKey struct {
	KID       string
	PublicEnc []byte
	CreatedAt time.Time
}

// Columns of the events table, in the order of their canonical encoding.
// EventBodyColumns are all of them but seq and mac: what an event is when
// it is written, before it has a sequence number (and what its record MAC
// covers).
var (
	EventBodyColumns = []string{"id", "type", "time", "actor", "user_id", "session_id", "client_id", "device_id",
		"token_id", "ip", "user_agent", "outcome", "reason", "binding", "binding_reason", "correlation_id", "data"}
	// EventColumns is every column: seq, the body, mac.
	EventColumns = append(append([]string{"seq"}, EventBodyColumns...), "mac")
)

// Tags of the canonical encoding of a stored value (AppendRecordValue).
const (
	tagNull  = 0x00
	tagInt   = 0x01
	tagText  = 0x02
	tagBlob  = 0x03
	tagFloat = 0x04
)

// AppendRecordValue appends the canonical encoding of one stored column
// value as the database returns it: NULL is 0x00; an integer 0x01 and 8
// bytes big-endian two's complement; text 0x02, its length in bytes (4
// bytes big-endian) and its bytes; a blob 0x03, length and bytes; a real
// (which Ward never stores, but SQLite would keep) 0x04 and its IEEE 754
// bits big-endian. Typed and length-prefixed, the encoding of a row is
// unambiguous: NULL and the empty text differ, as do 5 and '5', and no
// value can run into the next.
func AppendRecordValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, tagNull)
	case int64:
		return binary.BigEndian.AppendUint64(append(b, tagInt), uint64(v))
	case string:
		b = binary.BigEndian.AppendUint32(append(b, tagText), uint32(len(v)))
		return append(b, v...)
	case []byte:
		b = binary.BigEndian.AppendUint32(append(b, tagBlob), uint32(len(v)))
		return append(b, v...)
	case float64:
		return binary.BigEndian.AppendUint64(append(b, tagFloat), math.Float64bits(v))
	case int:
		return AppendRecordValue(b, int64(v))
	}
	panic(fmt.Sprintf("store: no canonical encoding for %T", v))
}

// AppendEventBody appends EventBody: the canonical encodings of vals, the
// values of EventBodyColumns in that order.
func AppendEventBody(b []byte, vals ...any) []byte {
	if len(vals) != len(EventBodyColumns) {
		panic(fmt.Sprintf("store: an event body has %d columns, not %d", len(EventBodyColumns), len(vals)))
	}
	for _, v := range vals {
		b = AppendRecordValue(b, v)
	}
	return b
}

// recordDomain separates record leaves from every other SHA-256 input.
const recordDomain = "ward-audit-record-v1\x00"

// RecordLeaf is the hash of a stored event the chain commits to:
// SHA-256("ward-audit-record-v1" 0x00 || enc(seq) || body || enc(mac)),
// body being EventBody and enc AppendRecordValue: every column of the
// row, in EventColumns order. mac is the mac column's value as read
// (nil for NULL, normally a []byte).
func RecordLeaf(seq int64, body []byte, mac any) [32]byte {
	var buf [512]byte
	b := append(buf[:0], recordDomain...)
	b = AppendRecordValue(b, seq)
	b = append(b, body...)
	if m, ok := mac.([]byte); ok && m == nil {
		mac = nil
	}
	b = AppendRecordValue(b, mac)
	return sha256.Sum256(b)
}

// BodyValue decodes the i-th value (EventBodyColumns order) of an
// EventBody: nil, int64, string, []byte or float64 (slices alias body).
func BodyValue(body []byte, i int) (any, error) {
	for k := 0; ; k++ {
		if len(body) == 0 {
			return nil, fmt.Errorf("store: event body ends before value %d", i)
		}
		tag := body[0]
		body = body[1:]
		var v any
		n := 0
		switch tag {
		case tagNull:
		case tagInt, tagFloat:
			if len(body) < 8 {
				return nil, fmt.Errorf("store: truncated event body")
			}
			u := binary.BigEndian.Uint64(body)
			if tag == tagInt {
				v = int64(u)
			} else {
				v = math.Float64frombits(u)
			}
			n = 8
		case tagText, tagBlob:
			if len(body) < 4 {
				return nil, fmt.Errorf("store: truncated event body")
			}
			l := int(binary.BigEndian.Uint32(body))
			if len(body)-4 < l {
				return nil, fmt.Errorf("store: truncated event body")
			}
			if tag == tagText {
				v = string(body[4 : 4+l])
			} else {
				v = body[4 : 4+l]
			}
			n = 4 + l
		default:
			return nil, fmt.Errorf("store: bad tag %#x in event body", tag)
		}
		if k == i {
			return v, nil
		}
		body = body[n:]
	}
}
