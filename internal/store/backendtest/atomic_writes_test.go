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

// The writes here commit a change with the events recording it (see
// store.WithEvent): for each, a test where the database refuses the
// event (backendtest.Backend.RefuseEvents) shows that the change does not
// land either, and a race of two instances shows that the check and the
// write are one: exactly one of the racers acts and records.

// storedTypes returns the types of every stored event, in order.
func storedTypes(t *testing.T, s store.Store) []model.EventType {
	t.Helper()
	evs, err := s.EventsAfter(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []model.EventType
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

// event is a complete event of type typ with id.
func event(id string, typ model.EventType) *model.Event {
	return &model.Event{ID: id, Type: typ, Time: base, Actor: "admin", Outcome: model.OutcomeSuccess}
}

// signingKey is a key kid active from active.
func signingKey(kid string, active time.Time) *model.SigningKey {
	return &model.SigningKey{KID: kid, Alg: "ES256", PrivateEnc: []byte("sealed-" + kid),
		PublicJWK: []byte(`{"kid":"` + kid + `"}`), CreatedAt: active, ActiveAt: active}
}

// keysByKID returns the stored keys.
func keysByKID(t *testing.T, s store.Store) map[string]*model.SigningKey {
	t.Helper()
	ks, err := s.ListSigningKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]*model.SigningKey{}
	for _, k := range ks {
		m[k.KID] = k
	}
	return m
}

// A key's creation, rotation and deletion whose event the database
// refuses change no key; accepted, each commits with its events.
func TestSigningKeyWritesCommitWithEvents(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			s := b.Open(t, nil)
			retireAt := base.Add(24 * time.Hour)

			lift := b.RefuseEvents(t, model.EventKeyCreated)
			e := event("created-refused", model.EventKeyCreated)
			ectx := store.WithEvent(ctx, e)
			if err := s.CreateSigningKey(ectx, signingKey("k0", base)); err == nil {
				t.Fatal("CreateSigningKey with its event refused: got nil")
			}
			if ks := keysByKID(t, s); len(ks) != 0 || store.EventStored(ectx, e) {
				t.Fatalf("after a refused creation: keys %v, event stored %v; want none", ks, store.EventStored(ectx, e))
			}
			lift()
			e = event("created", model.EventKeyCreated)
			ectx = store.WithEvent(ctx, e)
			if err := s.CreateSigningKey(ectx, signingKey("k0", base)); err != nil || !store.EventStored(ectx, e) {
				t.Fatalf("CreateSigningKey: %v, event stored %v", err, store.EventStored(ectx, e))
			}

			// The rotation's two events; either refused, nothing lands.
			rotate := func(id string) (context.Context, []*model.Event, []string, error) {
				evs := []*model.Event{event(id+"-created", model.EventKeyCreated), event(id+"-rotated", model.EventKeyRotated)}
				var built []string
				ectx := store.WithEvents(ctx, func(ids []string) []*model.Event {
					built = ids
					return evs
				})
				retired, err := s.RotateSigningKey(ectx, signingKey("k1", base.Add(time.Minute)), "k0", retireAt)
				if err == nil && !slicesEqual(built, retired) {
					t.Errorf("the events were built for %v, the rotation retired %v", built, retired)
				}
				return ectx, evs, retired, err
			}
			for _, refused := range []model.EventType{model.EventKeyRotated, model.EventKeyCreated} {
				lift := b.RefuseEvents(t, refused)
				ectx, evs, _, err := rotate("refused-" + string(refused))
				if err == nil || errors.Is(err, store.ErrAlreadyUsed) {
					t.Fatalf("rotation with %s refused: %v, want a plain failure", refused, err)
				}
				ks := keysByKID(t, s)
				if len(ks) != 1 || ks["k0"] == nil || !ks["k0"].RetireAt.IsZero() {
					t.Fatalf("keys after a refused rotation: %+v; want k0 alone, not retiring", ks)
				}
				for _, e := range evs {
					if store.EventStored(ectx, e) {
						t.Errorf("%s stored by a refused rotation", e.ID)
					}
				}
				lift()
			}
			if got := storedTypes(t, s); len(got) != 1 {
				t.Fatalf("events after the refused rotations: %v, want key.created alone", got)
			}
			ectx, evs, retired, err := rotate("accepted")
			if err != nil || !slicesEqual(retired, []string{"k0"}) {
				t.Fatalf("rotation: %v, retired %v; want k0", err, retired)
			}
			for _, e := range evs {
				if !store.EventStored(ectx, e) {
					t.Errorf("%s not stored with the rotation", e.ID)
				}
			}
			ks := keysByKID(t, s)
			if len(ks) != 2 || !ks["k0"].RetireAt.Equal(retireAt) || !ks["k1"].RetireAt.IsZero() {
				t.Fatalf("keys after the rotation: %+v", ks)
			}

			lift = b.RefuseEvents(t, model.EventKeyRetired)
			e = event("retired-refused", model.EventKeyRetired)
			if err := s.DeleteSigningKey(store.WithEvent(ctx, e), "k0"); err == nil {
				t.Fatal("DeleteSigningKey with its event refused: got nil")
			}
			if keysByKID(t, s)["k0"] == nil {
				t.Fatal("k0 deleted although its key.retired was refused")
			}
			lift()
			e = event("retired", model.EventKeyRetired)
			ectx = store.WithEvent(ctx, e)
			if err := s.DeleteSigningKey(ectx, "k0"); err != nil || !store.EventStored(ectx, e) {
				t.Fatalf("DeleteSigningKey: %v, event stored %v", err, store.EventStored(ectx, e))
			}
			want := []model.EventType{model.EventKeyCreated, model.EventKeyCreated, model.EventKeyRotated, model.EventKeyRetired}
			if got := storedTypes(t, s); !slicesEqual(got, want) {
				t.Errorf("events %v, want %v", got, want)
			}
		})
	}
}

