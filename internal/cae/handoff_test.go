package cae

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/postgres"
	"github.com/ward-idp/ward/internal/tokens"
)

// Long polls against transmitter instances sharing one PostgreSQL
// database and one external NATS (spreadEnv). No latency is measured:
// the rescan interval is an hour and the long-poll timeout a minute, so
// an answer within the tests' waits can only come from a hand-off or a
// wake-up.

const (
	testLongPoll = time.Minute
	testNoRescan = time.Hour
)

// pollInstance starts a transmitter instance named name that wakes the
// others' long polls on subject (with hold as PollHold).
func (e *spreadEnv) pollInstance(t *testing.T, name, subject string, hold time.Duration, more ...func(*Options)) *Service {
	t.Helper()
	ctx := context.Background()
	st, err := postgres.Open(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	keys, err := tokens.NewKeyManager(ctx, tokens.KeyOptions{Store: st, KEK: e.kek})
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Issuer: "https://ward.example", Store: st, Keys: keys, KEK: e.kek, InstanceID: name,
		RescanInterval: testNoRescan, LongPollTimeout: testLongPoll, PollHold: hold, MaxStreamsPerClient: 1000,
		PollNotifier: bus.NewSignal(e.nc, subject)}
	for _, f := range more {
		f(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Close() })
	return s
}

func pollSubject() string {
	return "ward-test-" + strings.ToLower(secret.RandomString(8)) + "-cae-poll.wake"
}

// pollStream creates a poll stream of client "rcv" through s and drains
// what it starts with.
func pollStream(t *testing.T, s *Service) string {
	t.Helper()
	ctx := context.Background()
	st, err := s.CreateStream(ctx, "rcv", StreamRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Method != model.DeliveryPoll {
		t.Fatalf("default delivery %s", st.Method)
	}
	drain(t, s, st.ID)
	return st.ID
}

// drain acknowledges everything queued on the stream (returned or not).
func drain(t *testing.T, s *Service, id string) {
	t.Helper()
	ctx := context.Background()
	q, err := s.o.Store.QueuedSETs(ctx, id, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var acks []string
	for _, e := range q {
		acks = append(acks, e.JTI)
	}
	zero := 0
	if _, err := s.Poll(ctx, "rcv", id, PollRequest{MaxEvents: &zero, Ack: acks}); err != nil {
		t.Fatal(err)
	}
}

type pollResult struct {
	resp *PollResponse
	err  error
}

// longPoll starts a long poll and returns its outcome channel once the
// poll is parked (waiting with nothing to return) on s, or has answered.
func longPoll(t *testing.T, ctx context.Context, s *Service, id string, req PollRequest) <-chan pollResult {
	t.Helper()
	before := parkedOn(s, id)
	ch := make(chan pollResult, 1)
	go func() {
		r, err := s.Poll(ctx, "rcv", id, req)
		ch <- pollResult{r, err}
	}()
	for deadline := time.Now().Add(20 * time.Second); parkedOn(s, id) <= before && len(ch) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the long poll did not start waiting")
		}
	}
	return ch
}

func parkedOn(s *Service, id string) int {
	s.handOffs.mu.Lock()
	defer s.handOffs.mu.Unlock()
	return len(s.handOffs.m[id])
}

func waitResult(t *testing.T, ch <-chan pollResult, what string) *PollResponse {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		return r.resp
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no answer (the rescan is an hour, the timeout a minute)", what)
		return nil
	}
}

func disabled(user string) *model.Event {
	return &model.Event{ID: secret.RandomString(12), Type: model.EventUserDisabled, Actor: "admin-1", UserID: user, Time: time.Now()}
}

func respJTIs(r *PollResponse) []string {
	var out []string
	for _, s := range r.Sets {
		out = append(out, s.JTI)
	}
	return out
}

