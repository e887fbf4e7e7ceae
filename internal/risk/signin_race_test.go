package risk_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
)

// signInSession is the session a sign-in creates at now.
func signInSession(id, user string, now time.Time) *model.Session {
	return &model.Session{ID: id, UserID: user, AuthTime: now, AMR: []string{"pwd"}, ACR: "urn:ward:acr:pwd",
		CreatedAt: now, LastSeen: now, ExpiresAt: now.Add(24 * time.Hour), IdleTimeout: time.Hour}
}

// signInRecord is the signin.succeeded a sign-in commits with its session.
func signInRecord(id, user, session string) *model.Event {
	return &model.Event{ID: id, Type: model.EventSignInSucceeded, Time: time.Now(), Actor: user, UserID: user,
		SessionID: session, Outcome: model.OutcomeSuccess}
}

// liveSession reports whether session id exists and is not revoked.
func liveSession(t *testing.T, st store.Store, id string) bool {
	t.Helper()
	se, err := st.GetSession(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return se.RevokedAt.IsZero()
}

// TestSignInAfterResponseRefused: a sign-in that read the user's level
// (its Conditional Access decision) before the response committed, and
// creates its session after (on another instance), creates nothing: no
// session, no record of a sign-in. Read again, the level is high and the
// session is created with it (the decision made on it). A user gone is
// ErrNotFound.
func TestSignInAfterResponseRefused(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			one, two := twoInstances(t, k)
			one.user("alice", "s1")
			decided, err := two.st.GetUser(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			d := detection("d1", "alice", "s1", "high", 1)
			d.Time = time.Now()
			if err := one.publish(d); err != nil {
				t.Fatal(err)
			}
			if one.level("alice") != model.RiskHigh {
				t.Fatalf("level %s after the response", one.level("alice"))
			}
			ev := signInRecord("ev-stale", "alice", "late")
			ectx := store.WithEvent(ctx, ev)
			err = two.st.CreateSessionAtRisk(ectx, signInSession("late", "alice", time.Now()), store.RiskSeenOf(decided))
			if !errors.Is(err, store.ErrRiskChanged) {
				t.Fatalf("session on the decision made before the response: %v, want ErrRiskChanged", err)
			}
			if _, err := one.st.GetSession(ctx, "late"); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("refused session stored: %v", err)
			}
			if store.EventStored(ectx, ev) {
				t.Error("the refused sign-in's record was committed")
			}
			for _, typ := range one.storedTypes("alice") {
				if typ == model.EventSignInSucceeded {
					t.Error("signin.succeeded stored for a refused session")
				}
			}
			now, err := two.st.GetUser(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			ev = signInRecord("ev-fresh", "alice", "fresh")
			ectx = store.WithEvent(ctx, ev)
			if err := two.st.CreateSessionAtRisk(ectx, signInSession("fresh", "alice", time.Now()), store.RiskSeenOf(now)); err != nil {
				t.Fatalf("session on the current level: %v", err)
			}
			if !liveSession(t, one.st, "fresh") || !store.EventStored(ectx, ev) {
				t.Error("the session decided on the current level is not live with its record")
			}
			err = two.st.CreateSessionAtRisk(ctx, signInSession("ghost-s", "ghost", time.Now()), store.RiskSeen{})
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("session of a missing user: %v, want ErrNotFound", err)
			}
		})
	}
}

// TestSignInHoldsResponse: a sign-in whose session insert is in progress
// (its transaction open, the session written, its record being built)
// when the response begins on another instance: the response waits for
// it and then revokes the session with the others. Either order, no
// session admitted on the old level survives.
func TestSignInHoldsResponse(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			one, two := twoInstances(t, k)
			one.user("alice", "s1")
			decided, err := two.st.GetUser(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			inserted, release := make(chan struct{}), make(chan struct{})
			ectx := store.WithEvents(ctx, func([]string) []*model.Event {
				close(inserted) // inside the sign-in's transaction, after the insert
				<-release
				return []*model.Event{signInRecord("ev-in", "alice", "early")}
			})
			signedIn := make(chan error, 1)
			go func() {
				signedIn <- two.st.CreateSessionAtRisk(ectx, signInSession("early", "alice", time.Now()), store.RiskSeenOf(decided))
			}()
			select {
			case <-inserted:
			case err := <-signedIn:
				t.Fatalf("sign-in before the response: %v", err)
			}
			responded := make(chan error, 1)
			go func() {
				d := detection("d1", "alice", "s1", "high", 1)
				d.Time = time.Now()
				responded <- one.publish(d)
			}()
			var early error
			select {
			case early = <-responded:
				t.Errorf("the response committed (%v) while a sign-in held the user's risk", early)
			case <-time.After(300 * time.Millisecond):
			}
			close(release)
			if err := <-signedIn; err != nil {
				t.Fatalf("sign-in that began before the response: %v", err)
			}
			if t.Failed() {
				return
			}
			if err := <-responded; err != nil {
				t.Fatal(err)
			}
			if liveSession(t, one.st, "early") {
				t.Error("the session admitted on the old level survived the response")
			}
			if r, cause := one.revoked("early"); !r || cause != string(model.CauseUserRisk) {
				t.Errorf("early session revoked %v (%q)", r, cause)
			}
		})
	}
}