func slicesEqual[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Two instances rotate from the same signing key at once, each with its
// own new key and key.rotated: exactly one rotation lands (the others
// get ErrAlreadyUsed and store neither their key nor their event), so
// the store is left with one signing key, not several or none.
func TestSigningKeyRotationTwoInstances(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			winner, b := raceTwoInstances(t, k, model.EventKeyRotated, store.ErrAlreadyUsed,
				func(s store.Store) error { return s.CreateSigningKey(context.Background(), signingKey("k0", base)) },
				func(s store.Store, ctx context.Context, i int) error {
					_, err := s.RotateSigningKey(ctx, signingKey("k-"+strconv.Itoa(i), base.Add(time.Minute)), "k0", base.Add(24*time.Hour))
					return err
				})
			ks := keysByKID(t, b)
			var signing []string
			for kid, key := range ks {
				if key.RetireAt.IsZero() {
					signing = append(signing, kid)
				}
			}
			if want := "k-" + strconv.Itoa(winner); len(ks) != 2 || len(signing) != 1 || signing[0] != want {
				t.Errorf("after the race: %d keys, not retiring %v; want k0 retiring and %s alone signing", len(ks), signing, want)
			}
		})
	}
}

// deviceRequest is a pending device authorization request.
func deviceRequest(hash string) *model.DeviceCode {
	return &model.DeviceCode{Hash: []byte(hash), UserCode: "UC-" + hash, ClientID: "tv", Scope: "openid",
		Status: model.DeviceCodePending, CreatedAt: base, ExpiresAt: base.Add(10 * time.Minute), Interval: 5 * time.Second}
}

// errAnswered is what an answer's check returns for a request that is no
// longer pending (the sign-in handler's errDeviceClosed).
var errAnswered = errors.New("answered already")

// answer is the update of a user's answer to a pending request: approve
// (with the approving session) or deny.
func answer(approve bool) func(d *model.DeviceCode) error {
	return func(d *model.DeviceCode) error {
		if d.Status != model.DeviceCodePending {
			return errAnswered
		}
		if !approve {
			d.Status = model.DeviceCodeDenied
			return nil
		}
		d.Status, d.UserID, d.SessionID, d.AuthTime = model.DeviceCodeApproved, "u1", "s1", base
		return nil
	}
}

