package cae_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
	"github.com/ward-idp/ward/internal/tokens"
)

// transmitter starts a transmitter (not serving) on st.
func transmitter(t *testing.T, st store.Store) *cae.Service {
	t.Helper()
	return transmitterOn(t, st, bus.NewLocal())
}

// transmitterOn is transmitter with the bus b.
func transmitterOn(t *testing.T, st store.Store, b bus.Bus) *cae.Service {
	t.Helper()
	ctx := context.Background()
	kek, err := secret.NewKEK(bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := tokens.NewKeyManager(ctx, tokens.KeyOptions{Store: st, KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := cae.Start(ctx, cae.Options{Issuer: "https://ward.example", Store: st, Keys: keys, KEK: kek, RescanInterval: time.Hour},
		cae.Wiring{Bus: b})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc
}

// statusChanges returns the stored ssf.stream_status_changed, oldest
// first.
func statusChanges(t *testing.T, st store.Store) []*store.StoredEvent {
	t.Helper()
	return eventsOf(t, st, model.EventSSFStreamStatusChanged)
}

// pollFixture opens a store of kind k with the poll stream st1 of c1 and
// a transmitter on it.
func pollFixture(t *testing.T, k backendtest.Kind) (backendtest.Backend, store.Store, *cae.Service) {
	t.Helper()
	b := k.New(t)
	st := b.Open(t, nil)
	svc := transmitter(t, st)
	if err := st.CreateSSFStream(context.Background(), pollStream()); err != nil {
		t.Fatal(err)
	}
	return b, st, svc
}

func pollStream() *model.SSFStream {
	now := time.Now()
	return &model.SSFStream{ID: "st1", ClientID: "c1", Audience: []string{"c1"}, Method: model.DeliveryPoll,
		Status: model.StreamEnabled, CreatedAt: now, UpdatedAt: now}
}

// A status change by an administrator whose ssf.stream_status_changed the
// database refuses changes nothing: the stream keeps its status and no
// stream-updated SET tells the receiver otherwise. Accepted, the change
// commits with exactly one event naming the status it replaced.
func TestTransmitterStatusCommitsWithEvent(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b, st, svc := pollFixture(t, k)
			lift := b.RefuseEvents(t, model.EventSSFStreamStatusChanged)
			if _, err := svc.SetStatusAsTransmitter(ctx, "admin-1", "st1", model.StreamPaused, "maintenance"); err == nil {
				t.Fatal("status change with its record refused: got nil")
			}
			got, err := st.GetSSFStream(ctx, "st1")
			if err != nil || got.Status != model.StreamEnabled {
				t.Fatalf("stream after a refused change: %+v, %v; want it enabled", got, err)
			}
			if q, err := st.QueuedSETs(ctx, "st1", 0, 10); err != nil || len(q) != 0 {
				t.Fatalf("%d SETs queued after a refused change (%v), want none", len(q), err)
			}
			if evs := statusChanges(t, st); len(evs) != 0 {
				t.Fatalf("%d status changes recorded after the refusal, want none", len(evs))
			}
			lift()
			if _, err := svc.SetStatusAsTransmitter(ctx, "admin-1", "st1", model.StreamPaused, "maintenance"); err != nil {
				t.Fatal(err)
			}
			got, err = st.GetSSFStream(ctx, "st1")
			if err != nil || got.Status != model.StreamPaused {
				t.Fatalf("stream after the change: %+v, %v; want it paused", got, err)
			}
			evs := statusChanges(t, st)
			if len(evs) != 1 || evs[0].Actor != "admin-1" || evs[0].Data["previous"] != model.StreamEnabled || evs[0].Data["status"] != model.StreamPaused {
				t.Fatalf("status changes recorded: %+v, want one enabled -> paused by admin-1", evs)
			}
			if q, err := st.QueuedSETs(ctx, "st1", 0, 10); err != nil || len(q) != 1 || q[0].EventType != cae.EventStreamUpdated {
				t.Errorf("queued after the change: %v, %v; want the stream-updated SET", q, err)
			}
			// The same status again is no change: nothing recorded.
			if _, err := svc.SetStatusAsTransmitter(ctx, "admin-1", "st1", model.StreamPaused, "again"); err != nil {
				t.Fatal(err)
			}
			if n := len(statusChanges(t, st)); n != 1 {
				t.Errorf("%d status changes recorded after repeating one, want 1", n)
			}
		})
	}
}

