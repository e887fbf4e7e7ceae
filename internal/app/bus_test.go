package app

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

var kekEnv = map[string]string{"WARD_KEK": testKEK}

// durableRecorder collects durable deliveries.
type durableRecorder struct {
	mu  sync.Mutex
	evs []model.Event
}

func (r *durableRecorder) handle(_ context.Context, e *model.Event) error {
	r.mu.Lock()
	r.evs = append(r.evs, *e)
	r.mu.Unlock()
	return nil
}

func (r *durableRecorder) ids() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for _, e := range r.evs {
		out[e.ID]++
	}
	return out
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The default bus is the embedded JetStream: an account change reaches
// a durable consumer, and the synchronous reactions still happen before
// the call returns.
func TestBusDefaultIsEmbeddedJetStream(t *testing.T) {
	cfg := testConfig(t, false)
	a := open(t, cfg, kekEnv)
	defer a.Close()
	if _, ok := a.Bus.(*bus.NATS); !ok {
		t.Fatalf("a.Bus is %T, want *bus.NATS", a.Bus)
	}
	if st, err := os.Stat(filepath.Join(cfg.DataDir, "nats")); err != nil || !st.IsDir() {
		t.Fatalf("no JetStream store under the data directory: %v", err)
	}
	ctx := context.Background()
	rec := &durableRecorder{}
	stop, err := a.Durable.Consume(ctx, "test-consumer", []model.EventType{model.EventUserDisabled}, rec.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	u, err := a.Identity.CreateUser(ctx, "admin", identity.NewUser{Username: "dana", Password: "correct horse battery"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Identity.SetDisabled(ctx, "admin", u.ID, true); err != nil {
		t.Fatal(err)
	}
	stored, err := a.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventUserDisabled}})
	if err != nil || len(stored) != 1 {
		t.Fatalf("stored user.disabled events: %d (%v), want 1 before SetDisabled returned", len(stored), err)
	}
	waitUntil(t, "the durable delivery", func() bool { return rec.ids()[stored[0].ID] == 1 })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.evs) != 1 || rec.evs[0].UserID != u.ID || rec.evs[0].Actor != "admin" {
		t.Errorf("durable consumer got %+v", rec.evs)
	}
}

// Events published before a restart reach a durable consumer after it,
// once each.
func TestBusAppRestart(t *testing.T) {
	cfg := testConfig(t, false)
	ctx := context.Background()
	a := open(t, cfg, kekEnv)
	for i := range 20 {
		if _, err := a.Identity.CreateGroup(ctx, "admin", "group-"+string(rune('a'+i))); err != nil {
			t.Fatal(err)
		}
	}
	a.Close()

	a = open(t, cfg, kekEnv)
	defer a.Close()
	rec := &durableRecorder{}
	stop, err := a.Durable.Consume(ctx, "after-restart", []model.EventType{model.EventGroupCreated}, rec.handle)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	waitUntil(t, "20 group.created events", func() bool { return len(rec.ids()) == 20 })
	time.Sleep(50 * time.Millisecond)
	for id, n := range rec.ids() {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
}

// Without NATS (bus.driver local, or a command-line tool) the events are
// stored and durable delivery says it is unavailable; a tool may run next
// to the server that owns the embedded NATS store, a second server not.
func TestBusLocalAndTools(t *testing.T) {
	ctx := context.Background()
	t.Run("local", func(t *testing.T) {
		cfg := testConfig(t, false)
		cfg.Bus.Driver = config.BusLocal
		a := open(t, cfg, kekEnv)
		defer a.Close()
		if _, err := a.Durable.Consume(ctx, "x", nil, (&durableRecorder{}).handle); !errors.Is(err, bus.ErrNoDurable) {
			t.Errorf("Consume: %v, want ErrNoDurable", err)
		}
		if _, err := os.Stat(filepath.Join(cfg.DataDir, "nats")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("bus.driver local created a NATS store: %v", err)
		}
	})
	t.Run("tool next to the server", func(t *testing.T) {
		cfg := testConfig(t, false)
		srv := open(t, cfg, kekEnv)
		defer srv.Close()
		rec := &durableRecorder{}
		stop, err := srv.Durable.Consume(ctx, "server-side", []model.EventType{model.EventGroupCreated}, rec.handle)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()

		tool, err := OpenWith(ctx, cfg, nil, Options{LookupEnv: env(kekEnv), Tool: true})
		if err != nil {
			t.Fatalf("a tool next to the server: %v", err)
		}
		if _, err := tool.Durable.Consume(ctx, "x", nil, rec.handle); !errors.Is(err, bus.ErrNoDurable) {
			t.Errorf("tool Consume: %v, want ErrNoDurable", err)
		}
		if _, err := tool.Identity.CreateGroup(ctx, "admin", "from-the-cli"); err != nil {
			t.Fatal(err)
		}
		tool.Close()
		// The server's relay finds the tool's event on its poll.
		waitUntil(t, "the tool's event", func() bool { return len(rec.ids()) == 1 })

		_, err = OpenWith(ctx, cfg, nil, Options{LookupEnv: env(kekEnv)})
		if !errors.Is(err, bus.ErrStoreLocked) || !strings.Contains(err.Error(), "bus.nats.url") {
			t.Errorf("second server on the same data directory: %v, want ErrStoreLocked with a hint", err)
		}
	})
	t.Run("token env missing", func(t *testing.T) {
		cfg := testConfig(t, false)
		cfg.Bus.NATS.Embedded.Listen = "127.0.0.1:0"
		cfg.Bus.NATS.TokenEnv = "WARD_TEST_NATS_TOKEN"
		_, err := OpenWith(ctx, cfg, nil, Options{LookupEnv: env(kekEnv)})
		if err == nil || !strings.Contains(err.Error(), "WARD_TEST_NATS_TOKEN") {
			t.Errorf("got %v, want an error naming the variable", err)
		}
	})
}
