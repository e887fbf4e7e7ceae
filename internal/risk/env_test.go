package risk_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/risk"
	"github.com/ward-idp/ward/internal/session"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// instance is one Ward's risk service: a store handle, an in-process bus
// whose first subscriber persists events as the audit persister does,
// the real session service and a recorder of what was published.
type instance struct {
	t    *testing.T
	now  func() time.Time
	st   store.Store
	b    *bus.Local
	sess *session.Service
	svc  *risk.Service

	mu        sync.Mutex
	published []model.Event
	withTx    map[string]bool
}

func newInstance(t *testing.T, st store.Store, clk *clock.Fake, mod func(*risk.Options)) *instance {
	t.Helper()
	return newInstanceNow(t, st, clk.Now, mod)
}

// newInstanceNow is newInstance on the clock now.
// twoInstances opens two instances on one new database of kind k, on
// the real clock.
func twoInstances(t *testing.T, k backendtest.Kind) (one, two *instance) {
	t.Helper()
	open := k.Opener(t, time.Now)
	return newInstanceNow(t, open(), time.Now, nil), newInstanceNow(t, open(), time.Now, nil)
}

func newInstanceNow(t *testing.T, st store.Store, now func() time.Time, mod func(*risk.Options)) *instance {
	t.Helper()
	in := &instance{t: t, now: now, st: st, b: bus.NewLocal(), withTx: map[string]bool{}}
	in.b.Subscribe("audit", func(ctx context.Context, ev *model.Event) error {
		if store.EventStored(ctx, ev) {
			return nil
		}
		_, err := st.AppendEvent(ctx, ev)
		return err
	})
	in.b.Subscribe("watch", func(ctx context.Context, ev *model.Event) error {
		in.mu.Lock()
		defer in.mu.Unlock()
		in.published = append(in.published, *ev)
		in.withTx[ev.ID] = store.EventStored(ctx, ev)
		return nil
	})
	in.sess = session.New(session.Options{Store: st, Bus: in.b, Now: now})
	in.sess.Subscribe(in.b)
	o := risk.Options{Store: st, Sessions: in.sess, Bus: in.b, Now: now}
	if mod != nil {
		mod(&o)
	}
	in.svc = risk.New(o)
	if err := in.svc.Start(context.Background(), risk.Wiring{Bus: in.b}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.svc.Close() })
	return in
}

// newEnv is one instance on a fresh SQLite database.
func newEnv(t *testing.T, mod func(*risk.Options)) (*instance, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(t0)
	open := backendtest.Kinds(t)[0].Opener(t, clk.Now)
	return newInstance(t, open(), clk, mod), clk
}

var ctx = context.Background()

// user stores a user and its active sessions (each with a refresh token).
func (in *instance) user(id string, sessions ...string) {
	in.t.Helper()
	if err := in.st.CreateUser(ctx, &model.User{ID: id, Username: "name-" + id, CreatedAt: t0, UpdatedAt: t0}); err != nil {
		in.t.Fatal(err)
	}
	for _, sid := range sessions {
		if err := in.st.CreateSession(ctx, &model.Session{ID: sid, UserID: id, AuthTime: t0, AMR: []string{"pwd"},
			CreatedAt: t0, LastSeen: t0, ExpiresAt: t0.Add(24 * time.Hour), IdleTimeout: 24 * time.Hour}); err != nil {
			in.t.Fatal(err)
		}
		if err := in.st.CreateRefreshToken(ctx, &model.RefreshToken{Hash: []byte("rt-" + sid), SessionID: sid, ClientID: "web",
			UserID: id, AuthTime: t0, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}); err != nil {
			in.t.Fatal(err)
		}
	}
}

// session stores an active session of user created at created (with a
// refresh token).
func (in *instance) session(user, id string, created time.Time) {
	in.t.Helper()
	if err := in.st.CreateSession(ctx, &model.Session{ID: id, UserID: user, AuthTime: created, AMR: []string{"pwd"},
		CreatedAt: created, LastSeen: created, ExpiresAt: created.Add(24 * time.Hour), IdleTimeout: 24 * time.Hour}); err != nil {
		in.t.Fatal(err)
	}
	if err := in.st.CreateRefreshToken(ctx, &model.RefreshToken{Hash: []byte("rt-" + id), SessionID: id, ClientID: "web",
		UserID: user, AuthTime: created, CreatedAt: created, ExpiresAt: created.Add(time.Hour)}); err != nil {
		in.t.Fatal(err)
	}
}

// detection is a risk.detected event as a detector publishes it.
func detection(id, user, session, severity string, confidence float64) *model.Event {
	return &model.Event{
		ID: "ev-" + id, Type: model.EventRiskDetected, Time: t0.Add(time.Minute), Actor: "system",
		UserID: user, SessionID: session, IP: "198.51.100.9", Reason: "token_replay_wrong_key",
		Data: map[string]string{
			model.DataDetectionID: id, model.DataDetectionSeverity: severity,
			model.DataDetectionConfidence: strconv.FormatFloat(confidence, 'f', 2, 64),
			model.DataDetectionTechnique:  "T1550.001", model.DataDetectionEvidence: "act-1 act-2",
			model.DataDetectionDetail: "refresh token presented with another key", model.DataDetectionSource: "online",
		},
	}
}

// publish publishes e (as the detector does) and hands it to the
// consumer (as the durable consumer does): the audit log has it.
func (in *instance) publish(e *model.Event) error {
	in.t.Helper()
	if _, err := in.st.AppendEvent(ctx, e); err != nil {
		in.t.Fatal(err)
	}
	return in.svc.HandleDetection(ctx, e)
}

func (in *instance) level(user string) string {
	in.t.Helper()
	u, err := in.st.GetUser(ctx, user)
	if err != nil {
		in.t.Fatal(err)
	}
	if u.RiskLevel == "" {
		return model.RiskNone
	}
	return u.RiskLevel
}

func (in *instance) sessionLevel(id string) string {
	in.t.Helper()
	sr, err := in.st.GetSessionRisk(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return model.RiskNone
	}
	if err != nil {
		in.t.Fatal(err)
	}
	return sr.Level
}

func (in *instance) revoked(id string) (bool, string) {
	in.t.Helper()
	se, err := in.st.GetSession(ctx, id)
	if err != nil {
		in.t.Fatal(err)
	}
	return !se.RevokedAt.IsZero(), se.RevokeCause
}

// events returns the published events of type typ.
func (in *instance) events(typ model.EventType) []model.Event {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []model.Event
	for _, e := range in.published {
		if e.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func (in *instance) committed(e model.Event) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.withTx[e.ID]
}
