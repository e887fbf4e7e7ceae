package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/audit/chain"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/tokens"
)

// sealedAAD gives, for each kind of value sealed under the KEK, the
// associated data its owner binds it to: the services' own functions, so
// that a rotation cannot re-seal a value under anything they would not
// open.
var sealedAAD = map[string]func(owner string) []byte{
	store.SealedSigningKey:    tokens.SigningKeyAAD,
	store.SealedTOTP:          identity.TOTPAAD,
	store.SealedSSFAuthHeader: cae.AuthorizationHeaderAAD,
	store.SealedAuditKey:      chain.KeyAAD,
	store.SealedAuditSecret:   chain.SecretAAD,
}

// KEKRotation is what RotateKEK re-sealed, by store.Sealed kind.
type KEKRotation struct {
	Resealed map[string]int
}

// Total is the number of values re-sealed.
func (r *KEKRotation) Total() int {
	n := 0
	for _, v := range r.Resealed {
		n += v
	}
	return n
}

// ErrSameKEK: the new key-encryption key is the one in use.
var ErrSameKEK = errors.New("app: the new key-encryption key is the current one")

// RotateKEK re-seals every value sealed under the key-encryption key old
// (signing keys, TOTP seeds, SSF push authorization headers) under next,
// in one store transaction that also records kek.rotated (attributed to
// actor): a crash leaves either everything under old or everything under
// next. A value already sealed under next is left as it is, so running it
// again with the same keys finishes a rotation (one that failed, or values
// that a server still running with old sealed afterwards); a value neither
// key opens fails the rotation, which then changes nothing.
//
// It opens only the store and an in-process bus with the audit persister
// (no NATS, no key manager: the rest of Ward needs a key this replaces).
// What is keyed under keys derived from the KEK (refresh tokens, codes,
// client secrets, cookies, nonces) cannot be re-keyed: see
// docs/configuration.md, "Rotating the key-encryption key".
func RotateKEK(ctx context.Context, cfg *config.Config, log *slog.Logger, old, next *secret.KEK, actor string) (*KEKRotation, error) {
	if old == nil || next == nil {
		return nil, errors.New("app: RotateKEK needs both keys")
	}
	if old.Equal(next) {
		return nil, ErrSameKEK
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("app: create data directory: %w", err)
	}
	st, err := openStore(ctx, cfg, time.Now)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	// Its events carry their record MAC like any other process's (the
	// record MAC key is sealed under the KEK and re-sealed below; under
	// the new key already if a rotation was interrupted). A key neither
	// opens fails the rotation below, like any sealed value.
	if _, err := chain.Configure(ctx, st, old); err != nil {
		_, _ = chain.Configure(ctx, st, next)
	}
	b := bus.NewLocal()
	defer audit.Subscribe(b, audit.Options{Store: st, Log: log})()
	events := bus.NewEmitter(b, time.Now)

	out := &KEKRotation{Resealed: map[string]int{}}
	ev := &model.Event{Type: model.EventKEKRotated, Actor: actor}
	ectx := events.Pending(ctx, ev, func(ids []string) bool {
		// The run that commits is the last one.
		out.Resealed = map[string]int{}
		for _, id := range ids {
			kind, _, _ := strings.Cut(id, ":")
			out.Resealed[kind]++
		}
		ev.Data = map[string]string{
			"signing_keys":              strconv.Itoa(out.Resealed[store.SealedSigningKey]),
			"totp_seeds":                strconv.Itoa(out.Resealed[store.SealedTOTP]),
			"ssf_authorization_headers": strconv.Itoa(out.Resealed[store.SealedSSFAuthHeader]),
		}
		return len(ids) > 0
	})
	n, err := st.ResealAll(ectx, func(v *store.Sealed) ([]byte, error) {
		aad, ok := sealedAAD[v.Kind]
		if !ok {
			return nil, fmt.Errorf("app: no associated data known for sealed %s values", v.Kind)
		}
		ad := aad(v.Owner)
		pt, err := old.Open(v.Ciphertext, ad)
		if err != nil {
			if _, err := next.Open(v.Ciphertext, ad); err == nil {
				return nil, nil // under the new key already
			}
			return nil, fmt.Errorf("app: the %s of %s opens under neither key-encryption key; nothing was changed", v.Kind, v.Owner)
		}
		defer clear(pt)
		return next.Seal(pt, ad)
	})
	if err != nil {
		return nil, fmt.Errorf("app: rotate the key-encryption key: %w", err)
	}
	log.InfoContext(ctx, "key-encryption key rotated", "actor", actor, "resealed", n)
	if n > 0 {
		if err := events.Emit(ectx, ev); err != nil {
			return out, err
		}
	}
	return out, nil
}
