package backendtest_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
)

// A session's DBSC binding commits with its session.dbsc_registered:
// refused, the session stays unbound; accepted, it is bound with one
// record, and a second binding is refused without one.
func TestBindSessionKeyCommitsWithEvent(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			s := b.Open(t, nil)
			if err := s.CreateUser(ctx, &model.User{ID: "u1", Username: "alice"}); err != nil {
				t.Fatal(err)
			}
			if err := s.CreateSession(ctx, &model.Session{ID: "s1", UserID: "u1", CreatedAt: base, ExpiresAt: base.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
			bind := func(id, jkt string) (context.Context, *model.Event, error) {
				e := event(id, model.EventSessionDBSCRegistered)
				ectx := store.WithEvent(ctx, e)
				return ectx, e, s.BindSessionKey(ectx, "s1", jkt, []byte(`{"kty":"EC","kid":"`+jkt+`"}`))
			}
			lift := b.RefuseEvents(t, model.EventSessionDBSCRegistered)
			ectx, e, err := bind("refused", "jkt-1")
			if err == nil || errors.Is(err, store.ErrAlreadyExists) || store.EventStored(ectx, e) {
				t.Fatalf("binding with its record refused: %v, stored %v; want a plain failure", err, store.EventStored(ectx, e))
			}
			if se, err := s.GetSession(ctx, "s1"); err != nil || se.DBSCKeyJKT != "" || len(se.DBSCKey) != 0 {
				t.Fatalf("session after a refused binding: %+v, %v; want it unbound", se, err)
			}
			lift()
			ectx, e, err = bind("bound", "jkt-1")
			if err != nil || !store.EventStored(ectx, e) {
				t.Fatalf("binding: %v, stored %v", err, store.EventStored(ectx, e))
			}
			ectx, e, err = bind("again", "jkt-2")
			if !errors.Is(err, store.ErrAlreadyExists) || store.EventStored(ectx, e) {
				t.Fatalf("second binding: %v, stored %v; want ErrAlreadyExists and no record", err, store.EventStored(ectx, e))
			}
			if se, err := s.GetSession(ctx, "s1"); err != nil || se.DBSCKeyJKT != "jkt-1" {
				t.Fatalf("session after the bindings: %+v, %v; want jkt-1", se, err)
			}
			if got := storedTypes(t, s); !slicesEqual(got, []model.EventType{model.EventSessionDBSCRegistered}) {
				t.Errorf("events %v, want one session.dbsc_registered", got)
			}
		})
	}
}

// Two instances bind one session at once: one binding and one record.
func TestBindSessionKeyTwoInstances(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			winner, b := raceTwoInstances(t, k, model.EventSessionDBSCRegistered, store.ErrAlreadyExists,
				func(store.Store) error { return nil },
				func(s store.Store, ctx context.Context, i int) error {
					jkt := "jkt-" + strconv.Itoa(i)
					return s.BindSessionKey(ctx, "s1", jkt, []byte(`{"kid":"`+jkt+`"}`))
				})
			if se, err := b.GetSession(context.Background(), "s1"); err != nil || se.DBSCKeyJKT != "jkt-"+strconv.Itoa(winner) {
				t.Errorf("session bound to %q (%v), want the winner's jkt-%d", se.DBSCKeyJKT, err, winner)
			}
		})
	}
}

// signing returns the kids of the keys not scheduled for retirement.
func signing(t *testing.T, s store.Store) []string {
	t.Helper()
	var out []string
	for kid, k := range keysByKID(t, s) {
		if k.RetireAt.IsZero() {
			out = append(out, kid)
		}
	}
	return out
}

