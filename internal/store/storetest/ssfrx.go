package storetest

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// testSSFReceiverStreams checks Ward's streams at other transmitters:
// every field round-trips, a second put replaces all but CreatedAt, list
// by name, delete.
func testSSFReceiverStreams(t *testing.T, s store.Store) {
	_, err := s.GetSSFReceiverStream(ctx, "edr")
	wantErr(t, "GetSSFReceiverStream of none", err, store.ErrNotFound)
	full := &model.SSFReceiverStream{
		Name: "edr", Issuer: "https://edr.example", StreamID: "st-1", Delivery: model.DeliveryPoll,
		EndpointURL: "https://edr.example/poll/st-1", Audience: []string{"https://ward.example", "ward"},
		EventsDelivered: []string{"https://schemas.openid.net/secevent/caep/event-type/session-revoked"},
		Status:          model.StreamEnabled, StatusReason: "why", PushTokenHash: []byte{1, 2, 0, 3}, PrevPushTokenHash: []byte{9},
		ConfigDigest: "d1", VerifiedAt: at(time.Minute), LastError: "boom", CreatedAt: at(0), UpdatedAt: at(time.Second),
	}
	must(t, "PutSSFReceiverStream", s.PutSSFReceiverStream(ctx, full))
	got, err := s.GetSSFReceiverStream(ctx, "edr")
	must(t, "GetSSFReceiverStream", err)
	same(t, "ssf receiver stream", got, full, normSSFRX)

	next := *full
	next.StreamID, next.Delivery, next.EndpointURL, next.Audience = "st-2", model.DeliveryPush, "https://ward.example/ssf/receive/edr", nil
	next.EventsDelivered, next.PushTokenHash, next.PrevPushTokenHash, next.LastError = nil, []byte{7}, nil, ""
	next.CreatedAt, next.UpdatedAt = at(time.Hour), at(time.Hour)
	must(t, "PutSSFReceiverStream again", s.PutSSFReceiverStream(ctx, &next))
	got, err = s.GetSSFReceiverStream(ctx, "edr")
	must(t, "GetSSFReceiverStream again", err)
	want := next
	want.CreatedAt = full.CreatedAt // kept
	same(t, "replaced ssf receiver stream", got, &want, normSSFRX)

	must(t, "PutSSFReceiverStream second", s.PutSSFReceiverStream(ctx, &model.SSFReceiverStream{Name: "casb", Issuer: "https://casb.example", CreatedAt: at(0), UpdatedAt: at(0)}))
	l, err := s.ListSSFReceiverStreams(ctx)
	must(t, "ListSSFReceiverStreams", err)
	if len(l) != 2 || l[0].Name != "casb" || l[1].Name != "edr" || l[1].StreamID != "st-2" {
		t.Fatalf("ListSSFReceiverStreams: %+v", l)
	}
	must(t, "DeleteSSFReceiverStream", s.DeleteSSFReceiverStream(ctx, "casb"))
	wantErr(t, "DeleteSSFReceiverStream again", s.DeleteSSFReceiverStream(ctx, "casb"), store.ErrNotFound)
	if l, _ := s.ListSSFReceiverStreams(ctx); len(l) != 1 {
		t.Fatalf("after delete: %d streams", len(l))
	}
}

func normSSFRX(r model.SSFReceiverStream) model.SSFReceiverStream {
	r.VerifiedAt, r.CreatedAt, r.UpdatedAt = nt(r.VerifiedAt), nt(r.CreatedAt), nt(r.UpdatedAt)
	r.Audience, r.EventsDelivered = nl(r.Audience), nl(r.EventsDelivered)
	if len(r.PushTokenHash) == 0 {
		r.PushTokenHash = nil
	}
	if len(r.PrevPushTokenHash) == 0 {
		r.PrevPushTokenHash = nil
	}
	return r
}

