package risk_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/risk"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
)

// activityAt is the time of the activity detection() names.
var activityAt = t0.Add(time.Minute)

// wantRevoked checks which sessions the response ended (cause user_risk,
// refresh token gone) and which it left (active, refresh token kept), and
// that each ended one got its own session.revoked, none marked
// all_sessions (the CAE transmitter would then send no per-session SET),
// with one user.sessions_revoked naming the bound (so no user-wide CAEP
// session-revoked ends the spared sessions' tokens).
func (in *instance) wantResponse(user string, revoked, spared []string, bound time.Time) {
	in.t.Helper()
	for _, id := range revoked {
		if r, cause := in.revoked(id); !r || cause != string(model.CauseUserRisk) {
			in.t.Errorf("session %s: revoked %v (%q), want revoked by the response", id, r, cause)
		}
		if _, err := in.st.GetRefreshToken(ctx, []byte("rt-"+id)); !errors.Is(err, store.ErrNotFound) {
			in.t.Errorf("refresh token of %s: %v, want gone", id, err)
		}
	}
	for _, id := range spared {
		if r, cause := in.revoked(id); r {
			in.t.Errorf("session %s revoked (%q), want spared", id, cause)
		}
		if _, err := in.st.GetRefreshToken(ctx, []byte("rt-"+id)); err != nil {
			in.t.Errorf("refresh token of %s: %v, want kept", id, err)
		}
	}
	var got []string
	for _, e := range in.events(model.EventSessionRevoked) {
		if e.UserID != user || e.Reason != string(model.CauseUserRisk) {
			continue
		}
		got = append(got, e.SessionID)
		if e.Data[model.DataAllSessions] != "" {
			in.t.Errorf("session.revoked of %s marked all_sessions", e.SessionID)
		}
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(revoked))
	if !slices.Equal(got, want) {
		in.t.Errorf("session.revoked (user_risk) for %v, want %v", got, want)
	}
	var sums []model.Event
	for _, e := range in.events(model.EventUserSessionsRevoked) {
		if e.UserID == user && e.Reason == string(model.CauseUserRisk) {
			sums = append(sums, e)
		}
	}
	if len(sums) != 1 || sums[0].Data["sessions_revoked"] != fmt.Sprint(len(revoked)) ||
		sums[0].Data[model.DataCreatedUntil] != bound.UTC().Format(time.RFC3339Nano) {
		in.t.Errorf("user.sessions_revoked: %+v, want %d sessions created until %v", sums, len(revoked), bound)
	}
}

// TestResponseLaggingDetection: a detection handled late (the consumer
// lagged, or the detectors replayed an hour after a restart) ends every
// session of the user created up to the response, including one created
// after the activity it is about, which may be the attacker's, and one
// stamped after the response's time by an instance whose clock is ahead:
// it was committed before the response (a sign-in after it is refused or
// judged on the new level), so it is the response's whatever its stamp,
// like the session the detection names. A remediation before the activity
// narrows nothing. An external detection is handled the same way.
func TestResponseLaggingDetection(t *testing.T) {
	for _, b := range backendtest.Kinds(t) {
		for _, source := range []string{model.DetectionSourceOnline, model.DetectionSourceExternal} {
			t.Run(b.Name+"/"+source, func(t *testing.T) {
				clk := clock.NewFake(t0)
				in := newInstance(t, b.Opener(t, clk.Now)(), clk, nil)
				in.user("alice", "before")
				// An administrator ended every session before the
				// activity: that is no remediation of it.
				clk.Set(activityAt.Add(-30 * time.Second))
				if _, err := in.sess.RevokeUser(ctx, "admin", "alice", model.CauseAdminRevoked); err != nil {
					t.Fatal(err)
				}
				in.session("alice", "victim", activityAt.Add(-10*time.Second))
				in.session("alice", "attacker", activityAt.Add(2*time.Second))
				in.session("alice", "attacker2", activityAt.Add(40*time.Minute))
				respondAt := t0.Add(time.Hour)                           // the detectors lagged an hour
				in.session("alice", "ahead", respondAt.Add(time.Second)) // a clock ahead
				in.session("alice", "named", respondAt.Add(time.Minute))
				clk.Set(respondAt)
				d := detection("d1", "alice", "named", "high", 1)
				d.Data[model.DataDetectionSource] = source
				if err := in.publish(d); err != nil {
					t.Fatal(err)
				}
				in.wantResponse("alice", []string{"victim", "attacker", "attacker2", "named", "ahead"}, nil, respondAt)
			})
		}
	}
}