// Administrators on two instances change one stream's status at once:
// each recorded change names the status it actually replaced (read and
// written in its transaction), so the records form one chain ending at
// the stored status, and a change to the status already in force records
// nothing.
func TestTransmitterStatusTwoInstances(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			sts := []store.Store{b.Open(t, nil), b.Open(t, nil)}
			svcs := []*cae.Service{transmitter(t, sts[0]), transmitter(t, sts[1])}
			if err := sts[0].CreateSSFStream(ctx, pollStream()); err != nil {
				t.Fatal(err)
			}
			statuses := []string{model.StreamPaused, model.StreamEnabled, model.StreamDisabled}
			const n = 12
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					if _, err := svcs[i%2].SetStatusAsTransmitter(ctx, "admin-"+strconv.Itoa(i), "st1", statuses[i%3], ""); err != nil {
						t.Errorf("change %d: %v", i, err)
					}
				})
			}
			close(start)
			wg.Wait()
			cur := model.StreamEnabled
			evs := statusChanges(t, sts[1])
			for _, e := range evs {
				if e.Data["previous"] != cur || e.Data["status"] == cur {
					t.Fatalf("a change recorded as %s -> %s while the status was %s", e.Data["previous"], e.Data["status"], cur)
				}
				cur = e.Data["status"]
			}
			got, err := sts[1].GetSSFStream(ctx, "st1")
			if err != nil || got.Status != cur {
				t.Errorf("stream status %+v, %v; the recorded changes end at %s", got, err, cur)
			}
			if len(evs) == 0 {
				t.Error("no change recorded")
			}
		})
	}
}

// A receiver's own status change (pausing its stream stops CAE at that
// resource: what an attacker holding its credentials would do) commits
// with its ssf.stream_status_changed, the client as actor; refused, it
// changes nothing. Another client cannot change it and records nothing.
func TestReceiverStatusCommitsWithEvent(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b, st, svc := pollFixture(t, k)
			if _, err := svc.SetStatus(ctx, "c2", "st1", model.StreamPaused, ""); err == nil {
				t.Fatal("another client paused the stream")
			}
			lift := b.RefuseEvents(t, model.EventSSFStreamStatusChanged)
			if _, err := svc.SetStatus(ctx, "c1", "st1", model.StreamPaused, "going away"); err == nil {
				t.Fatal("status change with its record refused: got nil")
			}
			if got, err := st.GetSSFStream(ctx, "st1"); err != nil || got.Status != model.StreamEnabled {
				t.Fatalf("stream after a refused change: %+v, %v; want it enabled", got, err)
			}
			if evs := statusChanges(t, st); len(evs) != 0 {
				t.Fatalf("%d status changes recorded, want none", len(evs))
			}
			lift()
			if _, err := svc.SetStatus(ctx, "c1", "st1", model.StreamPaused, "going away"); err != nil {
				t.Fatal(err)
			}
			evs := statusChanges(t, st)
			if len(evs) != 1 || evs[0].Actor != "c1" || evs[0].ClientID != "c1" || evs[0].Reason != "receiver" ||
				evs[0].Data["previous"] != model.StreamEnabled || evs[0].Data["status"] != model.StreamPaused || evs[0].Data["status_reason"] != "going away" {
				t.Fatalf("status changes recorded: %+v, want one enabled -> paused by c1 (receiver)", evs)
			}
			if q, err := st.QueuedSETs(ctx, "st1", 0, 10); err != nil || len(q) != 1 || q[0].EventType != cae.EventStreamUpdated {
				t.Errorf("queued after the change: %v, %v; want the stream-updated SET", q, err)
			}
		})
	}
}

