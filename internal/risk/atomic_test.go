package risk_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
)

// storedTypes returns the types of the stored events of user, in order.
func (in *instance) storedTypes(user string) []model.EventType {
	in.t.Helper()
	evs, err := in.st.ListEvents(ctx, store.EventFilter{UserID: user, Limit: 1000})
	if err != nil {
		in.t.Fatal(err)
	}
	slices.SortFunc(evs, func(a, b *store.StoredEvent) int { return int(a.Seq - b.Seq) })
	var out []model.EventType
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

// wantUntouched checks that a refused response left the user as it was:
// level none, no history, the sessions live with their refresh tokens,
// and none of the response's events stored.
func (in *instance) wantUntouched(user string, sessions ...string) {
	in.t.Helper()
	if l := in.level(user); l != model.RiskNone {
		in.t.Errorf("level %s after a refused write, want none", l)
	}
	if h, err := in.st.RiskHistory(ctx, user, "", 0); err != nil || len(h) != 0 {
		in.t.Errorf("history after a refused write: %d rows (%v)", len(h), err)
	}
	for _, id := range sessions {
		if r, cause := in.revoked(id); r {
			in.t.Errorf("session %s revoked (%q) by a refused write", id, cause)
		}
		if _, err := in.st.GetRefreshToken(ctx, []byte("rt-"+id)); err != nil {
			in.t.Errorf("refresh token of %s after a refused write: %v", id, err)
		}
	}
	for _, typ := range in.storedTypes(user) {
		switch typ {
		case model.EventUserRiskChanged, model.EventSessionRiskChanged, model.EventSessionRevoked,
			model.EventUserSessionsRevoked, model.EventRiskCompromiseConfirmed:
			in.t.Errorf("%s stored by a refused write", typ)
		}
	}
}

// TestResponseCommitsWithLevel: the level that calls for the response,
// the revocation of the sessions (and their refresh tokens), the
// detection and every event recording them are one transaction. With the
// database refusing any one of those events, nothing is left: the level
// is not high, no session ended, no detection recorded (so the event is
// delivered again), and the redelivery, once the database takes the
// events, carries out the whole response once. The same for an
// administrator's high level and a confirmed compromise.
func TestResponseCommitsWithLevel(t *testing.T) {
	refused := []model.EventType{model.EventSessionRevoked, model.EventUserSessionsRevoked, model.EventUserRiskChanged, model.EventSessionRiskChanged}
	for _, k := range backendtest.Kinds(t) {
		for _, typ := range refused {
			t.Run(k.Name+"/detection/"+string(typ), func(t *testing.T) {
				clk := clock.NewFake(t0)
				b := k.New(t)
				in := newInstance(t, b.Open(t, clk.Now), clk, nil)
				in.user("alice", "s1", "s2")
				lift := b.RefuseEvents(t, typ)
				e := detection("d1", "alice", "s1", "high", 1)
				if err := in.publish(e); err == nil {
					t.Fatal("HandleDetection with a refused event: no error, so the event would not come again")
				}
				in.wantUntouched("alice", "s1", "s2")
				if _, err := in.st.GetRiskDetection(ctx, "d1"); !errors.Is(err, store.ErrNotFound) {
					t.Errorf("detection recorded by a refused write: %v", err)
				}
				if n := len(in.events(model.EventUserRiskChanged)) + len(in.events(model.EventSessionRevoked)); n != 0 {
					t.Errorf("%d events published for a refused write", n)
				}
				lift()
				if err := in.svc.HandleDetection(ctx, e); err != nil {
					t.Fatal(err)
				}
				if in.level("alice") != model.RiskHigh {
					t.Errorf("level %s after the redelivery", in.level("alice"))
				}
				in.wantResponse("alice", []string{"s1", "s2"}, nil, clk.Now())
				if d, err := in.st.GetRiskDetection(ctx, "d1"); err != nil || !d.Handled {
					t.Errorf("detection after the redelivery: %+v %v", d, err)
				}
				// One commit: the level's events, then the revocation's.
				want := []model.EventType{model.EventRiskDetected, model.EventUserRiskChanged, model.EventSessionRiskChanged,
					model.EventSessionRevoked, model.EventSessionRevoked, model.EventUserSessionsRevoked}
				if got := in.storedTypes("alice"); !slices.Equal(got, want) {
					t.Errorf("stored events %v, want %v", got, want)
				}
				in.mu.Lock()
				published := slices.Clone(in.published)
				in.mu.Unlock()
				for _, e := range published {
					if e.Type != model.EventRiskDetected && !in.committed(e) {
						t.Errorf("%s published without having been committed with the change", e.Type)
					}
				}
			})
		}
		t.Run(k.Name+"/administrator", func(t *testing.T) {
			clk := clock.NewFake(t0)
			b := k.New(t)
			in := newInstance(t, b.Open(t, clk.Now), clk, nil)
			in.user("alice", "s1", "s2")
			lift := b.RefuseEvents(t, model.EventSessionRevoked)
			if err := in.svc.SetUserLevel(ctx, "admin-1", "alice", model.RiskHigh, "seen phished"); err == nil {
				t.Error("SetUserLevel high with a refused event: no error")
			}
			in.wantUntouched("alice", "s1", "s2")
			if _, err := in.svc.ConfirmCompromised(ctx, "admin-1", "alice", "phished"); err == nil {
				t.Error("ConfirmCompromised with a refused event: no error")
			}
			in.wantUntouched("alice", "s1", "s2")
			lift()
			ids, err := in.svc.ConfirmCompromised(ctx, "admin-1", "alice", "phished")
			if err != nil || !slices.Equal(ids, []string{"s1", "s2"}) {
				t.Fatalf("ConfirmCompromised: %v %v", ids, err)
			}
			want := []model.EventType{model.EventRiskCompromiseConfirmed, model.EventUserRiskChanged,
				model.EventSessionRevoked, model.EventSessionRevoked, model.EventUserSessionsRevoked}
			if got := in.storedTypes("alice"); !slices.Equal(got, want) {
				t.Errorf("stored events %v, want %v", got, want)
			}
			for _, id := range []string{"s1", "s2"} {
				if r, cause := in.revoked(id); !r || cause != string(model.CauseCompromiseConfirmed) {
					t.Errorf("session %s: revoked %v (%q)", id, r, cause)
				}
			}
		})
	}
}

// chain is the refresh token chain of one session as its holders see
// it: the token to present next and every token the chain had.
type chain struct {
	session string
	spared  bool

	mu  sync.Mutex
	cur []byte
	all [][]byte
	// after counts refreshes that succeeded although the user's high
	// level was visible before they began.
	after, ok, refused atomic.Int64
}

func (c *chain) current() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

func (c *chain) advance(from, to []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.all = append(c.all, to)
	if string(c.cur) == string(from) {
		c.cur = to
	}
}

// refresh is what the refresh grant does with the store (oauth/grant:
// one read of the token with its session and user, the live checks, then
// the rotation, whose statement locks the session and finds a token its
// revocation deleted gone): it reports the successor, or why it was
// refused.
func refresh(st store.Store, user, session string, cur []byte, n int64) ([]byte, error) {
	now := time.Now()
	g, err := st.GetRefreshGrant(ctx, cur, "")
	if err != nil {
		return nil, err
	}
	if g.Session == nil || !g.Session.Active(now) || g.User == nil || g.User.Disabled {
		return nil, errors.New("session ended")
	}
	next := []byte(fmt.Sprintf("rt-%s-%d", session, n))
	_, err = st.RotateRefreshToken(ctx, cur, now, &model.RefreshToken{Hash: next, SessionID: session, ClientID: "web",
		UserID: user, AuthTime: g.Token.AuthTime, CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		return nil, err
	}
	return next, nil
}

// TestRefreshRacesResponse is the attacker's side of the response: while
// one instance handles a high detection, holders of the user's refresh
// tokens refresh them over and over on another instance sharing the
// database, several at once per token. Before each refresh a holder reads
// the user's level (as a resource hearing the CAEP risk-level-change
// does). Once the level is high, no refresh of a session the response
// ends succeeds: the level and the revocation are one commit. A refresh
// that won before the commit leaves a successor, which the revocation
// deletes with the session: after the response no token any holder ever
// had is usable. A session the response spares (the user's own, signed
// in to after a remediation) goes on refreshing, at high level too.
func TestRefreshRacesResponse(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			one, two := twoInstances(t, k)
			const rounds, holders = 4, 3
			var afterVisible, wonBefore int64
			for round := range rounds {
				user := fmt.Sprintf("u%d", round)
				one.user(user, user+"-a", user+"-b")
				activity := time.Now()
				time.Sleep(2 * time.Millisecond)
				// A remediation after the activity: the sessions before it
				// end; the victim's (named by the detection) and the
				// user's own are created after it.
				if _, err := one.sess.RevokeUser(ctx, "admin", user, model.CauseAdminRevoked); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * time.Millisecond)
				victim, mine := user+"-victim", user+"-mine"
				one.session(user, victim, time.Now())
				one.session(user, mine, time.Now())
				chains := []*chain{{session: victim}, {session: mine, spared: true}}
				for _, c := range chains {
					c.cur = []byte("rt-" + c.session)
					c.all = [][]byte{c.cur}
				}
				stop := make(chan struct{})
				var wg sync.WaitGroup
				var seq atomic.Int64
				for _, c := range chains {
					for range holders {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for {
								select {
								case <-stop:
									return
								default:
								}
								u, err := two.st.GetUser(ctx, user)
								if err != nil {
									t.Error(err)
									return
								}
								high := u.RiskLevel == model.RiskHigh
								cur := c.current()
								next, err := refresh(two.st, user, c.session, cur, seq.Add(1))
								if err != nil {
									c.refused.Add(1)
									continue
								}
								c.ok.Add(1)
								c.advance(cur, next)
								if high {
									c.after.Add(1)
								}
							}
						}()
					}
				}
				// The holders are refreshing: the victim's token has
				// rotated before the response begins.
				for deadline := time.Now().Add(10 * time.Second); chains[0].ok.Load() < 3 && time.Now().Before(deadline); {
					time.Sleep(time.Millisecond)
				}
				d := detection("d-"+user, user, victim, "high", 1)
				d.Time = activity
				if err := one.publish(d); err != nil {
					t.Fatal(err)
				}
				// The holders go on after the response: the spared session
				// must keep refreshing at high level.
				deadline := time.Now().Add(10 * time.Second)
				for chains[1].after.Load() < 3 && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				close(stop)
				wg.Wait()

				v, m := chains[0], chains[1]
				if n := v.after.Load(); n != 0 {
					t.Errorf("round %d: %d refreshes of the victim's session succeeded after the high level was visible", round, n)
				}
				afterVisible += v.after.Load()
				wonBefore += v.ok.Load()
				if m.after.Load() < 3 {
					t.Errorf("round %d: the spared session refreshed %d times at high level, want it to go on", round, m.after.Load())
				}
				if r, cause := one.revoked(victim); !r || cause != string(model.CauseUserRisk) {
					t.Errorf("round %d: victim session revoked %v (%q)", round, r, cause)
				}
				if r, _ := one.revoked(mine); r {
					t.Errorf("round %d: the spared session was revoked", round)
				}
				v.mu.Lock()
				for i, h := range v.all {
					if _, err := one.st.GetRefreshToken(ctx, h); !errors.Is(err, store.ErrNotFound) {
						t.Errorf("round %d: victim's token %d of %d survived the response: %v", round, i, len(v.all), err)
					}
					if _, err := refresh(one.st, user, victim, h, seq.Add(1)); err == nil {
						t.Errorf("round %d: victim's token %d refreshed after the response", round, i)
					}
				}
				v.mu.Unlock()
				if rt, err := one.st.GetRefreshToken(ctx, m.current()); err != nil || !rt.RotatedAt.IsZero() {
					t.Errorf("round %d: the spared session's current token: %+v %v", round, rt, err)
				}
			}
			t.Logf("victim refreshes: %d succeeded before the response committed, %d after the level was visible", wonBefore, afterVisible)
		})
	}
}