// TestSignInsRaceResponse is the attacker's side: many sign-ins on one
// instance, each reading the user's level (its decision) and then
// creating its session, while another instance sharing the database
// commits the response to a high detection. Afterwards no live session
// was admitted on a level other than high: every sign-in decided before
// the response either was refused or created a session the response
// revoked. Sign-ins decided on the high level keep their sessions.
func TestSignInsRaceResponse(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			one, two := twoInstances(t, k)
			one.user("alice", "s1")
			type admitted struct{ id, level string }
			var (
				mu                 sync.Mutex
				sessions           []admitted
				refused, succeeded atomic.Int64
				seq                atomic.Int64
				highSeen           atomic.Int64
			)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						u, err := two.st.GetUser(ctx, "alice")
						if err != nil {
							t.Error(err)
							return
						}
						id := fmt.Sprintf("signin-%d", seq.Add(1))
						err = two.st.CreateSessionAtRisk(store.WithEvent(ctx, signInRecord("ev-"+id, "alice", id)),
							signInSession(id, "alice", time.Now()), store.RiskSeenOf(u))
						switch {
						case errors.Is(err, store.ErrRiskChanged):
							refused.Add(1)
							continue
						case err != nil:
							t.Error(err)
							return
						}
						succeeded.Add(1)
						if u.RiskLevel == model.RiskHigh {
							highSeen.Add(1)
						}
						mu.Lock()
						sessions = append(sessions, admitted{id, u.RiskLevel})
						mu.Unlock()
					}
				}()
			}
			for deadline := time.Now().Add(10 * time.Second); succeeded.Load() < 5 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			d := detection("d1", "alice", "s1", "high", 1)
			d.Time = time.Now()
			if err := one.publish(d); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(10 * time.Second); highSeen.Load() < 3 && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			close(stop)
			wg.Wait()
			var low, high int
			for _, s := range sessions {
				live := liveSession(t, one.st, s.id)
				if s.level != model.RiskHigh {
					low++
					if live {
						t.Errorf("session %s admitted at level %q is live after the response", s.id, s.level)
					}
					continue
				}
				high++
				if !live {
					t.Errorf("session %s admitted at high was revoked", s.id)
				}
			}
			if low == 0 || high < 3 {
				t.Errorf("sessions admitted before the response %d, after %d: the race did not happen", low, high)
			}
			t.Logf("%d sessions admitted on the old level, %d on high, %d sign-ins refused for a changed level", low, high, refused.Load())
		})
	}
}

// TestStaleRefreshAfterResponse: a refresh that read its token, session
// and user (level none: its decision) before the response committed, and
// rotates after it, gets nothing: the response deleted the token with
// the session in its transaction, so the rotation finds it gone.
func TestStaleRefreshAfterResponse(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			one, two := twoInstances(t, k)
			one.user("alice")
			one.session("alice", "s1", time.Now())
			g, err := two.st.GetRefreshGrant(ctx, []byte("rt-s1"), "")
			if err != nil {
				t.Fatal(err)
			}
			if g.User == nil || g.User.RiskLevel != "" || g.Session == nil || !g.Session.Active(time.Now()) {
				t.Fatalf("grant before the response: %+v", g)
			}
			d := detection("d1", "alice", "s1", "high", 1)
			d.Time = time.Now()
			if err := one.publish(d); err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			rec, err := two.st.RotateRefreshToken(ctx, []byte("rt-s1"), now, &model.RefreshToken{Hash: []byte("rt-s1-next"),
				SessionID: "s1", ClientID: "web", UserID: "alice", AuthTime: g.Token.AuthTime, CreatedAt: now, ExpiresAt: now.Add(time.Hour)})
			if !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("rotation on a decision made before the response: %+v %v, want ErrNotFound", rec, err)
			}
			if _, err := one.st.GetRefreshToken(ctx, []byte("rt-s1-next")); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("successor stored after the response: %v", err)
			}
		})
	}
}

// TestResponseEndsSessionOfClockAhead: two instances whose clocks differ.
// A sign-in on the one running 3 s ahead commits its session (stamped
// ahead) before the response; the response, on the other, ends it with
// the others: it was admitted on the level before the response, and its
// stamp does not make it later than the response.
func TestResponseEndsSessionOfClockAhead(t *testing.T) {
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			open := k.Opener(t, time.Now)
			one := newInstanceNow(t, open(), time.Now, nil)
			aheadNow := func() time.Time { return time.Now().Add(3 * time.Second) }
			ahead := newInstanceNow(t, open(), aheadNow, nil)
			one.user("alice", "s1")
			decided, err := ahead.st.GetUser(ctx, "alice")
			if err != nil {
				t.Fatal(err)
			}
			ev := signInRecord("ev-ahead", "alice", "ahead")
			if err := ahead.st.CreateSessionAtRisk(store.WithEvent(ctx, ev), signInSession("ahead", "alice", aheadNow()), store.RiskSeenOf(decided)); err != nil {
				t.Fatal(err)
			}
			d := detection("d1", "alice", "s1", "high", 1)
			d.Time = time.Now()
			if err := one.publish(d); err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"s1", "ahead"} {
				if liveSession(t, one.st, id) {
					t.Errorf("session %s survived the response", id)
				}
			}
		})
	}
}