// streamChanges returns the stored ssf.stream_created, ssf.stream_updated
// and ssf.stream_deleted, oldest first.
func streamChanges(t *testing.T, st store.Store) []*store.StoredEvent {
	t.Helper()
	return eventsOf(t, st, model.EventSSFStreamCreated, model.EventSSFStreamUpdated, model.EventSSFStreamDeleted)
}

// Secrets of the push stream in TestReceiverStreamChangesCommitWithEvents:
// none may reach a stored event.
const (
	pushHeader  = "Bearer rx-header-secret-1"
	pushHeader2 = "Bearer rx-header-secret-2"
	pushURL     = "https://rx.example/ssf/push?key=url-secret"
)

// A receiver creating, updating and deleting its stream (narrowing
// events_requested or moving the push endpoint stops CAE at that resource
// as surely as a deletion: what someone holding its credentials would do)
// commits each change with exactly one event, the client as actor;
// refused, the change does not land. An update that changes nothing
// records nothing, another client can neither change nor delete the
// stream and records nothing, and no stored event holds the push
// authorization header or more of the endpoint than its host.
func TestReceiverStreamChangesCommitWithEvents(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			st := b.Open(t, nil)
			svc := transmitter(t, st)
			one := func(n int) *store.StoredEvent {
				t.Helper()
				evs := streamChanges(t, st)
				if len(evs) != n {
					t.Fatalf("%d stream changes recorded, want %d: %+v", len(evs), n, evs)
				}
				if n == 0 {
					return nil
				}
				e := evs[n-1]
				if e.Actor != "c1" || e.ClientID != "c1" || e.Reason != "receiver" {
					t.Errorf("%s: actor %q, client %q, reason %q; want c1, c1, receiver", e.Type, e.Actor, e.ClientID, e.Reason)
				}
				return e
			}
			header, header2 := pushHeader, pushHeader2
			both := []string{cae.EventSessionRevoked, cae.EventCredentialChange}
			create := cae.StreamRequest{EventsRequested: &both,
				Delivery: &cae.Delivery{Method: model.DeliveryPush, EndpointURL: pushURL, AuthorizationHeader: &header}}

			// Create: refused, no stream; accepted, one event.
			lift := b.RefuseEvents(t, model.EventSSFStreamCreated)
			if _, err := svc.CreateStream(ctx, "c1", create); err == nil {
				t.Fatal("creation with its record refused: got nil")
			}
			if l, err := st.ListSSFStreams(ctx, "c1"); err != nil || len(l) != 0 {
				t.Fatalf("streams after a refused creation: %d, %v; want none", len(l), err)
			}
			one(0)
			lift()
			s, err := svc.CreateStream(ctx, "c1", create)
			if err != nil {
				t.Fatal(err)
			}
			e := one(1)
			want := map[string]string{"stream_id": s.ID, "method": model.DeliveryPush, "endpoint_host": "rx.example",
				"events_requested": strings.Join(both, ","), "events_delivered": strings.Join(both, ",")}
			if e.Type != model.EventSSFStreamCreated || !maps.Equal(e.Data, want) {
				t.Fatalf("creation recorded as %s %v, want %s %v", e.Type, e.Data, model.EventSSFStreamCreated, want)
			}

			// Another client cannot change or delete it, and nothing is
			// recorded.
			narrow := []string{cae.EventCredentialChange}
			if _, err := svc.UpdateStream(ctx, "c2", s.ID, cae.StreamRequest{EventsRequested: &narrow}, false); err == nil {
				t.Error("another client updated the stream")
			}
			if err := svc.DeleteStream(ctx, "c2", s.ID); err == nil {
				t.Error("another client deleted the stream")
			}
			if got, err := st.GetSSFStream(ctx, s.ID); err != nil || len(got.EventsDelivered) != 2 {
				t.Fatalf("stream after another client's attempts: %+v, %v; want it unchanged", got, err)
			}
			one(1)

			// Narrowing the events: refused, unchanged; accepted, one
			// event naming the events dropped.
			lift = b.RefuseEvents(t, model.EventSSFStreamUpdated)
			if _, err := svc.UpdateStream(ctx, "c1", s.ID, cae.StreamRequest{EventsRequested: &narrow}, false); err == nil {
				t.Fatal("update with its record refused: got nil")
			}
			if got, err := st.GetSSFStream(ctx, s.ID); err != nil || !slices.Equal(got.EventsDelivered, both) {
				t.Fatalf("stream after a refused update: %+v, %v; want it delivering both events", got, err)
			}
			one(1)
			lift()
			if _, err := svc.UpdateStream(ctx, "c1", s.ID, cae.StreamRequest{EventsRequested: &narrow}, false); err != nil {
				t.Fatal(err)
			}
			e = one(2)
			if e.Type != model.EventSSFStreamUpdated || e.Data["changed"] != "events_requested" ||
				e.Data["events_removed"] != cae.EventSessionRevoked || e.Data["events_added"] != "" ||
				e.Data["events_delivered"] != cae.EventCredentialChange || e.Data["stream_id"] != s.ID ||
				e.Data["endpoint_host"] != "rx.example" {
				t.Fatalf("narrowing recorded as %s %v", e.Type, e.Data)
			}

			// The same again, a PATCH of the push endpoint without the
			// header (kept), and a PUT of what is stored (the same header
			// sealed again): no change, nothing recorded.
			if _, err := svc.UpdateStream(ctx, "c1", s.ID, cae.StreamRequest{EventsRequested: &narrow}, false); err != nil {
				t.Fatal(err)
			}
			same := cae.StreamRequest{Delivery: &cae.Delivery{Method: model.DeliveryPush, EndpointURL: pushURL}}
			if _, err := svc.UpdateStream(ctx, "c1", s.ID, same, false); err != nil {
				t.Fatal(err)
			}
			put := cae.StreamRequest{EventsRequested: &narrow,
				Delivery: &cae.Delivery{Method: model.DeliveryPush, EndpointURL: pushURL, AuthorizationHeader: &header}}
			if _, err := svc.UpdateStream(ctx, "c1", s.ID, put, true); err != nil {
				t.Fatal(err)
			}
			one(2)

			// Another header; then another endpoint (which drops the
			// header, not sent again).
			if _, err := svc.UpdateStream(ctx, "c1", s.ID, cae.StreamRequest{Delivery: &cae.Delivery{
				Method: model.DeliveryPush, EndpointURL: pushURL, AuthorizationHeader: &header2}}, false); err != nil {
				t.Fatal(err)
			}
			if e = one(3); e.Data["changed"] != "authorization_header" || e.Data["events_removed"] != "" {
				t.Fatalf("header change recorded as %v", e.Data)
			}
			if _, err := svc.UpdateStream(ctx, "c1", s.ID, cae.StreamRequest{Delivery: &cae.Delivery{
				Method: model.DeliveryPush, EndpointURL: "https://elsewhere.example/in?k=url-secret-2"}}, false); err != nil {
				t.Fatal(err)
			}
			if e = one(4); e.Data["changed"] != "endpoint_url,authorization_header" || e.Data["endpoint_host"] != "elsewhere.example" ||
				e.Data["previous_endpoint_host"] != "rx.example" || e.Data["previous_method"] != "" {
				t.Fatalf("endpoint change recorded as %v", e.Data)
			}

			// Delete: refused, the stream stays; accepted, one event.
			lift = b.RefuseEvents(t, model.EventSSFStreamDeleted)
			if err := svc.DeleteStream(ctx, "c1", s.ID); err == nil {
				t.Fatal("deletion with its record refused: got nil")
			}
			if _, err := st.GetSSFStream(ctx, s.ID); err != nil {
				t.Fatalf("stream after a refused deletion: %v", err)
			}
			one(4)
			lift()
			if err := svc.DeleteStream(ctx, "c1", s.ID); err != nil {
				t.Fatal(err)
			}
			e = one(5)
			want = map[string]string{"stream_id": s.ID, "method": model.DeliveryPush, "endpoint_host": "elsewhere.example",
				"events_requested": cae.EventCredentialChange, "events_delivered": cae.EventCredentialChange}
			if e.Type != model.EventSSFStreamDeleted || !maps.Equal(e.Data, want) {
				t.Fatalf("deletion recorded as %s %v, want %s %v", e.Type, e.Data, model.EventSSFStreamDeleted, want)
			}
			if _, err := st.GetSSFStream(ctx, s.ID); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("stream after the deletion: %v, want ErrNotFound", err)
			}

			all, err := st.EventsAfter(ctx, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range all {
				j, err := json.Marshal(e)
				if err != nil {
					t.Fatal(err)
				}
				for _, secret := range []string{"rx-header-secret", "url-secret", "/ssf/push", "k="} {
					if strings.Contains(string(j), secret) {
						t.Errorf("stored %s holds %q: %s", e.Type, secret, j)
					}
				}
			}
		})
	}
}