// An approval or denial whose event the database refuses leaves the
// request pending (the device keeps polling; the user can answer again);
// accepted, the answer commits with exactly its event.
func TestDeviceCodeAnswerCommitsWithEvent(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			s := b.Open(t, nil)
			for _, c := range []struct {
				hash    string
				approve bool
				typ     model.EventType
				status  string
			}{
				{"approve", true, model.EventDeviceCodeApproved, model.DeviceCodeApproved},
				{"deny", false, model.EventDeviceCodeDenied, model.DeviceCodeDenied},
			} {
				if err := s.CreateDeviceCode(ctx, deviceRequest(c.hash)); err != nil {
					t.Fatal(err)
				}
				lift := b.RefuseEvents(t, c.typ)
				e := event(c.hash+"-refused", c.typ)
				ectx := store.WithEvent(ctx, e)
				if _, err := s.UpdateDeviceCode(ectx, []byte(c.hash), answer(c.approve)); err == nil || errors.Is(err, errAnswered) {
					t.Fatalf("%s with its event refused: %v, want a plain failure", c.hash, err)
				}
				if dc, err := s.GetDeviceCode(ctx, []byte(c.hash)); err != nil || dc.Status != model.DeviceCodePending || dc.UserID != "" {
					t.Fatalf("request after a refused %s: %+v, %v; want it pending", c.hash, dc, err)
				}
				if store.EventStored(ectx, e) {
					t.Errorf("%s: EventStored after the refusal", c.hash)
				}
				lift()
				e = event(c.hash+"-accepted", c.typ)
				ectx = store.WithEvent(ctx, e)
				dc, err := s.UpdateDeviceCode(ectx, []byte(c.hash), answer(c.approve))
				if err != nil || dc.Status != c.status || !store.EventStored(ectx, e) {
					t.Fatalf("%s: %+v, %v, event stored %v", c.hash, dc, err, store.EventStored(ectx, e))
				}
			}
			want := []model.EventType{model.EventDeviceCodeApproved, model.EventDeviceCodeDenied}
			if got := storedTypes(t, s); !slicesEqual(got, want) {
				t.Errorf("events %v, want %v", got, want)
			}
		})
	}
}

// Two instances answer one request at once, approvals and denials mixed
// (a user clicking twice, or approving on one tab and denying on
// another): exactly one answer lands, with its own event, and the
// request's status is that answer's.
func TestDeviceCodeAnswerTwoInstances(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			winner, b := raceTwoInstances(t, k, model.EventDeviceCodeApproved, store.ErrAlreadyUsed,
				func(s store.Store) error { return s.CreateDeviceCode(context.Background(), deviceRequest("race")) },
				func(s store.Store, ctx context.Context, i int) error {
					_, err := s.UpdateDeviceCode(ctx, []byte("race"), answer(i%4 < 2))
					if errors.Is(err, errAnswered) {
						return store.ErrAlreadyUsed
					}
					return err
				})
			dc, err := b.GetDeviceCode(context.Background(), []byte("race"))
			want := model.DeviceCodeDenied
			if winner%4 < 2 {
				want = model.DeviceCodeApproved
			}
			if err != nil || dc.Status != want {
				t.Errorf("request after the race: %+v, %v; want %s (the winner's answer)", dc, err, want)
			}
		})
	}
}

// streamStatus is the status change of stream st1 to status, recording
// the status it replaced in its event (built in the transaction, after
// the change), as the CAE service does.
func streamStatus(s store.Store, ctx context.Context, status string, e *model.Event) (context.Context, error) {
	var prev string
	ectx := store.WithEvents(ctx, func([]string) []*model.Event {
		if prev == status {
			return nil
		}
		e.Data = map[string]string{"stream_id": "st1", "status": status, "previous": prev}
		return []*model.Event{e}
	})
	_, err := s.UpdateSSFStream(ectx, "st1", func(st *model.SSFStream) error {
		prev, st.Status = st.Status, status
		return nil
	})
	return ectx, err
}

// ssfTestStream is an enabled push stream st1 of client c1.
func ssfTestStream() *model.SSFStream {
	return &model.SSFStream{ID: "st1", ClientID: "c1", Audience: []string{"c1"}, Method: "push",
		EndpointURL: "https://rs.example/events", Status: model.StreamEnabled, CreatedAt: base, UpdatedAt: base}
}

