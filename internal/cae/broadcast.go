package cae

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ward-idp/ward/internal/model"
)

// BroadcastSET is one SET for the CAE stream that resource servers follow
// over NATS (docs/ssf.md, "Direct NATS"): not addressed to one receiver's
// stream but to the audience every follower shares.
type BroadcastSET struct {
	// Name is the subject suffix: the event type's namespace and name
	// ("caep.session-revoked", "risc.account-disabled").
	Name string
	// ID de-duplicates a SET published again: <domain event id>/<index>.
	ID string
	// SET is the signed compact JWS.
	SET []byte
}

// Broadcast maps a domain event to SETs addressed to aud, one per event
// it yields, signed. Each SET's jti is derived from the domain event id,
// so handling the same event twice (at-least-once delivery) yields the
// same jti and followers drop the second. Events without an id yield
// nothing: they cannot be de-duplicated.
func (s *Service) Broadcast(ctx context.Context, e *model.Event, aud string) ([]BroadcastSET, error) {
	if e.ID == "" || aud == "" {
		return nil, nil
	}
	ts := s.templates(ctx, e)
	if len(ts) == 0 {
		return nil, nil
	}
	audJSON, _ := json.Marshal(aud)
	out := make([]BroadcastSET, 0, len(ts))
	for i, t := range ts {
		tail, err := s.claimsTail(s.o.Now(), e.ID, t)
		if err != nil {
			return nil, err
		}
		id := fmt.Sprintf("%s/%d", e.ID, i)
		set, err := s.o.Keys.MintSET(json.RawMessage(claimsJSON(s.issJSON, audJSON, broadcastJTI(id), tail)))
		if err != nil {
			return nil, fmt.Errorf("cae: sign SET: %w", err)
		}
		out = append(out, BroadcastSET{Name: subjectName(t.typ), ID: id, SET: []byte(set)})
	}
	return out, nil
}

// broadcastJTI is 128 bits of SHA-256 over the SET's de-duplication id.
func broadcastJTI(id string) string {
	h := sha256.Sum256([]byte("ward/cae-broadcast/" + id))
	return base64.RawURLEncoding.EncodeToString(h[:16])
}

// subjectName turns an event type URI
// (https://schemas.openid.net/secevent/caep/event-type/session-revoked)
// into subject tokens (caep.session-revoked).
func subjectName(typ string) string {
	parts := strings.Split(typ, "/")
	if len(parts) >= 3 && parts[len(parts)-2] == "event-type" {
		return subjectToken(parts[len(parts)-3]) + "." + subjectToken(parts[len(parts)-1])
	}
	return "other." + subjectToken(parts[len(parts)-1])
}

func subjectToken(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			return r
		}
		return '_'
	}, s)
}
