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
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/clientspec"
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
	// ErrManagedByConfig: the client is defined in the configuration file,
	// which puts its metadata and secret back at every start; a change
	// made elsewhere would not last (a rotated secret would come back).
	ErrManagedByConfig = errors.New("clients: client is defined in the configuration file (static_clients)")
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
func (s *Service) Create(ctx context.Context, actor string, spec clientspec.Spec) (*model.Client, secret.String, error) {
	if spec.ID == "" {
		spec.ID = "c_" + secret.RandomString(12)
	}
	spec.Normalize()
	if err := clientspec.Validate(spec); err != nil {
		return nil, "", err
	}
	var sec secret.String
	now := s.now().UTC()
	c := fromSpec(spec, now)
	if clientspec.UsesSecret(spec.AuthMethod) {
		sec = secret.String(secret.RandomToken())
		c.SecretHash = s.hasher.Sum(sec.Reveal())
	}
	ectx, publish := s.record(ctx, func() []*model.Event {
		return []*model.Event{event(model.EventClientCreated, actor, c.ID, map[string]string{"auth_method": c.TokenEndpointAuthMethod})}
	})
	if err := s.store.CreateClient(ectx, c); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return nil, "", fmt.Errorf("%w: %s", ErrExists, spec.ID)
		}
		return nil, "", fmt.Errorf("clients: create %s: %w", spec.ID, err)
	}
	if err := publish(); err != nil {
		return c, sec, err
	}
	return c, sec, nil
}

