package clients

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/clientspec"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

// sqliteFixture is a Service over the real SQLite store.
func sqliteFixture(t *testing.T) (*Service, *sqlite.Store, *bus.Recorder) {
	t.Helper()
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "ward.db"), sqlite.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rec := &bus.Recorder{}
	b := bus.NewLocal()
	b.Subscribe("recorder", rec.Handle)
	return New(Options{Store: st, Bus: b, Hasher: secret.NewHasher([]byte("test-key")), Now: func() time.Time { return now }}), st, rec
}

func TestUpdate(t *testing.T) {
	svc, st, rec := sqliteFixture(t)
	ctx := context.Background()
	if _, _, err := svc.Create(ctx, "admin", spaSpec()); err != nil {
		t.Fatal(err)
	}

	// Redirect URIs and scopes replaced, application type set.
	c, sec, err := svc.Update(ctx, "admin", "spa", func(s *clientspec.Spec) error {
		s.RedirectURIs = []string{"https://app.example/cb", "https://app.example/cb2"}
		s.Scopes = append(s.Scopes, "profile")
		s.ApplicationType = clientspec.ApplicationWeb
		return nil
	})
	if err != nil || sec != "" {
		t.Fatalf("Update: %v (secret %v)", err, sec != "")
	}
	stored, _ := st.GetClient(ctx, "spa")
	if !slices.Equal(stored.RedirectURIs, c.RedirectURIs) || len(stored.RedirectURIs) != 2 || stored.ApplicationType != "web" || !slices.Contains(stored.Scopes, "profile") {
		t.Errorf("stored after update: %+v", stored)
	}
	evs := rec.Events()
	if last := evs[len(evs)-1]; last.Type != model.EventClientUpdated || last.Data["fields"] != "redirect_uris,scopes,application_type" || last.Actor != "admin" {
		t.Errorf("event %s %v", last.Type, last.Data)
	}

	// Nothing changed: no write, no event.
	n := len(rec.Events())
	if _, _, err := svc.Update(ctx, "admin", "spa", func(*clientspec.Spec) error { return nil }); err != nil || len(rec.Events()) != n {
		t.Errorf("no-op update: %v, %d events", err, len(rec.Events())-n)
	}

	// Invalid metadata: refused with the field named, nothing stored.
	_, _, err = svc.Update(ctx, "admin", "spa", func(s *clientspec.Spec) error { s.RedirectURIs = []string{"relative/cb"}; return nil })
	if !errors.Is(err, clientspec.ErrInvalid) || !strings.Contains(err.Error(), "redirect_uris[0]") {
		t.Errorf("invalid update: %v", err)
	}
	if after, _ := st.GetClient(ctx, "spa"); !slices.Equal(after.RedirectURIs, stored.RedirectURIs) {
		t.Errorf("invalid update changed the client: %v", after.RedirectURIs)
	}

	// Public -> client_secret_basic: a secret is generated once and works.
	c, sec, err = svc.Update(ctx, "admin", "spa", func(s *clientspec.Spec) error {
		s.AuthMethod = model.AuthClientSecretBasic
		return nil
	})
	if err != nil || sec == "" || !svc.CheckSecret(c, sec.Reveal()) {
		t.Fatalf("to confidential: %v, secret %v", err, sec != "")
	}
	evs = rec.Events()
	if evs[len(evs)-1].Type != model.EventClientSecretRotated || !strings.Contains(evs[len(evs)-2].Data["fields"], "client_secret") {
		t.Errorf("events after auth change: %v %v", evs[len(evs)-2].Data, evs[len(evs)-1].Type)
	}
	// basic -> post keeps the secret; back to none drops it.
	c, sec2, err := svc.Update(ctx, "admin", "spa", func(s *clientspec.Spec) error { s.AuthMethod = model.AuthClientSecretPost; return nil })
	if err != nil || sec2 != "" || !svc.CheckSecret(c, sec.Reveal()) {
		t.Errorf("basic -> post: %v, new secret %v", err, sec2 != "")
	}
	c, _, err = svc.Update(ctx, "admin", "spa", func(s *clientspec.Spec) error { s.AuthMethod = model.AuthNone; return nil })
	if err != nil || len(c.SecretHash) != 0 || svc.CheckSecret(c, sec.Reveal()) {
		t.Errorf("to public: %v, hash kept %v", err, len(c.SecretHash) != 0)
	}

	if _, _, err := svc.Update(ctx, "admin", "missing", func(*clientspec.Spec) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing client: %v", err)
	}
}

// A client defined in the configuration (or by development mode) is put
// back at every start: a rotation, update or deletion made elsewhere
// would not last, so it is refused with where to make the change, and
// nothing changes.
func TestManagedClientsRefuseChanges(t *testing.T) {
	svc, st, _ := sqliteFixture(t)
	ctx := context.Background()
	sec := secret.String("static-secret-0123456789")
	if _, _, err := svc.Upsert(ctx, "config", model.ClientManagedByConfig, svcSpec(), sec); err != nil {
		t.Fatal(err)
	}
	dev := svcSpec()
	dev.ID = "demo"
	if _, _, err := svc.Upsert(ctx, "config", model.ClientManagedByDev, dev, sec); err != nil {
		t.Fatal(err)
	}
	before, _ := st.GetClient(ctx, "svc")
	for _, id := range []string{"svc", "demo"} {
		want := "static_clients"
		if id == "demo" {
			want = "development-mode"
		}
		if _, err := svc.RotateSecret(ctx, "admin", id); !errors.Is(err, ErrManagedByConfig) || !strings.Contains(err.Error(), want) {
			t.Errorf("rotate %s: %v", id, err)
		}
		if _, _, err := svc.Update(ctx, "admin", id, func(s *clientspec.Spec) error { s.Name = "x"; return nil }); !errors.Is(err, ErrManagedByConfig) {
			t.Errorf("update %s: %v", id, err)
		}
		if err := svc.Delete(ctx, "admin", id); !errors.Is(err, ErrManagedByConfig) {
			t.Errorf("delete %s: %v", id, err)
		}
	}
	after, _ := st.GetClient(ctx, "svc")
	if !svc.CheckSecret(after, sec.Reveal()) || after.Name != before.Name {
		t.Error("a refused change changed the client")
	}

	// Dropped from the configuration: handed over, secret kept.
	released, err := svc.ReleaseUnlisted(ctx, "system", []string{"other"}, true)
	if err != nil || !slices.Equal(released, []string{"svc"}) {
		t.Fatalf("release (dev): %v %v", released, err)
	}
	if released, _ := svc.ReleaseUnlisted(ctx, "system", nil, false); !slices.Equal(released, []string{"demo"}) {
		t.Fatalf("release (not dev): %v", released)
	}
	c, _ := st.GetClient(ctx, "svc")
	if c.ManagedBy != "" || !svc.CheckSecret(c, sec.Reveal()) {
		t.Errorf("released client: managed_by %q, secret kept %v", c.ManagedBy, svc.CheckSecret(c, sec.Reveal()))
	}
	if _, err := svc.RotateSecret(ctx, "admin", "svc"); err != nil {
		t.Errorf("rotate after release: %v", err)
	}
}
