package tokens_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
	"github.com/ward-idp/ward/internal/tokens"
)

func kek(t *testing.T) *secret.KEK {
	t.Helper()
	k, err := secret.NewKEK(bytes.Repeat([]byte{7}, secret.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// keyEvents returns the stored key.* events, oldest first.
func keyEvents(t *testing.T, s store.Store) []*store.StoredEvent {
	t.Helper()
	evs, err := s.EventsAfter(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []*store.StoredEvent
	for _, e := range evs {
		switch e.Type {
		case model.EventKeyCreated, model.EventKeyRotated, model.EventKeyRetired:
			out = append(out, e)
		}
	}
	return out
}

func types(evs []*store.StoredEvent) []model.EventType {
	var out []model.EventType
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func sameTypes(a []*store.StoredEvent, want ...model.EventType) bool {
	got := types(a)
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// The first key and its key.created, a rotation and its key.created and
// key.rotated, commit together: with an event refused, no key is created
// or retired and the manager keeps signing with the key it had; accepted,
// each commits with exactly its events.
func TestRotationCommitsWithEvents(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			st := b.Open(t, nil)
			opts := tokens.KeyOptions{Store: st, KEK: kek(t), Bus: bus.NewLocal(), RetireAfter: time.Hour}

			lift := b.RefuseEvents(t, model.EventKeyCreated)
			if _, err := tokens.NewKeyManager(ctx, opts); err == nil {
				t.Fatal("first start with key.created refused: got a key manager")
			}
			if ks, err := st.ListSigningKeys(ctx); err != nil || len(ks) != 0 {
				t.Fatalf("keys after a refused creation: %d, %v; want none", len(ks), err)
			}
			lift()
			m, err := tokens.NewKeyManager(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			first := m.ActiveKID()

			for _, refused := range []model.EventType{model.EventKeyRotated, model.EventKeyCreated} {
				lift := b.RefuseEvents(t, refused)
				if k, err := m.Rotate(ctx, "admin-1"); err == nil || k != nil {
					t.Fatalf("rotation with %s refused: %v, %v; want an error and no key", refused, k, err)
				}
				lift()
				ks, err := st.ListSigningKeys(ctx)
				if err != nil || len(ks) != 1 || ks[0].KID != first || !ks[0].RetireAt.IsZero() {
					t.Fatalf("keys after a refused rotation: %+v, %v; want %s alone, not retiring", ks, err, first)
				}
				if m.ActiveKID() != first {
					t.Fatalf("manager signs with %s after a refused rotation, want %s", m.ActiveKID(), first)
				}
			}
			if evs := keyEvents(t, st); !sameTypes(evs, model.EventKeyCreated) {
				t.Fatalf("events after the refused rotations: %v, want the first key.created alone", types(evs))
			}

			k, err := m.Rotate(ctx, "admin-1")
			if err != nil {
				t.Fatalf("rotation: %v", err)
			}
			if m.ActiveKID() != k.KID || k.KID == first {
				t.Fatalf("active %s after rotating to %s (from %s)", m.ActiveKID(), k.KID, first)
			}
			evs := keyEvents(t, st)
			if !sameTypes(evs, model.EventKeyCreated, model.EventKeyCreated, model.EventKeyRotated) {
				t.Fatalf("events %v, want key.created, key.created, key.rotated", types(evs))
			}
			rot := evs[2]
			if rot.Data["kid"] != k.KID || rot.Data["previous_kid"] != first || rot.Actor != "admin-1" || evs[1].Data["kid"] != k.KID {
				t.Errorf("rotation events: %+v %+v", evs[1], rot)
			}
		})
	}
}

// barrierStore holds every RotateSigningKey until all the racers have
// called it: each rotation has read the key signing now and is about to
// replace it, the window in which a check apart from its write lets two
// rotations both happen (and retire each other's key).
type barrierStore struct {
	tokens.KeyStore
	arrived *sync.WaitGroup
}

func (b barrierStore) RotateSigningKey(ctx context.Context, k *model.SigningKey, previous string, retireAt time.Time) ([]string, error) {
	b.arrived.Done()
	b.arrived.Wait()
	return b.KeyStore.RotateSigningKey(ctx, k, previous, retireAt)
}

// Four key managers, two on each of two instances sharing one database,
// rotate at once from the same signing key: exactly one rotation happens,
// the others get ErrConcurrentRotation, and every manager then signs with
// the winner's key, the only one not retiring; the audit log has exactly
// one key.rotated.
func TestRotationTwoInstances(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			stores := []store.Store{b.Open(t, nil), b.Open(t, nil)}
			const n = 4
			var arrived sync.WaitGroup
			arrived.Add(n)
			ms := make([]*tokens.KeyManager, n)
			for i := range n {
				m, err := tokens.NewKeyManager(ctx, tokens.KeyOptions{Store: barrierStore{stores[i%2], &arrived}, KEK: kek(t),
					Bus: bus.NewLocal(), RetireAfter: time.Hour})
				if err != nil {
					t.Fatal(err)
				}
				ms[i] = m
			}
			first := ms[0].ActiveKID()
			keys := make([]*model.SigningKey, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() { keys[i], errs[i] = ms[i].Rotate(ctx, "admin") })
			}
			wg.Wait()
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil && winner >= 0:
					t.Errorf("rotations %d and %d both happened", winner, i)
				case err == nil:
					winner = i
				case !errors.Is(err, tokens.ErrConcurrentRotation):
					t.Errorf("rotation %d: %v, want ErrConcurrentRotation", i, err)
				}
			}
			if winner < 0 {
				t.Fatal("no rotation happened")
			}
			want := keys[winner].KID
			ks, err := stores[1].ListSigningKeys(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var signing []string
			for _, key := range ks {
				if key.RetireAt.IsZero() {
					signing = append(signing, key.KID)
				} else if key.KID != first {
					t.Errorf("key %s retiring; only %s should be", key.KID, first)
				}
			}
			if len(ks) != 2 || len(signing) != 1 || signing[0] != want {
				t.Errorf("%d keys stored, not retiring %v; want %s retiring and %s alone signing", len(ks), signing, first, want)
			}
			for i, m := range ms {
				if err := m.Reload(ctx); err != nil || m.ActiveKID() != want {
					t.Errorf("manager %d signs with %s (%v), want %s", i, m.ActiveKID(), err, want)
				}
			}
			var rotated []*store.StoredEvent
			for _, e := range keyEvents(t, stores[0]) {
				if e.Type == model.EventKeyRotated {
					rotated = append(rotated, e)
				}
			}
			if len(rotated) != 1 || rotated[0].Data["kid"] != want || rotated[0].Data["previous_kid"] != first {
				t.Errorf("key.rotated events: %+v; want one, %s -> %s", rotated, first, want)
			}
		})
	}
}