// A stream status change whose ssf.stream_status_changed the database
// refuses changes nothing (a disabling keeps the queued SETs); accepted,
// it commits with its event.
func TestSSFStreamStatusCommitsWithEvent(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			s := b.Open(t, nil)
			if err := s.CreateSSFStream(ctx, ssfTestStream()); err != nil {
				t.Fatal(err)
			}
			if n, err := s.EnqueueSETs(ctx, []*store.SETEntry{{StreamID: "st1", DedupKey: "k1", JTI: "j1",
				EventType: "urn:x", SET: "set", CreatedAt: base}}); err != nil || n != 1 {
				t.Fatalf("EnqueueSETs: %d, %v", n, err)
			}
			v0, err := s.SSFStreamsVersion(ctx)
			if err != nil {
				t.Fatal(err)
			}
			lift := b.RefuseEvents(t, model.EventSSFStreamStatusChanged)
			e := event("disable-refused", model.EventSSFStreamStatusChanged)
			ectx, err := streamStatus(s, ctx, model.StreamDisabled, e)
			if err == nil || store.EventStored(ectx, e) {
				t.Fatalf("disabling with its event refused: %v, event stored %v; want a failure", err, store.EventStored(ectx, e))
			}
			st, err := s.GetSSFStream(ctx, "st1")
			if err != nil || st.Status != model.StreamEnabled {
				t.Fatalf("stream after a refused disabling: %+v, %v; want it enabled", st, err)
			}
			if q, err := s.QueuedSETs(ctx, "st1", 0, 10); err != nil || len(q) != 1 {
				t.Fatalf("queue after a refused disabling: %d SETs, %v; want the one queued", len(q), err)
			}
			if v, err := s.SSFStreamsVersion(ctx); err != nil || v != v0 {
				t.Errorf("streams version %d after a refused change, want %d (other instances must not reload)", v, v0)
			}
			lift()
			e = event("disable", model.EventSSFStreamStatusChanged)
			ectx, err = streamStatus(s, ctx, model.StreamDisabled, e)
			if err != nil || !store.EventStored(ectx, e) || e.Data["previous"] != model.StreamEnabled {
				t.Fatalf("disabling: %v, event stored %v, data %v", err, store.EventStored(ectx, e), e.Data)
			}
			if q, err := s.QueuedSETs(ctx, "st1", 0, 10); err != nil || len(q) != 0 {
				t.Errorf("queue after the disabling: %d SETs, %v; want none", len(q), err)
			}
			if got := storedTypes(t, s); len(got) != 1 {
				t.Errorf("events %v, want one ssf.stream_status_changed", got)
			}
		})
	}
}