// The first key commits with its key.created, and only when no key may
// sign: refused, no key; with a key that signs, nothing is written and
// nothing recorded; with every key retiring, a new first key.
func TestFirstSigningKeyCommitsWithEvent(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			s := b.Open(t, nil)
			first := func(id, kid string) (context.Context, *model.Event, bool, error) {
				e := event(id, model.EventKeyCreated)
				ectx := store.WithEvent(ctx, e)
				created, err := s.CreateFirstSigningKey(ectx, signingKey(kid, base))
				return ectx, e, created, err
			}
			lift := b.RefuseEvents(t, model.EventKeyCreated)
			if ectx, e, created, err := first("refused", "k0"); err == nil || created || store.EventStored(ectx, e) {
				t.Fatalf("first key with its record refused: %v, created %v", err, created)
			}
			if ks := keysByKID(t, s); len(ks) != 0 {
				t.Fatalf("keys after a refused first key: %v", ks)
			}
			lift()
			if ectx, e, created, err := first("created", "k0"); err != nil || !created || !store.EventStored(ectx, e) {
				t.Fatalf("first key: %v, created %v, stored %v", err, created, store.EventStored(ectx, e))
			}
			if ectx, e, created, err := first("second", "k1"); err != nil || created || store.EventStored(ectx, e) {
				t.Fatalf("a first key with one signing: %v, created %v, stored %v; want nothing written", err, created, store.EventStored(ectx, e))
			}
			if got := signing(t, s); len(got) != 1 || got[0] != "k0" {
				t.Fatalf("signing keys %v, want k0 alone", got)
			}
			if _, err := s.UpdateSigningKey(ctx, "k0", func(k *model.SigningKey) error { k.RetireAt = base.Add(time.Hour); return nil }); err != nil {
				t.Fatal(err)
			}
			if ectx, e, created, err := first("after", "k2"); err != nil || !created || !store.EventStored(ectx, e) {
				t.Fatalf("first key with every key retiring: %v, created %v", err, created)
			}
			want := []model.EventType{model.EventKeyCreated, model.EventKeyCreated}
			if got := storedTypes(t, s); !slicesEqual(got, want) {
				t.Errorf("events %v, want %v", got, want)
			}
		})
	}
}

// errNotCreated stands for CreateFirstSigningKey's (false, nil) in the race.
var errNotCreated = errors.New("not created")

// Two instances start on an empty database and each creates a first
// key: exactly one key is stored, with one key.created; the others
// write nothing.
func TestFirstSigningKeyTwoInstances(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			winner, b := raceTwoInstances(t, k, model.EventKeyCreated, errNotCreated,
				func(store.Store) error { return nil },
				func(s store.Store, ctx context.Context, i int) error {
					created, err := s.CreateFirstSigningKey(ctx, signingKey("k-"+strconv.Itoa(i), base))
					if err == nil && !created {
						return errNotCreated
					}
					return err
				})
			if ks := keysByKID(t, b); len(ks) != 1 || ks["k-"+strconv.Itoa(winner)] == nil {
				t.Errorf("keys after the race: %v, want the winner's k-%d alone", ks, winner)
			}
		})
	}
}