// eventsOf returns the stored events of the given types, oldest first.
func eventsOf(t *testing.T, st store.Store, types ...model.EventType) []*store.StoredEvent {
	t.Helper()
	evs, err := st.EventsAfter(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []*store.StoredEvent
	for _, e := range evs {
		if slices.Contains(types, e.Type) {
			out = append(out, e)
		}
	}
	return out
}

// A receiver that removes a subject from its stream (a victim, so that
// no revocation about them reaches it) is recorded, committed with the
// change: the subject's format, a digest (never the identifier) and the
// Ward user it names. Taking it back is recorded too; a removal or an
// addition that changes nothing, another client's attempt and a refused
// record change nothing and record nothing.
func TestReceiverSubjectChangesCommitWithEvents(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b, st, svc := pollFixture(t, k)
			u := &model.User{ID: "u-victim", Username: "victim", CreatedAt: time.Now(), UpdatedAt: time.Now()}
			if err := st.CreateUser(ctx, u); err != nil {
				t.Fatal(err)
			}
			victim := []byte(`{"format":"complex","user":{"format":"iss_sub","iss":"https://ward.example","sub":"u-victim"}}`)
			email := []byte(`{"format":"email","email":"someone.secret@example.org"}`)
			excluded := func() []string {
				t.Helper()
				got, err := st.GetSSFStream(ctx, "st1")
				if err != nil {
					t.Fatal(err)
				}
				return got.Excluded
			}

			if err := svc.RemoveSubject(ctx, "c2", "st1", victim); err == nil {
				t.Fatal("another client removed a subject")
			}
			lift := b.RefuseEvents(t, model.EventSSFSubjectRemoved)
			if err := svc.RemoveSubject(ctx, "c1", "st1", victim); err == nil {
				t.Fatal("removal with its record refused: got nil")
			}
			if ex := excluded(); len(ex) != 0 {
				t.Fatalf("excluded after a refused removal: %v", ex)
			}
			if evs := eventsOf(t, st, model.EventSSFSubjectRemoved, model.EventSSFSubjectAdded); len(evs) != 0 {
				t.Fatalf("%d subject changes recorded, want none", len(evs))
			}
			lift()
			for _, s := range [][]byte{victim, victim, email} { // the second is no change
				if err := svc.RemoveSubject(ctx, "c1", "st1", s); err != nil {
					t.Fatal(err)
				}
			}
			if err := svc.AddSubject(ctx, "c1", "st1", email); err != nil {
				t.Fatal(err)
			}
			if err := svc.AddSubject(ctx, "c1", "st1", email); err != nil { // no change
				t.Fatal(err)
			}
			if ex := excluded(); len(ex) != 1 {
				t.Fatalf("excluded: %v, want the victim only", ex)
			}
			evs := eventsOf(t, st, model.EventSSFSubjectRemoved, model.EventSSFSubjectAdded)
			if len(evs) != 3 {
				t.Fatalf("%d subject changes recorded, want 3: %+v", len(evs), evs)
			}
			v, rm, add := evs[0], evs[1], evs[2]
			if v.Type != model.EventSSFSubjectRemoved || v.UserID != "u-victim" || v.Actor != "c1" || v.ClientID != "c1" ||
				v.Data[model.DataSSFStreamID] != "st1" || v.Data[model.DataSSFSubjectFormat] != "complex" || len(v.Data[model.DataSSFSubjectDigest]) != 32 {
				t.Errorf("victim's removal recorded as %+v", v)
			}
			if rm.Type != model.EventSSFSubjectRemoved || rm.UserID != "" || rm.Data[model.DataSSFSubjectFormat] != "email" {
				t.Errorf("e-mail subject's removal recorded as %+v", rm)
			}
			if add.Type != model.EventSSFSubjectAdded || add.Data[model.DataSSFSubjectDigest] != rm.Data[model.DataSSFSubjectDigest] ||
				add.Data[model.DataSSFSubjectDigest] == v.Data[model.DataSSFSubjectDigest] {
				t.Errorf("addition recorded as %+v; its digest must match the removal's (%s) and differ from the victim's", add, rm.Data[model.DataSSFSubjectDigest])
			}
			for _, e := range evs {
				if raw, _ := json.Marshal(e); strings.Contains(string(raw), "someone.secret") {
					t.Errorf("the subject's identifier reached an event: %s", raw)
				}
			}
		})
	}
}

