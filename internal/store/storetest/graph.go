package storetest

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// graphEvents appends the events of the graph tests and returns them with
// their sequence numbers. u1 signs in to s1 on device d1 from A and uses
// it; s1's refresh token is presented from B with another key; u2 uses s3
// from A; a client's own token is issued at A; one event of u1 lies
// before the window; a resource reports a use of s1 that names no user.
// s1 is stored (its events are found under its user), s3 is not.
func graphEvents(t *testing.T, s store.Store) map[string]*store.StoredEvent {
	t.Helper()
	riskUser(t, s, "u1", "s1")
	const a, b = "192.0.2.10", "198.51.100.20"
	type ev struct {
		name                              string
		typ                               model.EventType
		user, session, client, device, ip string
		outcome, reason                   string
		d                                 time.Duration
	}
	evs := []ev{
		{"old", model.EventTokenIssued, "u1", "s1", "spa", "d1", a, model.OutcomeSuccess, "", -time.Hour},
		{"signin", model.EventSignInSucceeded, "u1", "s1", "spa", "", a, model.OutcomeSuccess, "", 0},
		{"issued", model.EventTokenIssued, "u1", "s1", "spa", "d1", a, model.OutcomeSuccess, "", time.Minute},
		{"refresh1", model.EventTokenRefreshed, "u1", "s1", "spa", "d1", a, model.OutcomeSuccess, "", 2 * time.Minute},
		{"refresh2", model.EventTokenRefreshed, "u1", "s1", "spa", "d1", a, model.OutcomeSuccess, "", 3 * time.Minute},
		{"u2use", model.EventTokenUsed, "u2", "s3", "spa", "", a, model.OutcomeSuccess, "", 4 * time.Minute},
		{"stolen", model.EventTokenRequestFailed, "u1", "s1", "spa", "", b, model.OutcomeFailure, "refresh_key_mismatch", 5 * time.Minute},
		{"svc", model.EventTokenIssued, "", "", "svc", "", a, model.OutcomeSuccess, "", 6 * time.Minute},
		{"refresh3", model.EventTokenRefreshed, "u1", "s1", "spa", "d1", a, model.OutcomeSuccess, "", 7 * time.Minute},
		{"late", model.EventTokenUsed, "u1", "s1", "spa", "d1", a, model.OutcomeSuccess, "", 10 * time.Minute},
		{"nouser", model.EventTokenUsed, "", "s1", "spa", "", b, model.OutcomeFailure, "invalid_token", 8 * time.Minute},
	}
	out := map[string]*store.StoredEvent{}
	for i, e := range evs {
		me := &model.Event{ID: fmt.Sprintf("graph-ev-%02d", i), Type: e.typ, Time: at(e.d), UserID: e.user, SessionID: e.session,
			ClientID: e.client, DeviceID: e.device, IP: e.ip, Outcome: e.outcome, Reason: e.reason,
			Data: map[string]string{"jkt": "k-" + e.name}}
		seq, err := s.AppendEvent(ctx, me)
		must(t, "AppendEvent", err)
		out[e.name] = &store.StoredEvent{Seq: seq, Event: *me}
	}
	return out
}

// groupKey names a group by what it stands for.
func groupKey(g *store.EventGroup) string {
	return fmt.Sprintf("%s|%s|%s|%s|%s|%s|%s|%s", g.Type, g.Outcome, g.Reason, g.UserID, g.SessionID, g.ClientID, g.DeviceID, g.IP)
}

