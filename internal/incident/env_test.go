package incident_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/incident"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/risk"
	"github.com/ward-idp/ward/internal/session"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
)

var (
	t0  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ctx = context.Background()
)

// riskAdapter is the wiring's view of the risk service for response
// actions (internal/app does the same).
type riskAdapter struct{ r *risk.Service }

func (a riskAdapter) SetUserLevel(ctx context.Context, actor, userID, level, reason string) error {
	return a.r.SetUserLevel(ctx, actor, userID, level, reason)
}

func (a riskAdapter) ConfirmCompromised(ctx context.Context, actor, userID, reason string) ([]string, error) {
	return a.r.ConfirmCompromised(ctx, actor, userID, reason)
}

func (a riskAdapter) DismissDetection(ctx context.Context, actor, id, reason string) (bool, error) {
	_, err := a.r.Dismiss(ctx, actor, risk.Target{DetectionID: id}, reason)
	if errors.Is(err, risk.ErrNotFound) || errors.Is(err, risk.ErrNotActive) {
		return false, nil
	}
	return err == nil, err
}

// instance is one Ward's incident service with the real services its
// actions go through, on an in-process bus whose first subscriber
// persists events as the audit persister does.
type instance struct {
	t    *testing.T
	clk  *clock.Fake
	st   store.Store
	b    *bus.Local
	sess *session.Service
	risk *risk.Service
	ids  *identity.Service
	devs *device.Service
	svc  *incident.Service

	mu        sync.Mutex
	published []model.Event
	withTx    map[string]bool
}

func newInstance(t *testing.T, st store.Store, clk *clock.Fake) *instance {
	t.Helper()
	in := &instance{t: t, clk: clk, st: st, b: bus.NewLocal(), withTx: map[string]bool{}}
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
	in.sess = session.New(session.Options{Store: st, Bus: in.b, Now: clk.Now})
	in.sess.Subscribe(in.b)
	in.risk = risk.New(risk.Options{Store: st, Sessions: in.sess, Bus: in.b, Now: clk.Now, AutoRevokeLevel: "off"})
	in.ids = identity.New(identity.Options{Store: st, Bus: in.b, Now: clk.Now})
	in.devs = device.New(device.Options{Store: st, Bus: in.b, Sessions: in.sess, Now: clk.Now, NonceKey: []byte("0123456789abcdef0123456789abcdef")})
	in.svc = incident.New(incident.Options{Store: st, Bus: in.b, Now: clk.Now, Window: 6 * time.Hour,
		Sessions: in.sess, Devices: in.devs, Users: in.ids, Risk: riskAdapter{in.risk}})
	return in
}

// newEnv is one instance on a fresh SQLite database.
func newEnv(t *testing.T) (*instance, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(t0)
	return newInstance(t, backendtest.Kinds(t)[0].Opener(t, clk.Now)(), clk), clk
}

// forBackends runs fn on one instance per backend.
func forBackends(t *testing.T, fn func(t *testing.T, in *instance, clk *clock.Fake)) {
	for _, be := range backendtest.Kinds(t) {
		t.Run(be.Name, func(t *testing.T) {
			clk := clock.NewFake(t0)
			fn(t, newInstance(t, be.Opener(t, clk.Now)(), clk), clk)
		})
	}
}

// user stores a user and its active sessions.
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
	}
}

// det is a risk.detected event as a detector publishes it.
type det struct {
	id, typ, user, session, device, ip, severity, technique string
	at                                                      time.Duration
}

func (d det) event() *model.Event {
	typ := d.typ
	if typ == "" {
		typ = "token_replay_wrong_key"
	}
	sev := d.severity
	if sev == "" {
		sev = model.RiskHigh
	}
	data := map[string]string{
		model.DataDetectionID: d.id, model.DataDetectionSeverity: sev, model.DataDetectionConfidence: "0.90",
		model.DataDetectionEvidence: "act-1", model.DataDetectionDetail: "detail of " + d.id, model.DataDetectionSource: "online",
	}
	if d.technique != "" {
		data[model.DataDetectionTechnique] = d.technique
	}
	return &model.Event{ID: "ev-" + d.id, Type: model.EventRiskDetected, Time: t0.Add(d.at), Actor: "system",
		UserID: d.user, SessionID: d.session, DeviceID: d.device, IP: d.ip, Reason: typ, Data: data}
}

// publish stores e (as the audit persister does before the durable
// consumer sees it) and hands it to the consumer.
func (in *instance) publish(e *model.Event) error {
	in.t.Helper()
	if _, err := in.st.AppendEvent(ctx, e); err != nil {
		in.t.Fatal(err)
	}
	return in.svc.HandleDetection(ctx, e)
}

// mustPublish publishes detections as they happen: the clock moves to
// each one's time.
func (in *instance) mustPublish(ds ...det) {
	in.t.Helper()
	for _, d := range ds {
		if at := t0.Add(d.at); at.After(in.clk.Now()) {
			in.clk.Set(at)
		}
		if err := in.publish(d.event()); err != nil {
			in.t.Fatalf("HandleDetection(%s): %v", d.id, err)
		}
	}
}

func (in *instance) list() []*incident.Incident {
	in.t.Helper()
	l, err := in.svc.List(ctx, incident.Filter{Limit: 1000})
	if err != nil {
		in.t.Fatal(err)
	}
	return l
}

func (in *instance) get(ref string) *incident.Detail {
	in.t.Helper()
	d, err := in.svc.Get(ctx, ref)
	if err != nil {
		in.t.Fatalf("Get(%s): %v", ref, err)
	}
	return d
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

func itoa(n int) string { return strconv.Itoa(n) }
