package cae

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// auditEvents is a store holding audit events for ListEvents, which
// applies the filter as the SQL stores do (Since inclusive, Until
// exclusive, user and types).
type auditEvents struct {
	store.Store
	evs []*store.StoredEvent
	err error
}

func (a *auditEvents) ListEvents(_ context.Context, f store.EventFilter) ([]*store.StoredEvent, error) {
	if a.err != nil {
		return nil, a.err
	}
	var out []*store.StoredEvent
	for _, e := range a.evs {
		typeOK := len(f.Types) == 0
		for _, t := range f.Types {
			typeOK = typeOK || e.Type == t
		}
		if typeOK && (f.UserID == "" || e.UserID == f.UserID) && (f.Since.IsZero() || !e.Time.Before(f.Since)) &&
			(f.Until.IsZero() || e.Time.Before(f.Until)) {
			out = append(out, e)
		}
	}
	return out, nil
}

// TestRiskLevelChangeTimestamp: a user's risk-level-change says in
// event_timestamp up to when the level is about the account: the change,
// or the user's first remediation (password change, every session ended
// by an administrator or a confirmed compromise) after the activity that
// raised it. Not remediations: those before the activity or after the
// change, another user's, an automatic response, one session's
// revocation. A lowered level, an administrator's decision or an unread
// store give the change's time (which revokes more, never less).
func TestRiskLevelChangeTimestamp(t *testing.T) {
	changed := time.Unix(1_800_000_000, 0)
	activity := changed.Add(-time.Hour)
	first := activity.Add(10 * time.Minute)
	ev := func(typ model.EventType, user, reason string, at time.Time) *store.StoredEvent {
		return &store.StoredEvent{Event: model.Event{Type: typ, UserID: user, Reason: reason, Time: at}}
	}
	all := []*store.StoredEvent{
		ev(model.EventPasswordChanged, "u1", "", activity.Add(-time.Minute)),                                       // before the activity
		ev(model.EventPasswordChanged, "u1", "", activity),                                                         // at it: not strictly after
		ev(model.EventUserSessionsRevoked, "u1", string(model.CauseUserRisk), activity.Add(time.Minute)),           // an earlier response
		ev(model.EventSessionRevoked, "u1", string(model.CauseAdminRevoked), activity.Add(2*time.Minute)),          // one session
		ev(model.EventPasswordChanged, "u2", "", activity.Add(3*time.Minute)),                                      // another user
		ev(model.EventUserSessionsRevoked, "u1", string(model.CauseAdminRevoked), first.Add(5*time.Minute)),        // a later remediation
		ev(model.EventPasswordChanged, "u1", "", first),                                                            // the first
		ev(model.EventUserSessionsRevoked, "u1", string(model.CauseCompromiseConfirmed), changed.Add(time.Second)), // after the change
	}
	riskEvent := func(data map[string]string) *model.Event {
		return &model.Event{ID: "e1", Type: model.EventUserRiskChanged, Actor: "system", UserID: "u1", Reason: "impossible_travel",
			Time: changed, Data: data}
	}
	withActivity := func(a time.Time, level, prev string) map[string]string {
		return map[string]string{"level": level, "previous": prev, model.DataActivityAt: a.UTC().Format(time.RFC3339Nano)}
	}
	cases := []struct {
		name string
		evs  []*store.StoredEvent
		err  error
		data map[string]string
		want time.Time
	}{
		{"remediated after the activity", all, nil, withActivity(activity, "high", "low"), first},
		{"compromise confirmed after the activity", []*store.StoredEvent{all[7], ev(model.EventUserSessionsRevoked, "u1", string(model.CauseCompromiseConfirmed), first)}, nil,
			withActivity(activity, "high", "none"), first},
		{"no remediation since the activity", all[:6], nil, withActivity(first.Add(6*time.Minute), "high", "low"), changed},
		{"only remediations that are not", all[:5], nil, withActivity(activity, "high", "low"), changed},
		{"no activity (an administrator's decision)", all, nil, map[string]string{"level": "high", "previous": "low"}, changed},
		{"an activity ahead of the change", all, nil, withActivity(changed.Add(time.Minute), "high", "low"), changed},
		{"a malformed activity", all, nil, map[string]string{"level": "high", model.DataActivityAt: "yesterday"}, changed},
		{"the store fails", all, errors.New("down"), withActivity(activity, "high", "low"), changed},
	}
	for _, c := range cases {
		s := &Service{o: Options{Store: &auditEvents{evs: c.evs, err: c.err}, Log: slog.New(slog.DiscardHandler)}, issuer: "https://ward.example"}
		ts := s.templates(context.Background(), riskEvent(c.data))
		if len(ts) != 1 || ts[0].typ != EventRiskLevelChange {
			t.Fatalf("%s: %d SETs", c.name, len(ts))
		}
		b, _ := json.Marshal(ts[0].body)
		var body map[string]any
		json.Unmarshal(b, &body)
		if got := int64(body["event_timestamp"].(float64)); got != c.want.Unix() {
			t.Errorf("%s: event_timestamp %v, want %v", c.name, time.Unix(got, 0).UTC(), c.want.UTC())
		}
		if body["principal"] != "USER" || body["current_level"] != "HIGH" {
			t.Errorf("%s: body %s", c.name, b)
		}
	}
}