// testSSFSignals checks the record of accepted SETs: a jti is accepted
// once per receiver until it expires (by the store's clock), its signal
// event commits with it and a replay's does not, concurrent deliveries
// of one SET record it once, and the purge forgets expired records only.
func testSSFSignals(t *testing.T, s store.Store, clk *clock.Fake) {
	exp := clk.Now().Add(time.Hour)
	wantStored := func(t *testing.T, what string, ectx context.Context, e *model.Event, stored bool) {
		t.Helper()
		if got := store.EventStored(ectx, e); got != stored {
			t.Errorf("%s: EventStored = %v, want %v", what, got, stored)
		}
		got := storedEvents(t, s)[e.ID]
		switch {
		case stored && got == nil:
			t.Errorf("%s: event %s not in the events table", what, e.ID)
		case stored:
			same(t, what+": stored event", &got.Event, e, normEvent)
		case got != nil:
			t.Errorf("%s: event %s in the events table, want none", what, e.ID)
		}
	}
	e := pendingEvent("ev-signal", model.EventSSFSignalReceived, "u1")
	ectx := store.WithEvent(ctx, e)
	must(t, "RecordSSFSignal", s.RecordSSFSignal(ectx, "edr", "jti-1", exp))
	wantStored(t, "RecordSSFSignal with its event", ectx, e, true)

	e2 := pendingEvent("ev-signal-replay", model.EventSSFSignalReceived, "u1")
	ectx = store.WithEvent(ctx, e2)
	wantErr(t, "RecordSSFSignal replayed", s.RecordSSFSignal(ectx, "edr", "jti-1", exp), store.ErrReplay)
	wantStored(t, "RecordSSFSignal replayed", ectx, e2, false)
	// Another transmitter may use the same jti.
	must(t, "RecordSSFSignal other receiver", s.RecordSSFSignal(ctx, "casb", "jti-1", exp))

	errs := race(func(int) error { return s.RecordSSFSignal(ctx, "edr", "jti-race", exp) })
	oneWinner(t, "concurrent RecordSSFSignal", errs, store.ErrReplay)

	// Expired: purged, and taken over by a new record even before.
	must(t, "RecordSSFSignal short", s.RecordSSFSignal(ctx, "edr", "jti-short", clk.Now().Add(time.Minute)))
	clk.Advance(2 * time.Minute)
	must(t, "RecordSSFSignal over an expired record", s.RecordSSFSignal(ctx, "edr", "jti-short", clk.Now().Add(time.Minute)))
	n, err := s.PurgeSSFSignals(ctx, clk.Now().Add(30*time.Minute))
	must(t, "PurgeSSFSignals", err)
	if n != 1 {
		t.Errorf("PurgeSSFSignals purged %d, want 1 (jti-short)", n)
	}
	wantErr(t, "RecordSSFSignal after the purge of others", s.RecordSSFSignal(ctx, "edr", "jti-1", exp), store.ErrReplay)
}

// testUsersByEmail checks the lookup that maps email subjects: case
// insensitive, every match up to the limit (so a caller sees an
// ambiguous email), never a user without an email.
func testUsersByEmail(t *testing.T, s store.Store) {
	a, b, c, d := fullUser("u1", "alice"), fullUser("u2", "bob"), fullUser("u3", "carol"), fullUser("u4", "dave")
	a.Email, b.Email, c.Email, d.Email = "Alice@Example.com", "shared@example.com", "SHARED@example.com", ""
	for _, u := range []*model.User{a, b, c, d} {
		must(t, "CreateUser", s.CreateUser(ctx, u))
	}
	us, err := s.UsersByEmail(ctx, "alice@EXAMPLE.com", 2)
	must(t, "UsersByEmail", err)
	if len(us) != 1 || us[0].ID != "u1" {
		t.Fatalf("UsersByEmail(alice) = %v", ids(us))
	}
	us, err = s.UsersByEmail(ctx, "shared@example.com", 2)
	must(t, "UsersByEmail shared", err)
	if !reflect.DeepEqual(ids(us), []string{"u2", "u3"}) {
		t.Fatalf("UsersByEmail(shared) = %v, want both", ids(us))
	}
	if us, _ := s.UsersByEmail(ctx, "shared@example.com", 1); len(us) != 1 {
		t.Fatalf("UsersByEmail limit 1 = %d users", len(us))
	}
	for _, q := range []string{"", "nobody@example.com", "alice"} {
		us, err := s.UsersByEmail(ctx, q, 2)
		if err != nil || len(us) != 0 {
			t.Errorf("UsersByEmail(%q) = %v, %v; want none", q, ids(us), err)
		}
	}
}

func ids(us []*model.User) []string {
	var out []string
	for _, u := range us {
		out = append(out, u.ID)
	}
	return out
}
