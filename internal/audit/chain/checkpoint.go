package chain

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/jsonobj"
	"github.com/ward-idp/ward/jws"
)

// CheckpointType is the typ header of a checkpoint's JWS.
const CheckpointType = "ward-audit-checkpoint+jwt"

// Signer signs checkpoints: Ward's key manager (tokens.KeyManager), which
// signs with its active ES256 key and lists its keys' public JWKs.
type Signer interface {
	Sign(typ string, claims any) (string, error)
	Keys() []*model.SigningKey
}

// CheckpointClaims is the signed payload of a checkpoint.
type CheckpointClaims struct {
	// Seq is the last sequence number the checkpoint covers and Hash the
	// chain value after it (base64url).
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
	// Start is the sequence number the log started after when the
	// checkpoint was signed: retention had deleted everything up to it
	// (an anchor checkpoint), or the chain's first event is Start+1.
	Start int64 `json:"start"`
	// IssuedAt is when it was signed (seconds since the epoch).
	IssuedAt int64 `json:"iat"`
}

// ErrCheckpoint is wrapped by every reason a checkpoint does not verify.
var ErrCheckpoint = errors.New("chain: checkpoint does not verify")

// Checkpoint is a checkpoint whose signature verified.
type Checkpoint struct {
	CheckpointClaims
	KID  string
	hash []byte
}

// ChainHash is the signed chain value.
func (c *Checkpoint) ChainHash() []byte { return c.hash }

// Time is when it was signed.
func (c *Checkpoint) Time() time.Time { return time.Unix(c.IssuedAt, 0).UTC() }

// Keys are the public keys checkpoints are verified with, by kid.
type Keys map[string]*ecdsa.PublicKey

// TrustedKeys opens the recorded checkpoint keys with kek. A key that does
// not open (an entry Ward did not write, or one bound to another kid) is
// returned as untrusted, not used.
func TrustedKeys(ctx context.Context, st store.AuditLog, kek *secret.KEK) (Keys, []string, error) {
	aks, err := st.ListAuditKeys(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("chain: list checkpoint keys: %w", err)
	}
	keys := Keys{}
	var untrusted []string
	for _, ak := range aks {
		raw, err := kek.Open(ak.PublicEnc, KeyAAD(ak.KID))
		if err != nil {
			untrusted = append(untrusted, ak.KID)
			continue
		}
		jwk, err := jws.ParseJWK(raw, jws.ES256)
		pub, ok := jwk.Key.(*ecdsa.PublicKey)
		if err != nil || !ok || jwk.Thumbprint != ak.KID {
			untrusted = append(untrusted, ak.KID)
			continue
		}
		keys[ak.KID] = pub
	}
	return keys, untrusted, nil
}

// VerifyCheckpoint checks a stored checkpoint's JWS with keys and that
// the row says what the JWS says. Failures wrap ErrCheckpoint.
func VerifyCheckpoint(cp *store.AuditCheckpoint, keys Keys) (*Checkpoint, error) {
	c, err := jws.Split(cp.JWS)
	if err != nil || len(cp.JWS) > 8<<10 {
		return nil, fmt.Errorf("%w: malformed JWS", ErrCheckpoint)
	}
	var members [8]jsonobj.Member
	h, err := jws.ParseHeader(c.Header(), members[:0])
	if err != nil || h.Alg != string(jws.ES256) || h.Typ != CheckpointType || h.Unsupported() != "" {
		return nil, fmt.Errorf("%w: bad header", ErrCheckpoint)
	}
	pub, ok := keys[h.Kid]
	if !ok {
		return nil, fmt.Errorf("%w: signed by %q, not a key Ward recorded", ErrCheckpoint, h.Kid)
	}
	if !jws.VerifyES256(pub, c.SigningInput(), c.Signature()) {
		return nil, fmt.Errorf("%w: bad signature", ErrCheckpoint)
	}
	payload, err := jws.DecodeSegment(c.Payload())
	if err != nil {
		return nil, fmt.Errorf("%w: malformed payload", ErrCheckpoint)
	}
	out := &Checkpoint{KID: h.Kid}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out.CheckpointClaims); err != nil {
		return nil, fmt.Errorf("%w: malformed payload", ErrCheckpoint)
	}
	if out.hash, err = base64.RawURLEncoding.Strict().DecodeString(out.Hash); err != nil || len(out.hash) != HashSize {
		return nil, fmt.Errorf("%w: malformed chain hash", ErrCheckpoint)
	}
	if out.Seq != cp.Seq || !bytes.Equal(out.hash, cp.Hash) || out.Start >= out.Seq {
		return nil, fmt.Errorf("%w: the row does not say what its signature covers", ErrCheckpoint)
	}
	return out, nil
}

// sign signs a checkpoint of head and returns the row to store, after
// recording the signing key (sealed under kek) if it is new.
func sign(ctx context.Context, st store.AuditLog, signer Signer, kek *secret.KEK, known map[string]bool,
	head store.ChainLink, start int64, now time.Time) (*store.AuditCheckpoint, error) {
	claims := CheckpointClaims{Seq: head.Seq, Hash: base64.RawURLEncoding.EncodeToString(head.Hash), Start: start, IssuedAt: now.Unix()}
	tok, err := signer.Sign(CheckpointType, claims)
	if err != nil {
		return nil, fmt.Errorf("chain: sign checkpoint: %w", err)
	}
	c, err := jws.Split(tok)
	if err != nil {
		return nil, fmt.Errorf("chain: sign checkpoint: %w", err)
	}
	var members [8]jsonobj.Member
	h, err := jws.ParseHeader(c.Header(), members[:0])
	if err != nil || h.Kid == "" {
		return nil, errors.New("chain: the signer's JWS names no key")
	}
	if !known[h.Kid] {
		var jwk []byte
		for _, k := range signer.Keys() {
			if k.KID == h.Kid {
				jwk = k.PublicJWK
			}
		}
		if jwk == nil {
			return nil, fmt.Errorf("chain: the signer has no public key for kid %s", h.Kid)
		}
		enc, err := kek.Seal(jwk, KeyAAD(h.Kid))
		if err != nil {
			return nil, fmt.Errorf("chain: seal checkpoint key: %w", err)
		}
		// The key is recorded before anything it signs is stored.
		if err := st.PutAuditKey(ctx, &store.AuditKey{KID: h.Kid, PublicEnc: enc, CreatedAt: now}); err != nil {
			return nil, fmt.Errorf("chain: record checkpoint key: %w", err)
		}
		known[h.Kid] = true
	}
	return &store.AuditCheckpoint{Seq: head.Seq, Hash: head.Hash, CreatedAt: now, KID: h.Kid, JWS: tok}, nil
}