// TestResponsePublishedAfterCommit: a subscriber of the bus (the CAE
// transmitter, which pushes the risk-level-change to receivers at once)
// that hears the user's level become high finds the sessions already
// revoked and their refresh tokens gone: there is no moment in which a
// resource has heard HIGH and Ward still refreshes.
func TestResponsePublishedAfterCommit(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			clk := clock.NewFake(t0)
			in := newInstance(t, k.Opener(t, clk.Now)(), clk, nil)
			in.user("alice", "s1", "s2")
			var heard atomic.Int32
			in.b.Subscribe("transmitter", func(_ context.Context, ev *model.Event) error {
				if ev.Type != model.EventUserRiskChanged || ev.Data["level"] != model.RiskHigh {
					return nil
				}
				heard.Add(1)
				for _, id := range []string{"s1", "s2"} {
					se, err := in.st.GetSession(ctx, id)
					if err != nil || se.RevokedAt.IsZero() {
						t.Errorf("HIGH heard while session %s is live: %+v %v", id, se, err)
					}
					if _, err := in.st.GetRefreshToken(ctx, []byte("rt-"+id)); !errors.Is(err, store.ErrNotFound) {
						t.Errorf("HIGH heard while the refresh token of %s is there: %v", id, err)
					}
				}
				return nil
			})
			if err := in.publish(detection("d1", "alice", "s1", "high", 1)); err != nil {
				t.Fatal(err)
			}
			if heard.Load() != 1 {
				t.Errorf("user.risk_changed to high heard %d times", heard.Load())
			}
		})
	}
}