// RetireSigningKey commits with its key.retired and never deletes the
// key that signs: refused, the key stays; the signer itself, a key that
// comes after it, or a retirement whose signer has been replaced are
// refused without a record.
func TestRetireSigningKeyCommitsWithEvent(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			s := b.Open(t, nil)
			if err := s.CreateSigningKey(ctx, signingKey("k0", base)); err != nil {
				t.Fatal(err)
			}
			if _, err := s.RotateSigningKey(ctx, signingKey("k1", base.Add(time.Minute)), "k0", base.Add(24*time.Hour)); err != nil {
				t.Fatal(err)
			}
			retire := func(id, kid, signer string) (context.Context, *model.Event, error) {
				e := event(id, model.EventKeyRetired)
				ectx := store.WithEvent(ctx, e)
				return ectx, e, s.RetireSigningKey(ectx, kid, signer)
			}
			lift := b.RefuseEvents(t, model.EventKeyRetired)
			if ectx, e, err := retire("refused", "k0", "k1"); err == nil || errors.Is(err, store.ErrAlreadyUsed) || store.EventStored(ectx, e) {
				t.Fatalf("retirement with its record refused: %v", err)
			}
			if keysByKID(t, s)["k0"] == nil {
				t.Fatal("k0 deleted although its key.retired was refused")
			}
			lift()
			// A newer key that nothing retired (a stale first key) comes
			// after the signer the caller saw.
			if err := s.CreateSigningKey(ctx, signingKey("k2", base.Add(2*time.Minute))); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct{ kid, signer string }{{"k1", "k1"}, {"k2", "k1"}, {"k1", "k0"}, {"k0", "k0"}} {
				if ectx, e, err := retire("no-"+c.kid+"-"+c.signer, c.kid, c.signer); !errors.Is(err, store.ErrAlreadyUsed) || store.EventStored(ectx, e) {
					t.Errorf("retire %s seeing %s signing: %v, want ErrAlreadyUsed and no record", c.kid, c.signer, err)
				}
			}
			if _, _, err := retire("missing", "nope", "k1"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("retire an unknown key: %v, want ErrNotFound", err)
			}
			if ks := keysByKID(t, s); len(ks) != 3 {
				t.Fatalf("keys after the refusals: %v, want k0, k1, k2", ks)
			}
			// k1 does not come after k2: retiring it with k2 signing is fine.
			for _, c := range []struct{ kid, signer string }{{"k0", "k1"}, {"k1", "k2"}} {
				if ectx, e, err := retire("ok-"+c.kid, c.kid, c.signer); err != nil || !store.EventStored(ectx, e) {
					t.Fatalf("retire %s seeing %s signing: %v", c.kid, c.signer, err)
				}
			}
			if ks := keysByKID(t, s); len(ks) != 1 || ks["k2"] == nil {
				t.Fatalf("keys after the retirements: %v, want k2 alone", ks)
			}
			want := []model.EventType{model.EventKeyRetired, model.EventKeyRetired}
			if got := storedTypes(t, s); !slicesEqual(got, want) {
				t.Errorf("events %v, want %v", got, want)
			}
		})
	}
}

// Two instances: one rotates while the other, from the state before,
// retires the new key (which it saw as not signing) and an old retiring
// one. Round after round, the rotation's new key is left signing, alone;
// the key that signs is never retired, and a retirement that is refused
// records nothing.
func TestRetireRacingRotateTwoInstances(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			open := k.Opener(t, nil)
			a, b := open(), open()
			if err := a.CreateSigningKey(ctx, signingKey("k0", base)); err != nil {
				t.Fatal(err)
			}
			kid := func(r int) string { return "k" + strconv.Itoa(r) }
			const rounds = 12
			for r := range rounds {
				signer, next := kid(r), kid(r+1)
				var rotErr, newErr, oldErr error
				var newCtx context.Context
				newEv := event("retire-"+next, model.EventKeyRetired)
				start := make(chan struct{})
				var wg sync.WaitGroup
				wg.Go(func() {
					<-start
					_, rotErr = a.RotateSigningKey(ctx, signingKey(next, base.Add(time.Duration(r+1)*time.Minute)), signer, base.Add(48*time.Hour))
				})
				wg.Go(func() {
					<-start
					newCtx = store.WithEvent(ctx, newEv)
					newErr = b.RetireSigningKey(newCtx, next, signer)
				})
				wg.Go(func() {
					<-start
					if r > 0 {
						oldErr = b.RetireSigningKey(store.WithEvent(ctx, event("retire-"+kid(r-1), model.EventKeyRetired)), kid(r-1), signer)
					}
				})
				close(start)
				wg.Wait()
				if rotErr != nil {
					t.Fatalf("round %d: rotation: %v", r, rotErr)
				}
				if !errors.Is(newErr, store.ErrNotFound) && !errors.Is(newErr, store.ErrAlreadyUsed) {
					t.Fatalf("round %d: retiring the rotation's new key: %v, want ErrNotFound or ErrAlreadyUsed", r, newErr)
				}
				if store.EventStored(newCtx, newEv) {
					t.Fatalf("round %d: a refused retirement recorded key.retired", r)
				}
				if oldErr != nil && !errors.Is(oldErr, store.ErrAlreadyUsed) {
					t.Fatalf("round %d: retiring the old key: %v", r, oldErr)
				}
				if got := signing(t, a); len(got) != 1 || got[0] != next {
					t.Fatalf("round %d: keys not retiring %v, want %s alone", r, got, next)
				}
			}
			for _, e := range storedTypes(t, a) {
				if e != model.EventKeyRetired {
					t.Errorf("stored %s, want only key.retired of old keys", e)
				}
			}
		})
	}
}
