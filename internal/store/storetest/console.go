package storetest

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// testCountEvents: CountEvents groups by bucket (from Since), type and
// outcome, honours the type list and the half-open time range, and
// refuses an unusable filter.
func testCountEvents(t *testing.T, s store.Store) {
	type ev struct {
		typ     model.EventType
		outcome string
		t       time.Duration
	}
	input := []ev{
		{model.EventSignInSucceeded, model.OutcomeSuccess, 0},
		{model.EventSignInSucceeded, model.OutcomeSuccess, 59 * time.Minute},
		{model.EventSignInFailed, model.OutcomeFailure, 30 * time.Minute},
		{model.EventSignInSucceeded, model.OutcomeSuccess, time.Hour},
		{model.EventSSOSignIn, model.OutcomeFailure, 90 * time.Minute},
		{model.EventTokenIssued, model.OutcomeSuccess, 10 * time.Minute},  // not counted: type
		{model.EventSignInSucceeded, model.OutcomeSuccess, 3 * time.Hour}, // not counted: until
		{model.EventSignInSucceeded, model.OutcomeSuccess, -time.Second},  // not counted: since
	}
	for i, e := range input {
		fe := fullEvent(e.typ, "u1", "s1", "c1", at(e.t))
		fe.ID, fe.Outcome = fe.ID+string(rune('a'+i)), e.outcome
		_, err := s.AppendEvent(ctx, fe)
		must(t, "AppendEvent", err)
	}
	got, err := s.CountEvents(ctx, store.EventCountFilter{
		Types: []model.EventType{model.EventSignInSucceeded, model.EventSignInFailed, model.EventSSOSignIn},
		Since: at(0), Until: at(3 * time.Hour), Bucket: time.Hour,
	})
	must(t, "CountEvents", err)
	want := []store.EventCount{
		{Start: at(0), Type: model.EventSignInFailed, Outcome: model.OutcomeFailure, Count: 1},
		{Start: at(0), Type: model.EventSignInSucceeded, Outcome: model.OutcomeSuccess, Count: 2},
		{Start: at(time.Hour), Type: model.EventSSOSignIn, Outcome: model.OutcomeFailure, Count: 1},
		{Start: at(time.Hour), Type: model.EventSignInSucceeded, Outcome: model.OutcomeSuccess, Count: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("CountEvents = %+v, want %+v", got, want)
	}
	for i := range want {
		g := got[i]
		// Times are stored in microseconds.
		if !g.Start.Equal(want[i].Start.Truncate(time.Microsecond)) || g.Type != want[i].Type || g.Outcome != want[i].Outcome || g.Count != want[i].Count {
			t.Errorf("CountEvents[%d] = %+v, want %+v", i, g, want[i])
		}
	}
	for name, f := range map[string]store.EventCountFilter{
		"no types":     {Since: at(0), Until: at(time.Hour), Bucket: time.Minute},
		"no bucket":    {Types: []model.EventType{model.EventSignInSucceeded}, Since: at(0), Until: at(time.Hour)},
		"empty range":  {Types: []model.EventType{model.EventSignInSucceeded}, Since: at(time.Hour), Until: at(time.Hour), Bucket: time.Minute},
		"range before": {Types: []model.EventType{model.EventSignInSucceeded}, Since: at(time.Hour), Until: at(0), Bucket: time.Minute},
	} {
		if _, err := s.CountEvents(ctx, f); err == nil {
			t.Errorf("CountEvents(%s) succeeded, want an error", name)
		}
	}
}

// testListEventsConsoleFilters: the device, IP and outcome filters.
func testListEventsConsoleFilters(t *testing.T, s store.Store) {
	mk := func(i int, device, ip, outcome string) {
		e := fullEvent(model.EventTokenIssued, "u1", "s1", "c1", at(time.Duration(i)*time.Second))
		e.ID, e.DeviceID, e.IP, e.Outcome = e.ID+string(rune('a'+i)), device, ip, outcome
		_, err := s.AppendEvent(ctx, e)
		must(t, "AppendEvent", err)
	}
	mk(0, "dev-a", "192.0.2.1", model.OutcomeSuccess)
	mk(1, "dev-b", "192.0.2.1", model.OutcomeFailure)
	mk(2, "", "2001:db8::2", model.OutcomeFailure)
	ids := func(f store.EventFilter) []string {
		evs, err := s.ListEvents(ctx, f)
		must(t, "ListEvents", err)
		var out []string
		for _, e := range evs {
			out = append(out, e.DeviceID+"|"+e.IP+"|"+e.Outcome)
		}
		return out
	}
	tests := []struct {
		name string
		f    store.EventFilter
		want []string
	}{
		{"device", store.EventFilter{DeviceID: "dev-a"}, []string{"dev-a|192.0.2.1|success"}},
		{"ip", store.EventFilter{IP: "192.0.2.1"}, []string{"dev-b|192.0.2.1|failure", "dev-a|192.0.2.1|success"}},
		{"ip exact", store.EventFilter{IP: "192.0.2.10"}, nil},
		{"outcome", store.EventFilter{Outcome: model.OutcomeFailure}, []string{"|2001:db8::2|failure", "dev-b|192.0.2.1|failure"}},
		{"ip and outcome", store.EventFilter{IP: "192.0.2.1", Outcome: model.OutcomeSuccess}, []string{"dev-a|192.0.2.1|success"}},
	}
	for _, tc := range tests {
		if got := ids(tc.f); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// testListDevicesCompliance: the compliance filter.
func testListDevicesCompliance(t *testing.T, s store.Store) {
	for i, c := range []string{model.Compliant, model.NonCompliant, model.ComplianceUnknown, model.NonCompliant} {
		d := fullDevice("d"+string(rune('0'+i)), "u1", "jkt-c"+string(rune('0'+i)))
		d.Compliance, d.CreatedAt = c, at(time.Duration(i)*time.Minute)
		must(t, "CreateDevice", s.CreateDevice(ctx, d))
	}
	ds, err := s.ListDevices(ctx, store.DeviceFilter{Compliance: model.NonCompliant})
	must(t, "ListDevices", err)
	var got []string
	for _, d := range ds {
		got = append(got, d.ID)
	}
	if want := []string{"d3", "d1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("noncompliant devices = %v, want %v", got, want)
	}
}

// testSessionBindings: what each session's live refresh tokens are bound
// to; rotated and expired tokens do not count, sessions without live
// tokens are absent.
func testSessionBindings(t *testing.T, s store.Store) {
	for _, id := range []string{"s-dev", "s-key", "s-bearer", "s-mixed", "s-none"} {
		must(t, "CreateSession", s.CreateSession(ctx, fullSession(id, "u1")))
	}
	rt := func(hash, sess, client, jkt, device string, expires time.Duration) {
		r := fullRefresh(hash, sess)
		r.ClientID, r.JKT, r.DeviceID, r.ExpiresAt = client, jkt, device, at(expires)
		must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, r))
	}
	day := 24 * time.Hour
	rt("h1", "s-dev", "agent", "jkt-1", "dev-1", day)
	rt("h2", "s-key", "spa", "jkt-2", "", day)
	rt("h3", "s-bearer", "web", "", "", day)
	rt("h4", "s-mixed", "agent", "jkt-1", "dev-1", day)
	rt("h5", "s-mixed", "spa", "jkt-3", "", day)
	rt("h6", "s-mixed", "spa", "jkt-3", "", day) // same key twice: listed once
	rt("h7", "s-none", "spa", "jkt-4", "dev-9", -time.Minute)
	// A rotated token does not count; its successor does.
	rt("h8", "s-none", "agent", "jkt-5", "dev-5", day)
	_, err := s.RotateRefreshToken(ctx, []byte("h8"), at(0), func() *model.RefreshToken {
		r := fullRefresh("h9", "s-none")
		r.ClientID, r.JKT, r.DeviceID, r.ExpiresAt = "agent", "jkt-5", "", at(day)
		return r
	}())
	must(t, "RotateRefreshToken", err)

	got, err := s.SessionBindings(ctx, []string{"s-dev", "s-key", "s-bearer", "s-mixed", "s-none", "s-missing"}, at(0))
	must(t, "SessionBindings", err)
	want := map[string]*store.SessionBinding{
		"s-dev":    {DeviceIDs: []string{"dev-1"}, ClientIDs: []string{"agent"}},
		"s-key":    {JKTs: []string{"jkt-2"}, ClientIDs: []string{"spa"}},
		"s-bearer": {ClientIDs: []string{"web"}, Unbound: 1},
		"s-mixed":  {DeviceIDs: []string{"dev-1"}, JKTs: []string{"jkt-3"}, ClientIDs: []string{"agent", "spa"}},
		"s-none":   {JKTs: []string{"jkt-5"}, ClientIDs: []string{"agent"}},
	}
	if len(got) != len(want) {
		t.Fatalf("SessionBindings returned %d sessions, want %d: %v", len(got), len(want), got)
	}
	for id, w := range want {
		g := got[id]
		if g == nil {
			t.Errorf("%s: missing", id)
			continue
		}
		slices.Sort(g.ClientIDs)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s: got %+v, want %+v", id, g, w)
		}
	}
	if m, err := s.SessionBindings(ctx, nil, at(0)); err != nil || len(m) != 0 {
		t.Errorf("SessionBindings(nil) = %v, %v", m, err)
	}
	many := make([]string, 1001)
	for i := range many {
		many[i] = "x"
	}
	if _, err := s.SessionBindings(ctx, many, at(0)); err == nil {
		t.Error("SessionBindings of 1001 ids succeeded")
	}
}
