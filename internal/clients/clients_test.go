package clients

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/clientspec"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

// fakeStore keeps clients in memory; every other Store method panics
// through the embedded nil interface.
type fakeStore struct {
	store.Store
	mu      sync.Mutex
	clients map[string]model.Client
	writes  int
}

func newFakeStore() *fakeStore { return &fakeStore{clients: map[string]model.Client{}} }

func (f *fakeStore) CreateClient(_ context.Context, c *model.Client) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.clients[c.ID]; ok {
		return fmt.Errorf("client %s: %w", c.ID, store.ErrAlreadyExists)
	}
	f.clients[c.ID] = *c
	f.writes++
	return nil
}

func (f *fakeStore) GetClient(_ context.Context, id string) (*model.Client, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.clients[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	return &c, nil
}

func (f *fakeStore) ListClients(context.Context) ([]*model.Client, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*model.Client
	for _, c := range f.clients {
		out = append(out, &c)
	}
	return out, nil
}

func (f *fakeStore) UpdateClient(_ context.Context, id string, fn func(*model.Client) error) (*model.Client, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.clients[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	if err := fn(&c); err != nil {
		return nil, err
	}
	f.clients[id] = c
	f.writes++
	return &c, nil
}

func (f *fakeStore) DeleteClient(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.clients[id]; !ok {
		return store.ErrNotFound
	}
	delete(f.clients, id)
	f.writes++
	return nil
}

type fixture struct {
	svc   *Service
	store *fakeStore
	rec   *bus.Recorder
	now   time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{store: newFakeStore(), rec: &bus.Recorder{}, now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	b := bus.NewLocal()
	b.Subscribe("recorder", f.rec.Handle)
	f.svc = New(Options{Store: f.store, Bus: b, Hasher: secret.NewHasher([]byte("test-key")), Now: func() time.Time { return f.now }})
	return f
}

func (f *fixture) types() []model.EventType {
	var out []model.EventType
	for _, e := range f.rec.Events() {
		out = append(out, e.Type)
	}
	return out
}

func spaSpec() clientspec.Spec {
	return clientspec.Spec{ID: "spa", AuthMethod: model.AuthNone, RedirectURIs: []string{"https://app.example/cb"},
		GrantTypes: []string{model.GrantAuthorizationCode, model.GrantRefreshToken}, Scopes: []string{"openid"}}
}

func svcSpec() clientspec.Spec {
	return clientspec.Spec{ID: "svc", Name: "Service", AuthMethod: model.AuthClientSecretBasic, GrantTypes: []string{model.GrantClientCredentials}}
}

func TestCreateStoresOnlyHash(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c, sec, err := f.svc.Create(ctx, "admin", svcSpec())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(sec.Reveal()); n != 43 { // 32 bytes base64url
		t.Errorf("secret length %d, want 43", n)
	}
	stored, _ := f.store.GetClient(ctx, "svc")
	if bytes.Contains(stored.SecretHash, []byte(sec.Reveal())) || len(stored.SecretHash) != 32 {
		t.Errorf("stored secret hash %x looks wrong", stored.SecretHash)
	}
	if fmt.Sprintf("%+v", *stored) == "" || strings.Contains(fmt.Sprintf("%+v %v", *stored, sec), sec.Reveal()) {
		t.Error("secret found in the stored record or printed secret")
	}
	if !f.svc.CheckSecret(c, sec.Reveal()) || !f.svc.CheckSecret(stored, sec.Reveal()) {
		t.Error("CheckSecret rejects the issued secret")
	}
	if f.svc.CheckSecret(stored, sec.Reveal()+"x") || f.svc.CheckSecret(stored, "") {
		t.Error("CheckSecret accepts a wrong secret")
	}
	if got := f.types(); len(got) != 1 || got[0] != model.EventClientCreated {
		t.Errorf("events %v, want [client.created]", got)
	}
	e := f.rec.Events()[0]
	if e.Actor != "admin" || e.ClientID != "svc" || e.ID == "" || !e.Time.Equal(f.now) {
		t.Errorf("event %+v", e)
	}
}

func TestCreatePublicHasNoSecret(t *testing.T) {
	f := newFixture(t)
	c, sec, err := f.svc.Create(context.Background(), "admin", spaSpec())
	if err != nil {
		t.Fatal(err)
	}
	if sec != "" || len(c.SecretHash) != 0 {
		t.Errorf("public client got secret %q / hash %x", sec.Reveal(), c.SecretHash)
	}
	if f.svc.CheckSecret(c, "") {
		t.Error("public client matched an empty secret")
	}
}

func TestCreateErrors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	bad := spaSpec()
	bad.RedirectURIs = []string{"relative"}
	if _, _, err := f.svc.Create(ctx, "admin", bad); !errors.Is(err, clientspec.ErrInvalid) {
		t.Errorf("invalid spec: got %v, want ErrInvalid", err)
	}
	if _, _, err := f.svc.Create(ctx, "admin", spaSpec()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.svc.Create(ctx, "admin", spaSpec()); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate: got %v, want ErrExists", err)
	}
	if got := f.types(); len(got) != 1 {
		t.Errorf("events %v, want one client.created", got)
	}
}

func TestCreateGeneratesID(t *testing.T) {
	f := newFixture(t)
	s := svcSpec()
	s.ID = ""
	c, _, err := f.svc.Create(context.Background(), "admin", s)
	if err != nil || !strings.HasPrefix(c.ID, "c_") {
		t.Errorf("got %v, %v; want generated id", c, err)
	}
}

func TestRotateSecret(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	_, old, err := f.svc.Create(ctx, "admin", svcSpec())
	if err != nil {
		t.Fatal(err)
	}
	next, err := f.svc.RotateSecret(ctx, "admin", "svc")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := f.svc.Get(ctx, "svc")
	if f.svc.CheckSecret(c, old.Reveal()) {
		t.Error("old secret still works after rotation")
	}
	if !f.svc.CheckSecret(c, next.Reveal()) {
		t.Error("new secret does not work")
	}
	if got := f.types(); len(got) != 2 || got[1] != model.EventClientSecretRotated {
		t.Errorf("events %v", got)
	}
	if _, err := f.svc.RotateSecret(ctx, "admin", "missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing client: got %v, want ErrNotFound", err)
	}
	if _, _, err := f.svc.Create(ctx, "admin", spaSpec()); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.RotateSecret(ctx, "admin", "spa"); !errors.Is(err, ErrNoSecret) {
		t.Errorf("public client: got %v, want ErrNoSecret", err)
	}
}

func TestUpsertIdempotent(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	sec := secret.String("static-secret-0123456789")
	c1, changed, err := f.svc.Upsert(ctx, "config", model.ClientManagedByConfig, svcSpec(), sec)
	if err != nil || !changed {
		t.Fatalf("first upsert: %v changed=%v", err, changed)
	}
	writes := f.store.writes
	// Restart: a fresh service with the same hasher key yields the same hash.
	f.now = f.now.Add(time.Hour)
	c2, changed, err := f.svc.Upsert(ctx, "config", model.ClientManagedByConfig, svcSpec(), sec)
	if err != nil || changed {
		t.Fatalf("second upsert: %v changed=%v", err, changed)
	}
	if f.store.writes != writes || !bytes.Equal(c1.SecretHash, c2.SecretHash) {
		t.Error("unchanged upsert wrote to the store")
	}
	if got := f.types(); len(got) != 1 || got[0] != model.EventClientCreated {
		t.Errorf("events %v, want only client.created", got)
	}
	if !f.svc.CheckSecret(c2, sec.Reveal()) {
		t.Error("static secret does not check")
	}

	// Metadata change -> client.updated; secret change -> secret_rotated.
	s := svcSpec()
	s.Name = "Renamed"
	if _, changed, err := f.svc.Upsert(ctx, "config", model.ClientManagedByConfig, s, sec); err != nil || !changed {
		t.Fatalf("rename: %v changed=%v", err, changed)
	}
	if _, changed, err := f.svc.Upsert(ctx, "config", model.ClientManagedByConfig, s, "another-secret-0123456789"); err != nil || !changed {
		t.Fatalf("new secret: %v changed=%v", err, changed)
	}
	want := []model.EventType{model.EventClientCreated, model.EventClientUpdated, model.EventClientSecretRotated}
	if got := f.types(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("events %v, want %v", got, want)
	}
	c, _ := f.svc.Get(ctx, "svc")
	if f.svc.CheckSecret(c, sec.Reveal()) || !c.CreatedAt.Equal(c1.CreatedAt) {
		t.Errorf("after secret change: old secret works or CreatedAt moved (%v)", c.CreatedAt)
	}
}

func TestUpsertValidation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, _, err := f.svc.Upsert(ctx, "config", model.ClientManagedByConfig, svcSpec(), ""); !errors.Is(err, clientspec.ErrInvalid) {
		t.Errorf("confidential without secret: got %v", err)
	}
	if _, _, err := f.svc.Upsert(ctx, "config", model.ClientManagedByConfig, svcSpec(), "short"); !errors.Is(err, clientspec.ErrInvalid) {
		t.Errorf("short secret: got %v", err)
	}
	if _, _, err := f.svc.Upsert(ctx, "config", model.ClientManagedByConfig, spaSpec(), "static-secret-0123456789"); !errors.Is(err, clientspec.ErrInvalid) {
		t.Errorf("public with secret: got %v", err)
	}
	if len(f.rec.Events()) != 0 || f.store.writes != 0 {
		t.Error("invalid upserts wrote or published")
	}
}

func TestDeleteListGet(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, s := range []clientspec.Spec{svcSpec(), spaSpec()} {
		if _, _, err := f.svc.Create(ctx, "admin", s); err != nil {
			t.Fatal(err)
		}
	}
	list, err := f.svc.List(ctx)
	if err != nil || len(list) != 2 || list[0].ID != "spa" || list[1].ID != "svc" {
		t.Fatalf("List = %v, %v", list, err)
	}
	if err := f.svc.Delete(ctx, "admin", "spa"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Get(ctx, "spa"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get deleted: %v", err)
	}
	if err := f.svc.Delete(ctx, "admin", "spa"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete twice: %v", err)
	}
	if got := f.types(); got[len(got)-1] != model.EventClientDeleted {
		t.Errorf("events %v", got)
	}
}

func TestPublishFailureIsReturned(t *testing.T) {
	f := newFixture(t)
	b := bus.NewLocal()
	b.Subscribe("audit", func(context.Context, *model.Event) error { return errors.New("disk full") })
	f.svc.events = bus.NewEmitter(b, nil)
	if _, _, err := f.svc.Create(context.Background(), "admin", spaSpec()); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("got %v, want the audit failure", err)
	}
}
