package cae

import (
	"context"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// TestEveryRevocationCauseMapped: every revocation cause is named by
// revocationReason, and the session.revoked of each either yields one
// session-revoked SET saying why (its reason_admin), for the session, or
// none because another SET of the same change covers it.
func TestEveryRevocationCauseMapped(t *testing.T) {
	s := &Service{o: Options{Store: noDevices{}}, issuer: "https://ward.example"}
	covered := map[model.RevocationCause]bool{
		model.CauseUserDisabled: true, model.CauseUserDeleted: true, model.CausePasswordChanged: true,
		model.CauseRefreshReuse: true, model.CauseDeviceDisabled: true, model.CauseDeviceLost: true,
	}
	for _, c := range model.RevocationCauses {
		why, cov, known := revocationReason(c)
		if !known {
			t.Errorf("cause %q: not named by revocationReason", c)
			continue
		}
		if cov != covered[c] {
			t.Errorf("cause %q: covered %v, want %v", c, cov, covered[c])
		}
		if !cov && why == "" {
			t.Errorf("cause %q: no reason text", c)
		}
		e := &model.Event{ID: "e-" + string(c), Type: model.EventSessionRevoked, Actor: "admin-1", UserID: "u1",
			SessionID: "s1", Reason: string(c), Time: time.Now()}
		ts := s.templates(context.Background(), e)
		switch {
		case cov && len(ts) != 0:
			t.Errorf("cause %q: covered, yet %d SETs", c, len(ts))
		case !cov && len(ts) != 1:
			t.Errorf("cause %q: %d SETs, want 1", c, len(ts))
		case !cov:
			tp := ts[0]
			if tp.typ != EventSessionRevoked || tp.subject.Session == nil || tp.body.ReasonAdmin["en"] != why {
				t.Errorf("cause %q: SET %s for %+v saying %v, want session-revoked for the session saying %q",
					c, tp.typ, tp.subject, tp.body.ReasonAdmin, why)
			}
		}
	}
	// The texts receivers have seen so far stay as they were.
	for c, want := range map[model.RevocationCause]string{
		model.CauseAdminRevoked:  "session revoked (admin_revoked)",
		model.CauseDeviceDeleted: "session revoked: its device was deleted",
		model.CauseLogout:        "session revoked (logout)",
	} {
		if why, _, _ := revocationReason(c); why != want {
			t.Errorf("cause %q: %q, want %q", c, why, want)
		}
	}
	if why, _, known := revocationReason("some_future_cause"); known || why != "session revoked (some_future_cause)" {
		t.Errorf("an unknown cause: %q (known %v)", why, known)
	}
}

// TestSessionRiskChangedSET: session.risk_changed becomes a CAEP
// risk-level-change for the principal SESSION, about the user's session
// (rs revokes the session at HIGH); one without a session yields none.
func TestSessionRiskChangedSET(t *testing.T) {
	s := &Service{o: Options{Store: noDevices{}}, issuer: "https://ward.example"}
	e := &model.Event{ID: "e1", Type: model.EventSessionRiskChanged, Actor: "system", UserID: "u1", SessionID: "s1",
		Reason: "token_replay_wrong_key", Time: time.Now(), Data: map[string]string{"level": "high", "previous": "none"}}
	ts := s.templates(context.Background(), e)
	if len(ts) != 1 {
		t.Fatalf("%d SETs, want 1", len(ts))
	}
	tp := ts[0]
	if tp.typ != EventRiskLevelChange || tp.body.Principal != "SESSION" || tp.body.CurrentLevel != "HIGH" || tp.body.PreviousLevel != "LOW" ||
		tp.body.RiskReason != "token_replay_wrong_key" || tp.body.InitiatingEntity != InitiatorSystem ||
		tp.subject.Session == nil || tp.subject.User == nil {
		t.Errorf("SET %s %+v for %+v", tp.typ, tp.body, tp.subject)
	}
	e.SessionID = ""
	if ts := s.templates(context.Background(), e); len(ts) != 0 {
		t.Errorf("session.risk_changed without a session: %d SETs", len(ts))
	}
}