// Upsert applies a statically configured client with a given secret (empty
// for public and private_key_jwt clients); managedBy says what defines it
// (model.ClientManagedByConfig or ClientManagedByDev), and changes made
// elsewhere are refused while it does. It creates the client when
// missing and updates it when anything differs; when nothing changed it
// writes nothing and publishes nothing, so restarts are idempotent. It
// reports whether anything changed.
func (s *Service) Upsert(ctx context.Context, actor, managedBy string, spec clientspec.Spec, sec secret.String) (*model.Client, bool, error) {
	spec.Normalize()
	errs := []error{clientspec.Validate(spec), clientspec.CheckSecretPresence(spec.AuthMethod, sec != "", "secret")}
	if clientspec.UsesSecret(spec.AuthMethod) && sec != "" && len(sec.Reveal()) < clientspec.MinSecretLength {
		errs = append(errs, &clientspec.FieldError{Field: "secret", Msg: fmt.Sprintf("shorter than %d characters", clientspec.MinSecretLength)})
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
		c.ManagedBy = managedBy
		ectx, publish := s.record(ctx, func() []*model.Event {
			return []*model.Event{event(model.EventClientCreated, actor, c.ID, map[string]string{"auth_method": c.TokenEndpointAuthMethod, "source": "static"})}
		})
		if err := s.store.CreateClient(ectx, c); err != nil {
			return nil, false, fmt.Errorf("clients: create %s: %w", spec.ID, err)
		}
		return c, true, publish()
	case err != nil:
		return nil, false, fmt.Errorf("clients: get %s: %w", spec.ID, err)
	}
	want := fromSpec(spec, cur.CreatedAt)
	want.SecretHash = hash
	want.ManagedBy = managedBy
	metaChanged := !sameMetadata(cur, want)
	secretChanged := !bytes.Equal(cur.SecretHash, hash)
	if !metaChanged && !secretChanged {
		return cur, false, nil
	}
	ectx, publish := s.record(ctx, func() []*model.Event {
		var evs []*model.Event
		if metaChanged {
			evs = append(evs, event(model.EventClientUpdated, actor, spec.ID, map[string]string{"source": "static"}))
		}
		if secretChanged {
			evs = append(evs, event(model.EventClientSecretRotated, actor, spec.ID, map[string]string{"source": "static"}))
		}
		return evs
	})
	updated, err := s.store.UpdateClient(ectx, spec.ID, func(c *model.Client) error {
		want.UpdatedAt = now
		*c = *want
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("clients: update %s: %w", spec.ID, err)
	}
	return updated, true, publish()
}

// Update changes a client's metadata: change edits a copy of its current
// description (clientspec.Spec), which is then validated as a new client
// would be, and the client is saved atomically. Moving to
// client_secret_basic/post from a method without a secret generates one,
// returned once; moving away from them drops the stored secret. A client
// defined in the configuration file is refused (ErrManagedByConfig). It
// publishes client.updated naming the changed fields (nothing when nothing
// changed), and client.secret_rotated when a secret was generated.
func (s *Service) Update(ctx context.Context, actor, id string, change func(*clientspec.Spec) error) (*model.Client, secret.String, error) {
	var (
		sec     secret.String
		changed []string
	)
	now := s.now().UTC()
	// Built after the change, in its transaction: they name what it
	// changed.
	ectx, publish := s.record(ctx, func() []*model.Event {
		evs := []*model.Event{event(model.EventClientUpdated, actor, id, map[string]string{"fields": strings.Join(changed, ",")})}
		if sec != "" {
			evs = append(evs, event(model.EventClientSecretRotated, actor, id, map[string]string{"reason": "auth_method_changed"}))
		}
		return evs
	})
	c, err := s.store.UpdateClient(ectx, id, func(c *model.Client) error {
		sec, changed = "", nil // the transaction may be retried
		if c.ManagedBy != "" {
			return managedErr(c, "change it in static_clients and restart Ward")
		}
		spec := toSpec(c)
		if err := change(&spec); err != nil {
			return err
		}
		spec.ID = id
		spec.Normalize()
		if err := clientspec.Validate(spec); err != nil {
			return err
		}
		next := fromSpec(spec, c.CreatedAt)
		switch hadSecret, wantSecret := clientspec.UsesSecret(c.TokenEndpointAuthMethod), clientspec.UsesSecret(spec.AuthMethod); {
		case wantSecret && !hadSecret:
			sec = secret.String(secret.RandomToken())
			next.SecretHash = s.hasher.Sum(sec.Reveal())
		case wantSecret:
			next.SecretHash = c.SecretHash
		}
		changed = changedFields(c, next)
		if len(changed) == 0 {
			return errUnchanged
		}
		next.UpdatedAt = now
		*c = *next
		return nil
	})
	if errors.Is(err, errUnchanged) {
		cur, gerr := s.store.GetClient(ctx, id)
		return cur, "", s.wrapErr("get", id, gerr)
	}
	if err != nil {
		return nil, "", s.wrap("update", id, err)
	}
	return c, sec, publish()
}

// errUnchanged ends an Update that would change nothing, without a write.
var errUnchanged = errors.New("clients: unchanged")

func (s *Service) wrapErr(op, id string, err error) error {
	if err == nil {
		return nil
	}
	return s.wrap(op, id, err)
}

// toSpec is the description of an existing client, as Update edits it.
func toSpec(c *model.Client) clientspec.Spec {
	return clientspec.Spec{
		ID:                       c.ID,
		Name:                     c.Name,
		AuthMethod:               c.TokenEndpointAuthMethod,
		RedirectURIs:             slices.Clone(c.RedirectURIs),
		PostLogoutRedirectURIs:   slices.Clone(c.PostLogoutRedirectURIs),
		GrantTypes:               slices.Clone(c.GrantTypes),
		Scopes:                   slices.Clone(c.Scopes),
		Audience:                 slices.Clone(c.Audience),
		DPoPBoundAccessTokens:    c.DPoPBoundAccessTokens,
		RequireProtectedSessions: c.RequireProtectedSessions,
		CAECapable:               c.CAECapable,
		JWKS:                     bytes.Clone(c.JWKS),
		AccessTokenTTL:           c.AccessTokenTTL,
		ApplicationType:          c.ApplicationType,
	}
}

// changedFields names, in registration-metadata terms, what differs
// between two versions of a client (the secret only by its presence).
func changedFields(a, b *model.Client) []string {
	eq := func(x, y []string) bool { return len(x) == len(y) && (len(x) == 0 || slices.Equal(x, y)) }
	var out []string
	add := func(differ bool, name string) {
		if differ {
			out = append(out, name)
		}
	}
	add(a.Name != b.Name, "name")
	add(a.TokenEndpointAuthMethod != b.TokenEndpointAuthMethod, "token_endpoint_auth_method")
	add(!eq(a.RedirectURIs, b.RedirectURIs), "redirect_uris")
	add(!eq(a.PostLogoutRedirectURIs, b.PostLogoutRedirectURIs), "post_logout_redirect_uris")
	add(!eq(a.GrantTypes, b.GrantTypes), "grant_types")
	add(!eq(a.Scopes, b.Scopes), "scopes")
	add(!eq(a.Audience, b.Audience), "audience")
	add(!jsonEqual(a.JWKS, b.JWKS), "jwks")
	add(a.DPoPBoundAccessTokens != b.DPoPBoundAccessTokens, "dpop_bound_access_tokens")
	add(a.RequireProtectedSessions != b.RequireProtectedSessions, "require_protected_sessions")
	add(a.CAECapable != b.CAECapable, "cae_capable")
	add(a.AccessTokenTTL != b.AccessTokenTTL, "access_token_ttl")
	add(a.ApplicationType != b.ApplicationType, "application_type")
	add((len(a.SecretHash) == 0) != (len(b.SecretHash) == 0), "client_secret")
	return out
}

// ReleaseUnlisted hands the clients that the configuration file (or
// development mode, when dev is false) no longer defines over to the CLI
// and admin API: they stay, with their secrets, but are no longer refused
// changes. listed are the ids the configuration defines. It returns the
// ids released.
func (s *Service) ReleaseUnlisted(ctx context.Context, actor string, listed []string, dev bool) ([]string, error) {
	all, err := s.store.ListClients(ctx)
	if err != nil {
		return nil, fmt.Errorf("clients: list: %w", err)
	}
	var released []string
	var errs []error
	for _, c := range all {
		switch {
		case c.ManagedBy == "" || slices.Contains(listed, c.ID):
			continue
		case c.ManagedBy == model.ClientManagedByDev && dev:
			continue
		}
		ectx, publish := s.record(ctx, func() []*model.Event {
			return []*model.Event{event(model.EventClientUpdated, actor, c.ID, map[string]string{"fields": "managed_by", "source": "static"})}
		})
		if _, err := s.store.UpdateClient(ectx, c.ID, func(x *model.Client) error {
			x.ManagedBy, x.UpdatedAt = "", s.now().UTC()
			return nil
		}); err != nil {
			errs = append(errs, s.wrap("release", c.ID, err))
			continue
		}
		released = append(released, c.ID)
		errs = append(errs, publish())
	}
	return released, errors.Join(errs...)
}

// RotateSecret replaces the secret of a client_secret_basic/post client
// with a fresh 256-bit one and returns it; the old secret stops working.
func (s *Service) RotateSecret(ctx context.Context, actor, id string) (secret.String, error) {
	sec := secret.String(secret.RandomToken())
	hash := s.hasher.Sum(sec.Reveal())
	ectx, publish := s.record(ctx, func() []*model.Event {
		return []*model.Event{event(model.EventClientSecretRotated, actor, id, nil)}
	})
	_, err := s.store.UpdateClient(ectx, id, func(c *model.Client) error {
		if c.ManagedBy != "" {
			return managedErr(c, "its secret is static_clients' secret or secret_env: change it there and restart Ward")
		}
		if !clientspec.UsesSecret(c.TokenEndpointAuthMethod) {
			return fmt.Errorf("%w: %s uses %s", ErrNoSecret, id, c.TokenEndpointAuthMethod)
		}
		c.SecretHash = hash
		c.UpdatedAt = s.now().UTC()
		return nil
	})
	if err != nil {
		return "", s.wrap("rotate secret of", id, err)
	}
	return sec, publish()
}

// Delete removes a client. A client defined in the configuration file is
// refused (the next start would create it again).
func (s *Service) Delete(ctx context.Context, actor, id string) error {
	c, err := s.store.GetClient(ctx, id)
	if err != nil {
		return s.wrap("delete", id, err)
	}
	if c.ManagedBy != "" {
		return managedErr(c, "remove it from static_clients and restart Ward first")
	}
	ectx, publish := s.record(ctx, func() []*model.Event {
		return []*model.Event{event(model.EventClientDeleted, actor, id, nil)}
	})
	if err := s.store.DeleteClient(ectx, id); err != nil {
		return s.wrap("delete", id, err)
	}
	return publish()
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
	if errors.Is(err, ErrNoSecret) || errors.Is(err, ErrManagedByConfig) || errors.Is(err, clientspec.ErrInvalid) {
		return err
	}
	return fmt.Errorf("clients: %s %s: %w", op, id, err)
}

// event is the record, of type t, of a change to a client.
func event(t model.EventType, actor, clientID string, data map[string]string) *model.Event {
	if actor == "" {
		actor = "system"
	}
	return &model.Event{Type: t, Actor: actor, ClientID: clientID, Data: data}
}

// record prepares the events of a client change to commit with the store
// write that makes it: the write is made with the returned context, and
// evs, called in its transaction after the change (it may read what the
// change found), returns them. publish, called once the write succeeded,
// publishes the events that committed (so the audit persister finds them
// stored).
func (s *Service) record(ctx context.Context, evs func() []*model.Event) (context.Context, func() error) {
	var built []*model.Event
	ectx := s.events.PendingEvents(ctx, func([]string) []*model.Event {
		built = evs()
		return built
	})
	return ectx, func() error {
		if built == nil { // no bus: nothing was pending, nothing is recorded
			built = evs()
		}
		var errs []error
		for _, e := range built {
			if err := s.events.Emit(ectx, e); err != nil {
				errs = append(errs, fmt.Errorf("clients: %w", err))
			}
		}
		return errors.Join(errs...)
	}
}

// managedErr refuses a change to a client that the configuration (or
// development mode) puts back at every start; what says where to make it.
func managedErr(c *model.Client, what string) error {
	if c.ManagedBy == model.ClientManagedByDev {
		return fmt.Errorf("%w: %s is a development-mode demo client, put back at every start of serve --dev; register a client of your own with `ward client add`", ErrManagedByConfig, c.ID)
	}
	return fmt.Errorf("%w: %s; %s", ErrManagedByConfig, c.ID, what)
}

func fromSpec(s clientspec.Spec, created time.Time) *model.Client {
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
		ApplicationType:          s.ApplicationType,
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
		a.AccessTokenTTL == b.AccessTokenTTL &&
		a.ApplicationType == b.ApplicationType &&
		a.ManagedBy == b.ManagedBy
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
