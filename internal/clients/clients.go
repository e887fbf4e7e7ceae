// Package clients is the domain service for OAuth clients: validation of
// client metadata, creation with a generated secret, idempotent upsert of
// statically configured clients, secret rotation and constant-time secret
// checks. Secrets are stored only as keyed hashes (secret.Hasher); every
// change is published as a domain event.
package clients

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

// Errors.
var (
	// ErrExists: a client with that id already exists.
	ErrExists = errors.New("clients: client already exists")
	// ErrNotFound: no such client.
	ErrNotFound = errors.New("clients: client not found")
	// ErrNoSecret: the client does not authenticate with a shared secret.
	ErrNoSecret = errors.New("clients: client does not use a client secret")
)

// Options configures a Service.
type Options struct {
	Store store.Store
	Bus   bus.Bus
	// Hasher computes the keyed hash of client secrets.
	Hasher *secret.Hasher
	Now    func() time.Time
}

// Service manages OAuth clients.
type Service struct {
	store  store.Store
	events *bus.Emitter // records domain events (nothing without a bus)
	hasher *secret.Hasher
	now    func() time.Time
}

// New returns a Service.
func New(o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Service{store: o.Store, events: bus.NewEmitter(o.Bus, o.Now), hasher: o.Hasher, now: o.Now}
}

// Create validates spec and stores a new client. A confidential client
// using client_secret_basic/post gets a generated 256-bit secret, returned
// once here; only its keyed hash is stored. The returned secret is empty
// for public and private_key_jwt clients. An empty spec.ID gets a random id.
func (s *Service) Create(ctx context.Context, actor string, spec Spec) (*model.Client, secret.String, error) {
	if spec.ID == "" {
		spec.ID = "c_" + secret.RandomString(12)
	}
	spec.Normalize()
	if err := Validate(spec); err != nil {
		return nil, "", err
	}
	var sec secret.String
	now := s.now().UTC()
	c := fromSpec(spec, now)
	if UsesSecret(spec.AuthMethod) {
		sec = secret.String(secret.RandomToken())
		c.SecretHash = s.hasher.Sum(sec.Reveal())
	}
	if err := s.store.CreateClient(ctx, c); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return nil, "", fmt.Errorf("%w: %s", ErrExists, spec.ID)
		}
		return nil, "", fmt.Errorf("clients: create %s: %w", spec.ID, err)
	}
	if err := s.publish(ctx, model.EventClientCreated, actor, c.ID, map[string]string{"auth_method": c.TokenEndpointAuthMethod}); err != nil {
		return c, sec, err
	}
	return c, sec, nil
}

