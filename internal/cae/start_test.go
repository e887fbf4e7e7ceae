package cae_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store/sqlite"
	"github.com/ward-idp/ward/internal/tokens"
)

// durable records the consumers Start runs.
type durable struct {
	mu       sync.Mutex
	handlers map[string]bus.Handler
	types    map[string][]model.EventType
	stopped  []string
}

func (d *durable) Consume(_ context.Context, name string, types []model.EventType, h bus.Handler, _ ...bus.ConsumeOption) (func(), error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.handlers[name], d.types[name] = h, types
	return func() { d.mu.Lock(); d.stopped = append(d.stopped, name); d.mu.Unlock() }, nil
}

// stream records what is published to the CAE stream.
type stream struct {
	mu   sync.Mutex
	sets map[string][]byte // msg id -> SET
}

func (s *stream) PublishCAE(_ context.Context, name, msgID string, set []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sets[name+" "+msgID] = set
	return nil
}

func options(t *testing.T) cae.Options {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kek, err := secret.NewKEK(bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := tokens.NewKeyManager(ctx, tokens.KeyOptions{Store: st, KEK: kek})
	if err != nil {
		t.Fatal(err)
	}
	return cae.Options{Issuer: "https://ward.example", Store: st, Keys: keys, KEK: kek, RescanInterval: time.Hour}
}

// Start subscribes the transmitter, runs the catch-up consumer and the
// CAE stream's publisher for a server, and Close stops them.
func TestStartServer(t *testing.T) {
	b := bus.NewLocal()
	d := &durable{handlers: map[string]bus.Handler{}, types: map[string][]model.EventType{}}
	out := &stream{sets: map[string][]byte{}}
	svc, err := cae.Start(context.Background(), options(t), cae.Wiring{Bus: b, Durable: d, Stream: out, Audience: "https://resources.example", Serve: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{cae.ConsumerCatchUp, cae.ConsumerStream} {
		if d.handlers[name] == nil || len(d.types[name]) != len(cae.SourceEventTypes) {
			t.Errorf("consumer %s: running %v, types %v", name, d.handlers[name] != nil, d.types[name])
		}
	}
	// The stream's consumer signs and publishes the event's SET.
	e := &model.Event{ID: "ev-1", Type: model.EventUserDisabled, Time: time.Now(), Actor: "admin-1", UserID: "u1"}
	if err := d.handlers[cae.ConsumerStream](context.Background(), e); err != nil {
		t.Fatal(err)
	}
	if len(out.sets) != 1 {
		t.Fatalf("published %d SETs, want 1", len(out.sets))
	}
	for k, set := range out.sets {
		if !strings.HasPrefix(k, "risc.account-disabled ev-1") || strings.Count(string(set), ".") != 2 {
			t.Errorf("published %s: %.60s", k, set)
		}
	}
	// The bus delivers to the transmitter until Close.
	if err := b.Publish(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	if want := []string{cae.ConsumerStream, cae.ConsumerCatchUp}; strings.Join(d.stopped, ",") != strings.Join(want, ",") {
		t.Errorf("stopped %v, want %v (last started first)", d.stopped, want)
	}
	calls := 0
	b.Subscribe("count", func(context.Context, *model.Event) error { calls++; return nil })
	if err := b.Publish(context.Background(), e); err != nil || calls != 1 {
		t.Errorf("after Close: %v, %d subscribers ran", err, calls)
	}
}

// Without durable delivery a server runs no consumer; a CAE stream then
// cannot be fed, which Start refuses; a tool (Serve false) runs nothing.
func TestStartWithoutDurable(t *testing.T) {
	b := bus.NewLocal()
	svc, err := cae.Start(context.Background(), options(t), cae.Wiring{Bus: b, Durable: bus.NoDurable{Reason: "local"}, Serve: true})
	if err != nil {
		t.Fatal(err)
	}
	svc.Close()
	_, err = cae.Start(context.Background(), options(t), cae.Wiring{Bus: b, Stream: &stream{}, Audience: "x", Serve: true})
	if !errors.Is(err, bus.ErrNoDurable) {
		t.Errorf("a stream without durable delivery: %v", err)
	}
	d := &durable{handlers: map[string]bus.Handler{}, types: map[string][]model.EventType{}}
	svc, err = cae.Start(context.Background(), options(t), cae.Wiring{Bus: b, Durable: d})
	if err != nil || len(d.handlers) != 0 {
		t.Fatalf("a tool: %v, consumers %v", err, d.handlers)
	}
	svc.Close()
	if _, err := cae.Start(context.Background(), options(t), cae.Wiring{}); err == nil {
		t.Error("Start without a bus")
	}
}