// remediation is one way of putting an account back in its user's hands,
// carried out on instance in at the current time.
type remediation struct {
	name string
	do   func(t *testing.T, in *instance, user string)
}

func remediations() []remediation {
	return []remediation{
		{"password change", func(t *testing.T, in *instance, user string) {
			ids := identity.New(identity.Options{Store: in.st, Bus: in.b, Now: in.now,
				Argon2: identity.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}})
			if err := ids.SetPassword(ctx, user, user, "a new long passphrase 7"); err != nil {
				t.Fatal(err)
			}
		}},
		{"administrator ends every session", func(t *testing.T, in *instance, user string) {
			if _, err := in.sess.RevokeUser(ctx, "admin", user, model.CauseAdminRevoked); err != nil {
				t.Fatal(err)
			}
		}},
		{"compromise confirmed", func(t *testing.T, in *instance, user string) {
			if _, err := in.svc.ConfirmCompromised(ctx, "admin", user, "phished"); err != nil {
				t.Fatal(err)
			}
		}},
	}
}

// TestResponseSparesSessionsAfterRemediation: when the user remediated
// after the activity and before the late detection was handled, the
// response ends the sessions created up to that first remediation (one
// signed in while the remediation ran and stamped before it, too) and
// spares the user's sign-in after it. The remediation is made on one
// instance, the detection handled on another.
func TestResponseSparesSessionsAfterRemediation(t *testing.T) {
	for _, b := range backendtest.Kinds(t) {
		for _, rem := range remediations() {
			t.Run(b.Name+"/"+rem.name, func(t *testing.T) {
				clk := clock.NewFake(t0)
				open := b.Opener(t, clk.Now)
				one, two := newInstance(t, open(), clk, nil), newInstance(t, open(), clk, nil)
				one.user("bob", "old")
				one.session("bob", "attacker", activityAt.Add(time.Minute))
				remediatedAt := activityAt.Add(5 * time.Minute)
				clk.Set(remediatedAt)
				rem.do(t, one, "bob")
				clk.Set(remediatedAt.Add(2 * time.Minute))
				rem.do(t, one, "bob") // a second remediation: the first one bounds
				// A sign-in in flight during the remediation, stamped
				// before it and stored after it ended every session.
				one.session("bob", "straggler", remediatedAt.Add(-time.Second))
				one.session("bob", "mine", remediatedAt.Add(time.Second))
				one.session("bob", "mine-later", remediatedAt.Add(20*time.Minute))
				clk.Set(t0.Add(time.Hour))
				if err := two.publish(detection("d1", "bob", "", "high", 1)); err != nil {
					t.Fatal(err)
				}
				two.wantResponse("bob", []string{"straggler"}, []string{"mine", "mine-later"}, remediatedAt)
				// (After a confirmed compromise the level is high already:
				// the detection raises nothing.)
				if n := two.wantActivity("bob", "d1", activityAt); n == 0 && rem.name != "compromise confirmed" {
					t.Error("no user.risk_changed raised the level of bob")
				}
				for _, id := range []string{"old", "attacker"} {
					if r, cause := two.revoked(id); !r || cause == string(model.CauseUserRisk) {
						t.Errorf("session %s: revoked %v (%q), want ended by the remediation", id, r, cause)
					}
				}
			})
		}
	}
}