// Upsert applies a statically configured client with a given secret (empty
// for public and private_key_jwt clients). It creates the client when
// missing and updates it when anything differs; when nothing changed it
// writes nothing and publishes nothing, so restarts are idempotent. It
// reports whether anything changed.
func (s *Service) Upsert(ctx context.Context, actor string, spec Spec, sec secret.String) (*model.Client, bool, error) {
	spec.Normalize()
	errs := []error{Validate(spec), CheckSecretPresence(spec.AuthMethod, sec != "", "secret")}
	if UsesSecret(spec.AuthMethod) && sec != "" && len(sec.Reveal()) < MinSecretLength {
		errs = append(errs, &FieldError{Field: "secret", Msg: fmt.Sprintf("shorter than %d characters", MinSecretLength)})
	}
	if err := errors.Join(errs...); err != nil {
		return nil, false, err
	}
	var hash []byte
	if sec != "" {
		hash = s.hasher.Sum(sec.Reveal())
	}
	now := s.now().UTC()
	cur, err := s.store.GetClient(ctx, spec.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		c := fromSpec(spec, now)
		c.SecretHash = hash
		if err := s.store.CreateClient(ctx, c); err != nil {
			return nil, false, fmt.Errorf("clients: create %s: %w", spec.ID, err)
		}
		return c, true, s.publish(ctx, model.EventClientCreated, actor, c.ID, map[string]string{"auth_method": c.TokenEndpointAuthMethod, "source": "static"})
	case err != nil:
		return nil, false, fmt.Errorf("clients: get %s: %w", spec.ID, err)
	}
	want := fromSpec(spec, cur.CreatedAt)
	want.SecretHash = hash
	metaChanged := !sameMetadata(cur, want)
	secretChanged := !bytes.Equal(cur.SecretHash, hash)
	if !metaChanged && !secretChanged {
		return cur, false, nil
	}
	updated, err := s.store.UpdateClient(ctx, spec.ID, func(c *model.Client) error {
		want.UpdatedAt = now
		*c = *want
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("clients: update %s: %w", spec.ID, err)
	}
	var perr []error
	if metaChanged {
		perr = append(perr, s.publish(ctx, model.EventClientUpdated, actor, spec.ID, map[string]string{"source": "static"}))
	}
	if secretChanged {
		perr = append(perr, s.publish(ctx, model.EventClientSecretRotated, actor, spec.ID, map[string]string{"source": "static"}))
	}
	return updated, true, errors.Join(perr...)
}

// RotateSecret replaces the secret of a client_secret_basic/post client
// with a fresh 256-bit one and returns it; the old secret stops working.
func (s *Service) RotateSecret(ctx context.Context, actor, id string) (secret.String, error) {
	sec := secret.String(secret.RandomToken())
	hash := s.hasher.Sum(sec.Reveal())
	_, err := s.store.UpdateClient(ctx, id, func(c *model.Client) error {
		if !UsesSecret(c.TokenEndpointAuthMethod) {
			return fmt.Errorf("%w: %s uses %s", ErrNoSecret, id, c.TokenEndpointAuthMethod)
		}
		c.SecretHash = hash
		c.UpdatedAt = s.now().UTC()
		return nil
	})
	if err != nil {
		return "", s.wrap("rotate secret of", id, err)
	}
	return sec, s.publish(ctx, model.EventClientSecretRotated, actor, id, nil)
}

// Delete removes a client.
func (s *Service) Delete(ctx context.Context, actor, id string) error {
	if err := s.store.DeleteClient(ctx, id); err != nil {
		return s.wrap("delete", id, err)
	}
	return s.publish(ctx, model.EventClientDeleted, actor, id, nil)
}

// Get returns a client.
func (s *Service) Get(ctx context.Context, id string) (*model.Client, error) {
	c, err := s.store.GetClient(ctx, id)
	if err != nil {
		return nil, s.wrap("get", id, err)
	}
	return c, nil
}

// List returns every client, ordered by id.
func (s *Service) List(ctx context.Context) ([]*model.Client, error) {
	cs, err := s.store.ListClients(ctx)
	if err != nil {
		return nil, fmt.Errorf("clients: list: %w", err)
	}
	slices.SortFunc(cs, func(a, b *model.Client) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return cs, nil
}

// CheckSecret reports in constant time whether presented is c's secret.
// Clients without a stored secret never match.
func (s *Service) CheckSecret(c *model.Client, presented string) bool {
	if c == nil || len(c.SecretHash) == 0 || presented == "" {
		return false
	}
	return s.hasher.Equal(presented, c.SecretHash)
}

func (s *Service) wrap(op, id string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if errors.Is(err, ErrNoSecret) {
		return err
	}
	return fmt.Errorf("clients: %s %s: %w", op, id, err)
}

// publish records an event of type t about a client.
func (s *Service) publish(ctx context.Context, t model.EventType, actor, clientID string, data map[string]string) error {
	if actor == "" {
		actor = "system"
	}
	if err := s.events.Emit(ctx, &model.Event{Type: t, Actor: actor, ClientID: clientID, Data: data}); err != nil {
		return fmt.Errorf("clients: %w", err)
	}
	return nil
}

func fromSpec(s Spec, created time.Time) *model.Client {
	return &model.Client{
		ID:                       s.ID,
		Name:                     s.Name,
		TokenEndpointAuthMethod:  s.AuthMethod,
		RedirectURIs:             slices.Clone(s.RedirectURIs),
		PostLogoutRedirectURIs:   slices.Clone(s.PostLogoutRedirectURIs),
		GrantTypes:               slices.Clone(s.GrantTypes),
		Scopes:                   slices.Clone(s.Scopes),
		Audience:                 slices.Clone(s.Audience),
		JWKS:                     bytes.Clone(s.JWKS),
		DPoPBoundAccessTokens:    s.DPoPBoundAccessTokens,
		RequireProtectedSessions: s.RequireProtectedSessions,
		CAECapable:               s.CAECapable,
		AccessTokenTTL:           s.AccessTokenTTL,
		CreatedAt:                created,
		UpdatedAt:                created,
	}
}

// sameMetadata compares everything but the secret and timestamps. Nil and
// empty lists are equal (stores may return either).
func sameMetadata(a, b *model.Client) bool {
	eq := func(x, y []string) bool { return len(x) == len(y) && (len(x) == 0 || slices.Equal(x, y)) }
	return a.ID == b.ID && a.Name == b.Name &&
		a.TokenEndpointAuthMethod == b.TokenEndpointAuthMethod &&
		eq(a.RedirectURIs, b.RedirectURIs) &&
		eq(a.PostLogoutRedirectURIs, b.PostLogoutRedirectURIs) &&
		eq(a.GrantTypes, b.GrantTypes) &&
		eq(a.Scopes, b.Scopes) &&
		eq(a.Audience, b.Audience) &&
		jsonEqual(a.JWKS, b.JWKS) &&
		a.DPoPBoundAccessTokens == b.DPoPBoundAccessTokens &&
		a.RequireProtectedSessions == b.RequireProtectedSessions &&
		a.CAECapable == b.CAECapable &&
		a.AccessTokenTTL == b.AccessTokenTTL
}

// jsonEqual compares JWKS documents semantically, since a store
// (PostgreSQL jsonb) may reformat or reorder them.
func jsonEqual(a, b []byte) bool {
	if len(bytes.TrimSpace(a)) == 0 || len(bytes.TrimSpace(b)) == 0 {
		return len(bytes.TrimSpace(a)) == len(bytes.TrimSpace(b))
	}
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(va, vb)
}