// firstKeyBarrier holds every CreateFirstSigningKey until all the
// starting managers have called it: each has found no key and is about
// to create the first.
type firstKeyBarrier struct {
	tokens.KeyStore
	arrived *sync.WaitGroup
}

func (b firstKeyBarrier) CreateFirstSigningKey(ctx context.Context, k *model.SigningKey) (bool, error) {
	b.arrived.Done()
	b.arrived.Wait()
	return b.KeyStore.CreateFirstSigningKey(ctx, k)
}

// Four key managers, two on each of two instances, start at once on an
// empty database: exactly one key is created, with one key.created, and
// every manager signs with it.
func TestFirstKeyTwoInstances(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			stores := []store.Store{b.Open(t, nil), b.Open(t, nil)}
			const n = 4
			var arrived sync.WaitGroup
			arrived.Add(n)
			ms := make([]*tokens.KeyManager, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					ms[i], errs[i] = tokens.NewKeyManager(ctx, tokens.KeyOptions{Store: firstKeyBarrier{stores[i%2], &arrived},
						KEK: kek(t), Bus: bus.NewLocal(), RetireAfter: time.Hour})
				})
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("manager %d: %v", i, err)
				}
			}
			ks, err := stores[1].ListSigningKeys(ctx)
			if err != nil || len(ks) != 1 {
				t.Fatalf("%d keys after the start (%v), want one", len(ks), err)
			}
			for i, m := range ms {
				if m.ActiveKID() != ks[0].KID {
					t.Errorf("manager %d signs with %s, want %s", i, m.ActiveKID(), ks[0].KID)
				}
			}
			if evs := keyEvents(t, stores[0]); !sameTypes(evs, model.EventKeyCreated) || evs[0].Data["kid"] != ks[0].KID {
				t.Errorf("key events %v, want one key.created for %s", types(evs), ks[0].KID)
			}
		})
	}
}