// TestResponseNotRemediations: what ends no session for good — a
// dismissal, an administrator's setting of the level, a sign-in with a
// second factor, one session's revocation, an earlier automatic response
// — leaves the response bounded by its own time: a session created after
// them is ended too.
func TestResponseNotRemediations(t *testing.T) {
	for _, b := range backendtest.Kinds(t) {
		t.Run(b.Name, func(t *testing.T) {
			clk := clock.NewFake(t0)
			in := newInstance(t, b.Opener(t, clk.Now)(), clk, nil)
			in.user("carol", "c1")
			clk.Set(activityAt.Add(time.Minute))
			// An earlier detection, handled at once: an automatic
			// response ending c1.
			early := detection("d0", "carol", "", "high", 1)
			early.Time = clk.Now()
			if err := in.publish(early); err != nil {
				t.Fatal(err)
			}
			in.session("carol", "c2", clk.Now().Add(time.Second))
			clk.Advance(time.Minute)
			if _, err := in.svc.Dismiss(ctx, "admin", risk.Target{UserID: "carol"}, "false positive"); err != nil {
				t.Fatal(err)
			}
			if err := in.svc.SetUserLevel(ctx, "admin", "carol", model.RiskLow, "checked"); err != nil {
				t.Fatal(err)
			}
			if _, err := in.sess.Revoke(ctx, "admin", "c2", model.CauseAdminRevoked); err != nil {
				t.Fatal(err)
			}
			_ = in.b.Publish(ctx, &model.Event{Type: model.EventSignInSucceeded, Actor: "carol", UserID: "carol", Time: clk.Now(),
				Data: map[string]string{"amr": "pwd otp"}})
			in.session("carol", "c3", clk.Now().Add(time.Second))
			respondAt := clk.Advance(time.Hour)
			if err := in.publish(detection("d1", "carol", "", "high", 1)); err != nil {
				t.Fatal(err)
			}
			if r, cause := in.revoked("c3"); !r || cause != string(model.CauseUserRisk) {
				t.Errorf("c3: revoked %v (%q), want ended by the response", r, cause)
			}
			sums := in.events(model.EventUserSessionsRevoked)
			if last := sums[len(sums)-1]; last.Data[model.DataCreatedUntil] != respondAt.UTC().Format(time.RFC3339Nano) {
				t.Errorf("last user.sessions_revoked %+v, want bounded at %v", last, respondAt)
			}
		})
	}
}

// TestResponseRacesRemediation: an administrator ends every session of
// the user and the user signs in again on one instance while another
// handles a late detection, many times over, on the real clock. The
// revocation reads the remediation in its own statement, so the user's
// new session is never ended by the response, whichever comes first; the
// session from before is always ended.
func TestResponseRacesRemediation(t *testing.T) {
	for _, b := range backendtest.Kinds(t) {
		t.Run(b.Name, func(t *testing.T) {
			open := b.Opener(t, time.Now)
			one := newInstanceNow(t, open(), time.Now, nil)
			two := newInstanceNow(t, open(), time.Now, nil)
			const rounds = 20
			for i := range rounds {
				user := fmt.Sprintf("u%d", i)
				one.user(user, user+"-old")
				d := detection("d-"+user, user, "", "high", 1)
				d.Time = time.Now().Add(-time.Hour) // the detectors' replay after a restart
				var wg sync.WaitGroup
				wg.Add(2)
				go func() {
					defer wg.Done()
					if _, err := one.sess.RevokeUser(ctx, "admin", user, model.CauseAdminRevoked); err != nil {
						t.Error(err)
					}
					one.session(user, user+"-new", time.Now())
				}()
				go func() {
					defer wg.Done()
					if err := two.publish(d); err != nil {
						t.Error(err)
					}
				}()
				wg.Wait()
				if r, cause := one.revoked(user + "-new"); r {
					t.Errorf("round %d: the user's session after the remediation was ended (%s)", i, cause)
				}
				if r, _ := one.revoked(user + "-old"); !r {
					t.Errorf("round %d: the session from before survived", i)
				}
			}
		})
	}
}

// wantActivity checks that the user.risk_changed raising the user's level
// because of detection names the detection's activity (the CAE
// transmitter bounds the risk-level-change's event_timestamp with it), and
// that no lowered level or session level does.
func (in *instance) wantActivity(user, detection string, activity time.Time) (raised int) {
	in.t.Helper()
	for _, e := range in.events(model.EventUserRiskChanged) {
		if e.UserID != user {
			continue
		}
		got := e.Data[model.DataActivityAt]
		if e.Data[model.DataDetectionID] != detection {
			continue // another detection's (a confirmed compromise's, here)
		}
		if model.RiskRank(e.Data["level"]) > model.RiskRank(e.Data["previous"]) {
			raised++
			if got != activity.UTC().Format(time.RFC3339Nano) {
				in.t.Errorf("user.risk_changed to %s: activity_at %q, want %v", e.Data["level"], got, activity)
			}
		} else if got != "" {
			in.t.Errorf("user.risk_changed %s -> %s: activity_at %q, want none", e.Data["previous"], e.Data["level"], got)
		}
	}
	for _, e := range in.events(model.EventSessionRiskChanged) {
		if e.Data[model.DataActivityAt] != "" {
			in.t.Errorf("session.risk_changed with activity_at")
		}
	}
	return raised
}
