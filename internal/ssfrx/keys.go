package ssfrx

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/ward-idp/ward/jws"
)

// Key set refresh: an unknown kid refetches the JWKS at most every
// minRefresh (so a SET with a random kid cannot make Ward hammer the
// transmitter), and keys older than maxKeyAge are refetched on use.
const (
	minRefresh = 30 * time.Second
	maxKeyAge  = time.Hour
	maxKeys    = 100
)

var (
	errUnknownKey      = errors.New("unknown signing key")
	errKeysUnavailable = errors.New("the transmitter's keys are unavailable")
)

// keySet holds a transmitter's published keys by kid, as raw JWKs: a
// key is read (jws.ParseJWK) for the algorithm a SET names, which checks
// that the key's type and curve fit it and that it is public and for
// signing.
type keySet struct {
	r *receiver

	mu      sync.Mutex
	byKID   map[string]json.RawMessage
	only    json.RawMessage // the single key of a JWKS that has one, for a SET without kid
	parsed  map[string]crypto.PublicKey
	fetched time.Time
	tried   time.Time
	jwksURI string
}

func (k *keySet) setURI(u string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if u != k.jwksURI {
		k.jwksURI, k.byKID, k.only, k.parsed, k.fetched = u, nil, nil, nil, time.Time{}
	}
}

// key returns the key for a SET's kid and alg.
func (k *keySet) key(ctx context.Context, kid string, hasKID bool, alg jws.Algorithm) (crypto.PublicKey, error) {
	now := k.r.s.o.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.byKID == nil || now.Sub(k.fetched) > maxKeyAge {
		if err := k.refreshLocked(ctx, now); err != nil && k.byKID == nil {
			return nil, err
		}
	}
	raw := k.lookupLocked(kid, hasKID)
	if raw == nil && now.Sub(k.tried) >= minRefresh {
		_ = k.refreshLocked(ctx, now)
		raw = k.lookupLocked(kid, hasKID)
	}
	if raw == nil {
		return nil, errUnknownKey
	}
	cacheKey := string(alg) + "\x00" + kid
	if pk, ok := k.parsed[cacheKey]; ok {
		return pk, nil
	}
	jwk, err := jws.ParseJWK(raw, alg)
	if err != nil {
		// A key of another type or curve than the SET's alg (or a private
		// one, which a JWKS must never hold): not a key for this SET.
		return nil, errUnknownKey
	}
	k.parsed[cacheKey] = jwk.Key
	return jwk.Key, nil
}

func (k *keySet) lookupLocked(kid string, hasKID bool) json.RawMessage {
	if !hasKID {
		return k.only
	}
	return k.byKID[kid]
}

// refreshLocked fetches the JWKS (the caller holds mu: concurrent
// verifications wait for one fetch instead of making their own).
func (k *keySet) refreshLocked(ctx context.Context, now time.Time) error {
	k.tried = now
	if k.jwksURI == "" {
		// A SET before the stream was set up (just after a start): find
		// the keys from the transmitter's configuration now.
		tc, err := k.r.discover(ctx)
		if err != nil {
			k.r.s.log.WarnContext(ctx, "ssf receiver: transmitter configuration unavailable", "receiver", k.r.cfg.Name, "err", err)
			return errKeysUnavailable
		}
		k.jwksURI = tc.JWKSURI
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := k.r.fetchPublic(ctx, k.jwksURI, &doc); err != nil {
		k.r.s.log.WarnContext(ctx, "ssf receiver: JWKS fetch failed", "receiver", k.r.cfg.Name, "err", err)
		return errKeysUnavailable
	}
	byKID := map[string]json.RawMessage{}
	var usable []json.RawMessage
	for _, raw := range doc.Keys {
		if len(usable) >= maxKeys {
			break
		}
		var m struct {
			Kid string `json:"kid"`
			Use string `json:"use"`
		}
		if json.Unmarshal(raw, &m) != nil || (m.Use != "" && m.Use != "sig") {
			continue
		}
		usable = append(usable, raw)
		if m.Kid != "" {
			byKID[m.Kid] = raw
		}
	}
	k.byKID, k.parsed, k.fetched, k.only = byKID, map[string]crypto.PublicKey{}, now, nil
	if len(usable) == 1 {
		k.only = usable[0]
	}
	return nil
}