func queued(t *testing.T, s *Service, id string) []*store.SETEntry {
	t.Helper()
	q, err := s.o.Store.QueuedSETs(context.Background(), id, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// TestPollHandOff: a long poll waiting on this instance is handed the
// event's SET from memory (Stats.HandedOff), stored held as a poll would
// leave it: another poll does not get it, it comes back after the hold
// when not acknowledged (a lost response), and an acknowledgement of a
// handed-out jti deletes it. maxEvents bounds the hand-off (the rest
// stays for the next poll, moreAvailable). Two polls waiting on one
// stream: one is handed the SET, the other keeps waiting.
func TestPollHandOff(t *testing.T) {
	const hold = 2 * time.Second
	e := newSpreadEnv(t)
	a := e.pollInstance(t, "a", pollSubject(), hold)
	id := pollStream(t, a)
	ctx := context.Background()

	first := longPoll(t, ctx, a, id, PollRequest{})
	if err := a.HandleEvent(ctx, disabled("bob")); err != nil {
		t.Fatal(err)
	}
	r := waitResult(t, first, "long poll")
	if len(r.Sets) != 1 || r.MoreAvailable || a.stats.HandedOff.Load() != 1 {
		t.Fatalf("hand-off: %d SETs more=%v, handed off %d; want 1 SET handed off", len(r.Sets), r.MoreAvailable, a.stats.HandedOff.Load())
	}
	jti := r.Sets[0].JTI
	q := queued(t, a, id)
	if len(q) != 1 || q[0].JTI != jti || q[0].Attempts != 1 || !q[0].HeldUntil.After(time.Now()) {
		t.Fatalf("stored after the hand-off: %+v, want %s held with 1 attempt", q, jti)
	}
	// Held: not returned again before the hold ends (the response was
	// lost, say), then returned again.
	if r, err := a.Poll(ctx, "rcv", id, PollRequest{ReturnImmediately: true}); err != nil || len(r.Sets) != 0 {
		t.Fatalf("poll during the hold: %v %v", r, err)
	}
	time.Sleep(time.Until(q[0].HeldUntil) + 50*time.Millisecond)
	r, err := a.Poll(ctx, "rcv", id, PollRequest{ReturnImmediately: true})
	if err != nil || !slices.Equal(respJTIs(r), []string{jti}) {
		t.Fatalf("after the hold: %v %v, want %s again", r, err, jti)
	}
	// Acknowledged by its jti: gone.
	zero := 0
	if _, err := a.Poll(ctx, "rcv", id, PollRequest{MaxEvents: &zero, Ack: []string{jti}}); err != nil {
		t.Fatal(err)
	}
	if q := queued(t, a, id); len(q) != 0 {
		t.Fatalf("after the ack: %d queued", len(q))
	}

	// maxEvents 1 and an event with two SETs for the stream: one handed
	// out, moreAvailable, the other visible to the next poll.
	one := 1
	ch := longPoll(t, ctx, a, id, PollRequest{MaxEvents: &one})
	ev := disabled("carol")
	pw := &model.Event{ID: secret.RandomString(12), Type: model.EventPasswordChanged, UserID: "dave", Time: time.Now()}
	ts := append(a.templates(ctx, ev), a.templates(ctx, pw)...)
	if n, err := a.handle(ctx, ev, ts, false); err != nil || n != 2 {
		t.Fatalf("handle: %d %v", n, err)
	}
	r = waitResult(t, ch, "long poll with maxEvents 1")
	if len(r.Sets) != 1 || !r.MoreAvailable || a.stats.HandedOff.Load() != 2 {
		t.Fatalf("maxEvents 1: %d SETs more=%v handed off %d", len(r.Sets), r.MoreAvailable, a.stats.HandedOff.Load())
	}
	r2, err := a.Poll(ctx, "rcv", id, PollRequest{ReturnImmediately: true, Ack: respJTIs(r)})
	if err != nil || len(r2.Sets) != 1 || r2.Sets[0].JTI == r.Sets[0].JTI {
		t.Fatalf("after maxEvents 1: %v %v, want the second SET", r2, err)
	}
	drain(t, a, id)

	// Two polls waiting on one stream (one receiver twice): the SET is
	// handed to one; the other finds it held and keeps waiting.
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p1 := longPoll(t, pctx, a, id, PollRequest{})
	p2 := longPoll(t, pctx, a, id, PollRequest{})
	if err := a.HandleEvent(ctx, disabled("erin")); err != nil {
		t.Fatal(err)
	}
	var got *PollResponse
	select {
	case x := <-p1:
		got = x.resp
	case x := <-p2:
		got = x.resp
	case <-time.After(30 * time.Second):
		t.Fatal("neither poll answered")
	}
	if got == nil || len(got.Sets) != 1 {
		t.Fatalf("two polls: %+v", got)
	}
	select {
	case x := <-p1:
		t.Fatalf("both polls answered: %+v and %+v", got, x.resp)
	case x := <-p2:
		t.Fatalf("both polls answered: %+v and %+v", got, x.resp)
	case <-time.After(500 * time.Millisecond):
	}
}

// TestPollHandOffNotGranted: nothing is handed out when the stream has
// something else queued (a SET held by an earlier poll, which keeps its
// subject's order), or was paused by another instance while the poll
// waited; the poll then looks in the store (and, paused, answers empty).
func TestPollHandOffNotGranted(t *testing.T) {
	e := newSpreadEnv(t)
	a := e.pollInstance(t, "a", pollSubject(), time.Minute)
	id := pollStream(t, a)
	ctx := context.Background()

	// A SET handed out and not acknowledged: the next event's SET, about
	// the same user, must wait for it.
	if err := a.HandleEvent(ctx, disabled("bob")); err != nil {
		t.Fatal(err)
	}
	r, err := a.Poll(ctx, "rcv", id, PollRequest{ReturnImmediately: true})
	if err != nil || len(r.Sets) != 1 {
		t.Fatalf("first poll: %v %v", r, err)
	}
	pctx, cancel := context.WithCancel(ctx)
	ch := longPoll(t, pctx, a, id, PollRequest{})
	if err := a.HandleEvent(ctx, &model.Event{ID: secret.RandomString(12), Type: model.EventPasswordChanged, UserID: "bob", Time: time.Now()}); err != nil {
		t.Fatal(err)
	}
	select {
	case x := <-ch:
		t.Fatalf("a SET was handed out behind a held one of its subject: %+v %v", x.resp, x.err)
	case <-time.After(time.Second):
	}
	if n := a.stats.HandedOff.Load(); n != 0 {
		t.Fatalf("handed off %d with a SET held", n)
	}
	for _, q := range queued(t, a, id)[1:] {
		if q.Attempts != 0 {
			t.Fatalf("the second SET was stored as handed out: %+v", q)
		}
	}
	cancel()
	<-ch
	drain(t, a, id)

	// Paused by another instance (straight in the database) while the
	// poll waits: nothing handed out, the poll answers empty.
	ch = longPoll(t, ctx, a, id, PollRequest{})
	if _, err := a.o.Store.UpdateSSFStream(ctx, id, func(s *model.SSFStream) error {
		s.Status = model.StreamPaused
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.HandleEvent(ctx, disabled("carol")); err != nil {
		t.Fatal(err)
	}
	r = waitResult(t, ch, "long poll on a paused stream")
	if len(r.Sets) != 0 || a.stats.HandedOff.Load() != 0 {
		t.Fatalf("paused stream: %d SETs, handed off %d", len(r.Sets), a.stats.HandedOff.Load())
	}
	if q := queued(t, a, id); len(q) != 1 || q[0].Attempts != 0 || !q[0].HeldUntil.IsZero() {
		t.Fatalf("paused stream's queue: %+v, want its SET kept, never handed out", q)
	}
}

// TestPollConcurrentOnOneStream: many long polls of one stream and a
// series of events: every SET reaches exactly one poll (the hold is a
// minute, longer than the test), whichever way it went (hand-off or a
// look in the store).
func TestPollConcurrentOnOneStream(t *testing.T) {
	e := newSpreadEnv(t)
	a := e.pollInstance(t, "a", pollSubject(), time.Minute)
	id := pollStream(t, a)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu   sync.Mutex
		seen = map[string]int{}
		wg   sync.WaitGroup
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				r, err := a.Poll(ctx, "rcv", id, PollRequest{})
				if err != nil {
					return
				}
				mu.Lock()
				for _, s := range r.Sets {
					seen[s.JTI]++
				}
				mu.Unlock()
			}
		}()
	}
	const events = 20
	for i := range events {
		if err := a.HandleEvent(ctx, disabled("user-"+string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := len(seen)
		mu.Unlock()
		if n >= events || time.Now().After(deadline) {
			break
		}
	}
	cancel()
	wg.Wait()
	if len(seen) != events {
		t.Fatalf("%d distinct SETs reached the polls, want %d", len(seen), events)
	}
	for j, n := range seen {
		if n != 1 {
			t.Errorf("SET %s reached %d polls within its hold", j, n)
		}
	}
	t.Logf("%d of %d handed off", a.stats.HandedOff.Load(), events)
}

// TestPollWakeAcrossInstances: a long poll waiting on instance B answers
// an event handled on instance A (sharing the database) at once: A's
// wake-up over NATS, not B's rescan (an hour). Forged or oversized
// wake-ups on the subject make B's polls look in the store and find
// nothing: they keep waiting, and a real event still wakes them.
func TestPollWakeAcrossInstances(t *testing.T) {
	e := newSpreadEnv(t)
	subject := pollSubject()
	a := e.pollInstance(t, "a", subject, time.Minute)
	b := e.pollInstance(t, "b", subject, time.Minute)
	id := pollStream(t, a)
	ctx := context.Background()
	// b must know the stream (its snapshot) before polling it.
	ch := longPoll(t, ctx, b, id, PollRequest{})

	// Forged wake-ups: oversized, garbage, the stream from "b" itself
	// (ignored), a too-long id, and the stream itself (a look in the
	// store that finds nothing).
	for _, m := range [][]byte{
		bytes.Repeat([]byte("x\n"), maxPollSignal),
		[]byte("no newline"),
		[]byte("b\n" + id),
		[]byte("mallory\n" + strings.Repeat("f", maxStreamIDLen+1)),
		[]byte("mallory\n\n\n" + id + "\n" + id),
		{},
	} {
		if err := e.nc.Publish(subject, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case x := <-ch:
		t.Fatalf("a forged wake-up ended the long poll: %+v %v", x.resp, x.err)
	case <-time.After(time.Second):
	}

	if err := a.HandleEvent(ctx, disabled("bob")); err != nil {
		t.Fatal(err)
	}
	r := waitResult(t, ch, "long poll on the other instance")
	if len(r.Sets) != 1 {
		t.Fatalf("long poll on b: %d SETs", len(r.Sets))
	}
	if a.stats.HandedOff.Load() != 0 || b.stats.HandedOff.Load() != 0 {
		t.Errorf("handed off across instances: a %d, b %d", a.stats.HandedOff.Load(), b.stats.HandedOff.Load())
	}
	// Without the signal (a's notifier gone) b would wait for its rescan.
	a.o.PollNotifier = nil
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch = longPoll(t, pctx, b, id, PollRequest{Ack: respJTIs(r)})
	if err := a.HandleEvent(ctx, disabled("carol")); err != nil {
		t.Fatal(err)
	}
	select {
	case x := <-ch:
		t.Fatalf("b answered without a wake-up: %+v %v (the test cannot tell the signal did it)", x.resp, x.err)
	case <-time.After(2 * time.Second):
	}
}

// TestPollSignalBounds: a wake-up message stays under maxPollSignal
// whatever the number of streams (split), names each poll stream once
// and leaves push streams and streams handed out here out.
func TestPollSignalBounds(t *testing.T) {
	var msgs [][]byte
	s := &Service{o: Options{InstanceID: "me", PollNotifier: notifyFunc(func(b []byte) error {
		msgs = append(msgs, slices.Clone(b))
		return nil
	})}}
	s.snap.Store(&snapshot{byID: map[string]*stream{
		"push": {SSFStream: &model.SSFStream{ID: "push", Method: model.DeliveryPush}},
	}})
	var entries []*store.SETEntry
	want := map[string]bool{}
	for i := range 5000 {
		id := strings.Repeat("0", 28) + strings.ToLower(secret.RandomString(3))[:3] + string(rune('a'+i%26))
		entries = append(entries, &store.SETEntry{StreamID: id, Seq: 1}, &store.SETEntry{StreamID: id, Seq: 2})
		want[id] = true
	}
	entries = append(entries, &store.SETEntry{StreamID: "push", Seq: 1}, &store.SETEntry{StreamID: "gone", Seq: 0},
		&store.SETEntry{StreamID: "mine", Seq: 3, HeldUntil: time.Now()})
	ho := handOff{"mine": &parked{}}
	s.signalPolls(context.Background(), ho, map[string]*handed{"mine": {sets: entries[len(entries)-1:]}}, entries)
	got := map[string]int{}
	for _, m := range msgs {
		if len(m) > maxPollSignal {
			t.Fatalf("message of %d bytes", len(m))
		}
		lines := strings.Split(string(m), "\n")
		if lines[0] != "me" {
			t.Fatalf("message from %q", lines[0])
		}
		for _, id := range lines[1:] {
			got[id]++
		}
	}
	if len(msgs) < 2 {
		t.Errorf("%d messages for %d streams, want the ids split", len(msgs), len(want))
	}
	for id := range want {
		if got[id] != 1 {
			t.Errorf("%s named %d times", id, got[id])
		}
	}
	for _, id := range []string{"push", "gone", "mine"} {
		if got[id] != 0 {
			t.Errorf("%s named in a wake-up", id)
		}
	}
	if len(got) != len(want) {
		t.Errorf("named %d streams, want %d", len(got), len(want))
	}
	// A failing notifier stops the sending (logged only).
	msgs = nil
	s.o.Log = slog.New(slog.DiscardHandler)
	s.o.PollNotifier = notifyFunc(func([]byte) error { return errors.New("down") })
	s.signalPolls(context.Background(), nil, nil, entries)
}

type notifyFunc func([]byte) error

func (f notifyFunc) Notify(b []byte) error { return f(b) }
func (f notifyFunc) Listen(func([]byte)) (func(), error) {
	return nil, errors.New("not listening")
}

// TestPollRescanFallback: without wake-ups (no NATS between the
// instances) a long poll on B still answers an event handled on A, found
// by B's rescan of the streams its polls wait on; and a SET whose hold
// ended without an acknowledgement reaches a waiting poll again.
func TestPollRescanFallback(t *testing.T) {
	e := newSpreadEnv(t)
	quick := func(o *Options) { o.RescanInterval, o.PollNotifier = 100*time.Millisecond, nil }
	a := e.pollInstance(t, "a", pollSubject(), 2*time.Second, quick)
	b := e.pollInstance(t, "b", pollSubject(), 2*time.Second, quick)
	id := pollStream(t, a)
	ctx := context.Background()
	ch := longPoll(t, ctx, b, id, PollRequest{})
	if err := a.HandleEvent(ctx, disabled("bob")); err != nil {
		t.Fatal(err)
	}
	r := waitResult(t, ch, "long poll on b without wake-ups")
	if len(r.Sets) != 1 {
		t.Fatalf("long poll on b: %d SETs", len(r.Sets))
	}
	// Not acknowledged: the next long poll gets it again after the hold.
	r2 := waitResult(t, longPoll(t, ctx, b, id, PollRequest{}), "long poll after the hold")
	if !slices.Equal(respJTIs(r2), respJTIs(r)) {
		t.Fatalf("after the hold: %v, want %v again", respJTIs(r2), respJTIs(r))
	}
}