// A stream's creation and deletion commit with their events (a
// receiver's ssf.stream_created and ssf.stream_deleted): refused, the
// stream is not created, or not deleted and keeps its queue, and other
// instances see no change; a deletion of a stream already gone records
// nothing.
func TestSSFStreamCreateDeleteCommitWithEvent(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			s := b.Open(t, nil)
			v0, err := s.SSFStreamsVersion(ctx)
			if err != nil {
				t.Fatal(err)
			}
			lift := b.RefuseEvents(t, model.EventSSFStreamCreated)
			e := event("create-refused", model.EventSSFStreamCreated)
			ectx := store.WithEvent(ctx, e)
			if err := s.CreateSSFStream(ectx, ssfTestStream()); err == nil || store.EventStored(ectx, e) {
				t.Fatalf("creation with its event refused: %v, event stored %v; want a failure", err, store.EventStored(ectx, e))
			}
			if _, err := s.GetSSFStream(ctx, "st1"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("stream after a refused creation: %v, want ErrNotFound", err)
			}
			if v, err := s.SSFStreamsVersion(ctx); err != nil || v != v0 {
				t.Errorf("streams version %d after a refused creation, want %d", v, v0)
			}
			lift()
			e = event("create", model.EventSSFStreamCreated)
			ectx = store.WithEvent(ctx, e)
			if err := s.CreateSSFStream(ectx, ssfTestStream()); err != nil || !store.EventStored(ectx, e) {
				t.Fatalf("creation: %v, event stored %v", err, store.EventStored(ectx, e))
			}
			if n, err := s.EnqueueSETs(ctx, []*store.SETEntry{{StreamID: "st1", DedupKey: "k1", JTI: "j1",
				EventType: "urn:x", SET: "set", CreatedAt: base}}); err != nil || n != 1 {
				t.Fatalf("EnqueueSETs: %d, %v", n, err)
			}
			v1, err := s.SSFStreamsVersion(ctx)
			if err != nil {
				t.Fatal(err)
			}
			lift = b.RefuseEvents(t, model.EventSSFStreamDeleted)
			e = event("delete-refused", model.EventSSFStreamDeleted)
			ectx = store.WithEvent(ctx, e)
			if err := s.DeleteSSFStream(ectx, "st1"); err == nil || store.EventStored(ectx, e) {
				t.Fatalf("deletion with its event refused: %v, event stored %v; want a failure", err, store.EventStored(ectx, e))
			}
			if _, err := s.GetSSFStream(ctx, "st1"); err != nil {
				t.Fatalf("stream after a refused deletion: %v", err)
			}
			if q, err := s.QueuedSETs(ctx, "st1", 0, 10); err != nil || len(q) != 1 {
				t.Fatalf("queue after a refused deletion: %d SETs, %v; want the one queued", len(q), err)
			}
			if v, err := s.SSFStreamsVersion(ctx); err != nil || v != v1 {
				t.Errorf("streams version %d after a refused deletion, want %d", v, v1)
			}
			lift()
			e = event("delete", model.EventSSFStreamDeleted)
			ectx = store.WithEvent(ctx, e)
			if err := s.DeleteSSFStream(ectx, "st1"); err != nil || !store.EventStored(ectx, e) {
				t.Fatalf("deletion: %v, event stored %v", err, store.EventStored(ectx, e))
			}
			if q, err := s.QueuedSETs(ctx, "st1", 0, 10); err != nil || len(q) != 0 {
				t.Errorf("queue after the deletion: %d SETs, %v; want none", len(q), err)
			}
			e = event("delete-again", model.EventSSFStreamDeleted)
			ectx = store.WithEvent(ctx, e)
			if err := s.DeleteSSFStream(ectx, "st1"); !errors.Is(err, store.ErrNotFound) || store.EventStored(ectx, e) {
				t.Errorf("deleting a deleted stream: %v, event stored %v; want ErrNotFound and no event", err, store.EventStored(ectx, e))
			}
			if got := storedTypes(t, s); len(got) != 2 || got[0] != model.EventSSFStreamCreated || got[1] != model.EventSSFStreamDeleted {
				t.Errorf("events %v, want ssf.stream_created, ssf.stream_deleted", got)
			}
		})
	}
}

// Two instances change one stream's status many times at once: every
// change records the status it replaced, read under the row lock in its
// transaction, so the recorded changes form one unbroken chain from the
// first status to the stored one (a change recorded apart from its write
// could name a status another change had already replaced).
func TestSSFStreamStatusTwoInstances(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			open := k.Opener(t, nil)
			a, b := open(), open()
			if err := a.CreateSSFStream(ctx, ssfTestStream()); err != nil {
				t.Fatal(err)
			}
			statuses := []string{model.StreamPaused, model.StreamEnabled, model.StreamDisabled}
			const n = 24
			var wg sync.WaitGroup
			errs := make([]error, n)
			start := make(chan struct{})
			for i := range n {
				s := a
				if i%2 == 1 {
					s = b
				}
				wg.Go(func() {
					<-start
					_, errs[i] = streamStatus(s, ctx, statuses[i%3], event("ev-"+strconv.Itoa(i), model.EventSSFStreamStatusChanged))
				})
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("change %d: %v", i, err)
				}
			}
			evs, err := a.EventsAfter(ctx, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			cur := model.StreamEnabled
			for _, e := range evs {
				if e.Data["previous"] != cur || e.Data["status"] == cur {
					t.Fatalf("event %s records %s -> %s, but the status was %s: %v", e.ID, e.Data["previous"], e.Data["status"], cur, evs)
				}
				cur = e.Data["status"]
			}
			st, err := a.GetSSFStream(ctx, "st1")
			if err != nil || st.Status != cur {
				t.Errorf("stream status %+v, %v; the recorded changes end at %s", st, err, cur)
			}
		})
	}
}