// A subscriber of the bus that fails after a stream change committed with
// its record does not fail the receiver's request: the change was made,
// and an error would make the receiver make it again (a second stream).
func TestStreamChangesSurviveFailingSubscriber(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			st := k.New(t).Open(t, nil)
			lb := bus.NewLocal()
			lb.Subscribe("failing", func(context.Context, *model.Event) error { return errors.New("subscriber down") })
			svc := transmitterOn(t, st, lb)
			created, err := svc.CreateStream(ctx, "c1", cae.StreamRequest{Delivery: &cae.Delivery{Method: model.DeliveryPoll}})
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if _, err := svc.SetStatus(ctx, "c1", created.ID, model.StreamPaused, ""); err != nil {
				t.Fatalf("status: %v", err)
			}
			if err := svc.RemoveSubject(ctx, "c1", created.ID, []byte(`{"format":"email","email":"a@example.org"}`)); err != nil {
				t.Fatalf("remove subject: %v", err)
			}
			if err := svc.DeleteStream(ctx, "c1", created.ID); err != nil {
				t.Fatalf("delete: %v", err)
			}
			evs := eventsOf(t, st, model.EventSSFStreamCreated, model.EventSSFStreamStatusChanged, model.EventSSFSubjectRemoved, model.EventSSFStreamDeleted)
			if len(evs) != 4 {
				t.Fatalf("%d changes recorded, want 4: %+v", len(evs), evs)
			}
		})
	}
}

// Removals of one subject racing on two instances: the subject is
// excluded once and its removal recorded once (each run decides under
// the row lock whether it changed the list).
func TestSubjectRemovalTwoInstances(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			sts := []store.Store{b.Open(t, nil), b.Open(t, nil)}
			svcs := []*cae.Service{transmitter(t, sts[0]), transmitter(t, sts[1])}
			if err := sts[0].CreateSSFStream(ctx, pollStream()); err != nil {
				t.Fatal(err)
			}
			subject := []byte(`{"format":"email","email":"victim@example.org"}`)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range 8 {
				wg.Go(func() {
					<-start
					if err := svcs[i%2].RemoveSubject(ctx, "c1", "st1", subject); err != nil {
						t.Errorf("removal %d: %v", i, err)
					}
				})
			}
			close(start)
			wg.Wait()
			got, err := sts[1].GetSSFStream(ctx, "st1")
			if err != nil || len(got.Excluded) != 1 {
				t.Fatalf("excluded %v (%v), want the subject once", got, err)
			}
			if evs := eventsOf(t, sts[1], model.EventSSFSubjectRemoved); len(evs) != 1 {
				t.Errorf("%d removals recorded, want 1", len(evs))
			}
		})
	}
}