// TestResponseTwoInstances: two instances handling the same high
// detections at once (a redelivery while the first is still at it)
// respond once per user: one level change, one revocation and its
// records, the detection handled.
func TestResponseTwoInstances(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			clk := clock.NewFake(t0)
			open := k.Opener(t, clk.Now)
			a, b := newInstance(t, open(), clk, nil), newInstance(t, open(), clk, nil)
			const users = 4
			var wg sync.WaitGroup
			for i := range users {
				user := fmt.Sprintf("u%d", i)
				a.user(user, user+"-1", user+"-2")
				e := detection("d-"+user, user, user+"-1", "high", 1)
				if _, err := a.st.AppendEvent(ctx, e); err != nil {
					t.Fatal(err)
				}
				for _, in := range []*instance{a, b} {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := in.svc.HandleDetection(ctx, e); err != nil {
							t.Error(err)
						}
					}()
				}
			}
			wg.Wait()
			for i := range users {
				user := fmt.Sprintf("u%d", i)
				var revoked, summed, changed int
				for _, typ := range a.storedTypes(user) {
					switch typ {
					case model.EventSessionRevoked:
						revoked++
					case model.EventUserSessionsRevoked:
						summed++
					case model.EventUserRiskChanged:
						changed++
					}
				}
				if revoked != 2 || summed != 1 || changed != 1 {
					t.Errorf("%s: %d session.revoked, %d user.sessions_revoked, %d user.risk_changed; want 2, 1, 1", user, revoked, summed, changed)
				}
				for _, id := range []string{user + "-1", user + "-2"} {
					if r, cause := a.revoked(id); !r || cause != string(model.CauseUserRisk) {
						t.Errorf("session %s: revoked %v (%q)", id, r, cause)
					}
				}
				if d, err := a.st.GetRiskDetection(ctx, "d-"+user); err != nil || !d.Handled {
					t.Errorf("detection of %s: %+v %v", user, d, err)
				}
			}
			if sa, sb := a.svc.Stats(), b.svc.Stats(); sa.Responses+sb.Responses != users || sa.Recorded+sb.Recorded != users {
				t.Errorf("responses %d+%d, recorded %d+%d, want %d each", sa.Responses, sb.Responses, sa.Recorded, sb.Recorded, users)
			}
		})
	}
}