// testGroupEvents: GroupEvents aggregates exactly the events of the
// scope's subjects within the window (start inclusive, end exclusive),
// counts each event once whichever subjects select it, orders the groups
// by their first event and reports a limit it hit.
func testGroupEvents(t *testing.T, s store.Store) {
	evs := graphEvents(t, s)
	win := func(sc store.EventScope) store.EventScope {
		sc.Since, sc.Until = at(0), at(10*time.Minute) // "old" before, "late" at the end: both out
		return sc
	}
	type want struct {
		count       int64
		first, last string
	}
	check := func(name string, sc store.EventScope, ws map[string]want) {
		t.Helper()
		gs, more, err := s.GroupEvents(ctx, win(sc), 0)
		must(t, name, err)
		if more {
			t.Errorf("%s: more = true, want false", name)
		}
		got := map[string]want{}
		var prev int64
		for _, g := range gs {
			if g.FirstSeq < prev {
				t.Errorf("%s: groups not ordered by first event: %d after %d", name, g.FirstSeq, prev)
			}
			prev = g.FirstSeq
			k := groupKey(g)
			if _, dup := got[k]; dup {
				t.Errorf("%s: group %s twice", name, k)
			}
			w := want{count: g.Count}
			for n, e := range evs {
				if e.Seq == g.FirstSeq {
					w.first = n
					if !g.First.Equal(nt(e.Time)) {
						t.Errorf("%s: group %s first time %v, want %v", name, k, g.First, e.Time)
					}
				}
				if e.Seq == g.LastSeq {
					w.last = n
					if !g.Last.Equal(nt(e.Time)) {
						t.Errorf("%s: group %s last time %v, want %v", name, k, g.Last, e.Time)
					}
				}
			}
			got[k] = w
		}
		if !reflect.DeepEqual(got, ws) {
			t.Errorf("%s:\n got %v\nwant %v", name, got, ws)
		}
	}
	const a, b = "192.0.2.10", "198.51.100.20"
	u1 := map[string]want{
		"signin.succeeded|success||u1|s1|spa||" + a:                         {1, "signin", "signin"},
		"token.issued|success||u1|s1|spa|d1|" + a:                           {1, "issued", "issued"},
		"token.refreshed|success||u1|s1|spa|d1|" + a:                        {3, "refresh1", "refresh3"},
		"token.request_failed|failure|refresh_key_mismatch|u1|s1|spa||" + b: {1, "stolen", "stolen"},
	}
	check("user", store.EventScope{UserIDs: []string{"u1"}}, u1)
	s1 := map[string]want{"token.used|failure|invalid_token||s1|spa||" + b: {1, "nouser", "nouser"}}
	for k, v := range u1 {
		s1[k] = v
	}
	check("session", store.EventScope{SessionIDs: []string{"s1"}}, s1)
	check("session not stored", store.EventScope{SessionIDs: []string{"s3"}}, map[string]want{"token.used|success||u2|s3|spa||" + a: {1, "u2use", "u2use"}})
	// The user and its session, device and address: each event once.
	check("overlapping", store.EventScope{UserIDs: []string{"u1", "u1"}, SessionIDs: []string{"s1"}, DeviceIDs: []string{"d1"}, IPs: []string{b}}, s1)
	check("device", store.EventScope{DeviceIDs: []string{"d1"}}, map[string]want{
		"token.issued|success||u1|s1|spa|d1|" + a:    {1, "issued", "issued"},
		"token.refreshed|success||u1|s1|spa|d1|" + a: {3, "refresh1", "refresh3"},
	})
	ipA := map[string]want{
		"signin.succeeded|success||u1|s1|spa||" + a:  {1, "signin", "signin"},
		"token.issued|success||u1|s1|spa|d1|" + a:    {1, "issued", "issued"},
		"token.refreshed|success||u1|s1|spa|d1|" + a: {3, "refresh1", "refresh3"},
		"token.used|success||u2|s3|spa||" + a:        {1, "u2use", "u2use"},
		"token.issued|success||||svc||" + a:          {1, "svc", "svc"},
	}
	check("ip", store.EventScope{IPs: []string{a}}, ipA)
	withStolen := map[string]want{}
	for k, v := range ipA {
		withStolen[k] = v
	}
	withStolen["token.request_failed|failure|refresh_key_mismatch|u1|s1|spa||"+b] = want{1, "stolen", "stolen"}
	check("user and ip", store.EventScope{UserIDs: []string{"u1"}, IPs: []string{a}}, withStolen)
	check("unknown", store.EventScope{UserIDs: []string{"nobody"}, IPs: []string{"203.0.113.99"}}, map[string]want{})
	check("empty", store.EventScope{}, map[string]want{})

	// The limit keeps the groups with the earliest first events.
	gs, more, err := s.GroupEvents(ctx, win(store.EventScope{IPs: []string{a}}), 2)
	must(t, "GroupEvents limit", err)
	if !more || len(gs) != 2 || gs[0].FirstSeq != evs["signin"].Seq || gs[1].FirstSeq != evs["issued"].Seq {
		t.Errorf("limit 2: got %d groups (more %v), want signin and issued with more", len(gs), more)
	}

	// Refused scopes.
	for name, sc := range map[string]store.EventScope{
		"no window":    {UserIDs: []string{"u1"}},
		"empty window": {UserIDs: []string{"u1"}, Since: at(time.Minute), Until: at(time.Minute)},
		"reversed":     {UserIDs: []string{"u1"}, Since: at(time.Minute), Until: at(0)},
		"too many":     {IPs: manyIDs(store.MaxScopeSubjects + 1), Since: at(0), Until: at(time.Hour)},
	} {
		if _, _, err := s.GroupEvents(ctx, sc, 0); err == nil {
			t.Errorf("GroupEvents %s: no error", name)
		}
	}
}

func manyIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("id-%d", i)
	}
	return out
}

// testEventsByIDSeq: single events by id and by sequence number, oldest
// first, unknown ones left out, every field as stored.
func testEventsByIDSeq(t *testing.T, s store.Store) {
	evs := graphEvents(t, s)
	got, err := s.EventsByID(ctx, []string{evs["stolen"].ID, "no-such-event", evs["signin"].ID, evs["signin"].ID, ""})
	must(t, "EventsByID", err)
	if len(got) != 2 || got[0].Seq != evs["signin"].Seq || got[1].Seq != evs["stolen"].Seq {
		t.Fatalf("EventsByID: got %d events, want signin then stolen", len(got))
	}
	same(t, "EventsByID stolen", &got[1].Event, &evs["stolen"].Event, normEvent)
	got, err = s.EventsBySeq(ctx, []int64{evs["late"].Seq, evs["old"].Seq, evs["late"].Seq, 1 << 40})
	must(t, "EventsBySeq", err)
	if len(got) != 2 || got[0].ID != evs["old"].ID || got[1].ID != evs["late"].ID {
		t.Fatalf("EventsBySeq: got %d events, want old then late", len(got))
	}
	same(t, "EventsBySeq late", &got[1].Event, &evs["late"].Event, normEvent)
	if got, err := s.EventsByID(ctx, nil); err != nil || len(got) != 0 {
		t.Errorf("EventsByID(nil): %d events, %v", len(got), err)
	}
	if _, err := s.EventsByID(ctx, manyIDs(store.MaxEventLookup+1)); err == nil {
		t.Errorf("EventsByID with %d ids: no error", store.MaxEventLookup+1)
	}
	seqs := make([]int64, store.MaxEventLookup+1)
	for i := range seqs {
		seqs[i] = int64(i + 1)
	}
	if _, err := s.EventsBySeq(ctx, seqs); err == nil {
		t.Errorf("EventsBySeq with %d sequence numbers: no error", len(seqs))
	}
}