// rotateBeforeRetire runs a rotation on another instance after the
// retiring manager has read the keys and before its retirement is
// written: the window in which a check apart from the write would act on
// a stale view of which key signs.
type rotateBeforeRetire struct {
	tokens.KeyStore
	rotate func()
}

func (r rotateBeforeRetire) RetireSigningKey(ctx context.Context, kid, signer string) error {
	r.rotate()
	return r.KeyStore.RetireSigningKey(ctx, kid, signer)
}

// Retire on one instance races a rotation on another: it saw k1 signing
// and retires k0 (retiring), but by the time it writes, k1 has been
// replaced. The store refuses (ErrConcurrentRotation: nothing retired,
// nothing recorded) and the rotation's key signs on both.
func TestRetireRacingRotationTwoInstances(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			st1, st2 := b.Open(t, nil), b.Open(t, nil)
			m1, err := tokens.NewKeyManager(ctx, tokens.KeyOptions{Store: st1, KEK: kek(t), Bus: bus.NewLocal(), RetireAfter: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			k0 := m1.ActiveKID()
			if _, err := m1.Rotate(ctx, "admin"); err != nil {
				t.Fatal(err)
			}
			k1 := m1.ActiveKID()
			var k2 string
			m2, err := tokens.NewKeyManager(ctx, tokens.KeyOptions{Store: rotateBeforeRetire{KeyStore: st2, rotate: func() {
				k, err := m1.Rotate(ctx, "admin")
				if err != nil {
					t.Error(err)
					return
				}
				k2 = k.KID
			}}, KEK: kek(t), Bus: bus.NewLocal(), RetireAfter: time.Hour})
			if err != nil || m2.ActiveKID() != k1 {
				t.Fatalf("second instance: %v, signing %s; want %s", err, m2.ActiveKID(), k1)
			}
			if err := m2.Retire(ctx, "admin", k0); !errors.Is(err, tokens.ErrConcurrentRotation) {
				t.Fatalf("retirement overtaken by a rotation: %v, want ErrConcurrentRotation", err)
			}
			ks, err := st1.ListSigningKeys(ctx)
			if err != nil || len(ks) != 3 {
				t.Fatalf("%d keys (%v), want k0, k1 retiring and k2", len(ks), err)
			}
			if m1.ActiveKID() != k2 || m2.ActiveKID() != k2 {
				t.Errorf("signing: m1 %s, m2 %s; want %s", m1.ActiveKID(), m2.ActiveKID(), k2)
			}
			for _, e := range keyEvents(t, st1) {
				if e.Type == model.EventKeyRetired {
					t.Errorf("key.retired recorded: %+v", e)
				}
			}
			// Looked at again, the retirement goes through.
			if err := tokens.KeyStore(st2).RetireSigningKey(store.WithEvent(ctx, &model.Event{ID: "r", Type: model.EventKeyRetired, Time: time.Now(), Actor: "admin", Outcome: model.OutcomeSuccess}), k0, k2); err != nil {
				t.Fatalf("retire %s with %s signing: %v", k0, k2, err)
			}
		})
	}
}
