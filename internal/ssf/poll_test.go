package ssf_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
	"github.com/ward-idp/ward/rs"
)

type pollResp struct {
	Sets          map[string]string `json:"sets"`
	MoreAvailable bool              `json:"moreAvailable"`
}

func poll(t testing.TB, in *wardtest.Instance, tok, id string, body map[string]any) pollResp {
	t.Helper()
	r := call(t, in, http.MethodPost, "/ssf/poll/"+id, tok, body)
	wantStatus(t, "poll", r, http.StatusOK)
	var p pollResp
	if err := json.Unmarshal(r.body, &p); err != nil || p.Sets == nil {
		t.Fatalf("poll response %s", r.body)
	}
	return p
}

func jtis(p pollResp) []string {
	out := make([]string, 0, len(p.Sets))
	for j := range p.Sets {
		out = append(out, j)
	}
	return out
}

// TestPollAcksAndRedelivery: RFC 8936 acknowledgements, maxEvents and
// moreAvailable, setErrs, returnImmediately, and redelivery of SETs that
// were not acknowledged in time.
//
// The timings are far from what a loaded machine can blur: the long-poll
// timeout (45 s) is far beyond the 20 s an immediate answer may take here,
// and a SET's hold (5 s) far beyond two consecutive requests.
func TestPollAcksAndRedelivery(t *testing.T) {
	const hold = 5 * time.Second
	in := start(t, func(c *config.Config) {
		c.SSF.LongPollTimeout = 45 * time.Second
		c.SSF.PollHold = hold
	})
	tok := receiverToken(t, in)
	id := createStream(t, in, tok, map[string]any{"delivery": map[string]any{"method": model.DeliveryPoll}})["stream_id"].(string)
	ctx := context.Background()
	bob := userID(t, in, "bob")

	// Nothing queued: returnImmediately answers at once (not at the
	// timeout), empty.
	t0 := time.Now()
	p := poll(t, in, tok, id, map[string]any{"returnImmediately": true})
	if len(p.Sets) != 0 || p.MoreAvailable || time.Since(t0) > 20*time.Second {
		t.Fatalf("empty immediate poll: %v after %v", p, time.Since(t0))
	}
	for _, l := range []string{"high", "medium", "low"} {
		if err := in.App.Identity.SetRisk(ctx, "admin-1", bob, l, ""); err != nil {
			t.Fatal(err)
		}
	}
	p = poll(t, in, tok, id, map[string]any{"returnImmediately": true, "maxEvents": 2})
	if len(p.Sets) != 2 || !p.MoreAvailable {
		t.Fatalf("maxEvents 2: %d SETs, moreAvailable %v", len(p.Sets), p.MoreAvailable)
	}
	first := jtis(p)
	for j, set := range p.Sets {
		if c := claimsOf(t, set); c["jti"] != j || c["aud"] != receiverID {
			t.Errorf("SET under %s has claims %v", j, c)
		}
	}
	// The two handed out are held, and they keep the third back: it is
	// about the same user, and a receiver must see a subject's SETs in
	// order (if the first answer was lost, the first two come back
	// before it).
	p = poll(t, in, tok, id, map[string]any{"returnImmediately": true})
	if len(p.Sets) != 0 || p.MoreAvailable {
		t.Fatalf("second poll: %d SETs more=%v, want none while the first two are held", len(p.Sets), p.MoreAvailable)
	}
	// Acknowledging the first two releases the third.
	p = poll(t, in, tok, id, map[string]any{"returnImmediately": true, "ack": first})
	if len(p.Sets) != 1 || p.MoreAvailable {
		t.Fatalf("after acknowledging: %d SETs more=%v, want the third only", len(p.Sets), p.MoreAvailable)
	}
	third := jtis(p)[0]
	// Refuse the third.
	p = poll(t, in, tok, id, map[string]any{"returnImmediately": true,
		"setErrs": map[string]any{third: map[string]string{"err": "invalid_request", "description": "test refusal"}}})
	if len(p.Sets) != 0 {
		t.Fatalf("after acks: %d SETs", len(p.Sets))
	}
	c, _ := in.App.CAE.QueueCounts(ctx, receiverID, id)
	if c.Queued != 0 || c.Refused != 1 {
		t.Errorf("queue after acks: %+v, want 0 queued, 1 refused", c)
	}
	// An unacknowledged SET comes back after the hold.
	if err := in.App.Identity.SetRisk(ctx, "admin-1", bob, "high", ""); err != nil {
		t.Fatal(err)
	}
	p = poll(t, in, tok, id, map[string]any{"returnImmediately": true})
	handedOut := time.Now() // after the server set the hold
	if len(p.Sets) != 1 {
		t.Fatalf("new event: %d SETs", len(p.Sets))
	}
	held := jtis(p)[0]
	if p2 := poll(t, in, tok, id, map[string]any{"returnImmediately": true}); len(p2.Sets) != 0 {
		t.Fatal("a held SET was returned again before its hold ended")
	}
	time.Sleep(time.Until(handedOut.Add(hold + 100*time.Millisecond)))
	p = poll(t, in, tok, id, map[string]any{"returnImmediately": true})
	if len(p.Sets) != 1 || jtis(p)[0] != held {
		t.Fatalf("after the hold: %v, want %s again", jtis(p), held)
	}
	// maxEvents 0 only acknowledges.
	p = poll(t, in, tok, id, map[string]any{"maxEvents": 0, "ack": []string{held}})
	if len(p.Sets) != 0 {
		t.Errorf("maxEvents 0 returned SETs")
	}
	if c, _ := in.App.CAE.QueueCounts(ctx, receiverID, id); c.Queued != 0 {
		t.Errorf("queue = %+v after the last ack", c)
	}
	// A push stream cannot be polled.
	pid := createStream(t, in, tok, map[string]any{"delivery": map[string]any{"method": model.DeliveryPush,
		"endpoint_url": "https://127.0.0.1:9/e"}})["stream_id"].(string)
	r := call(t, in, http.MethodPost, "/ssf/poll/"+pid, tok, map[string]any{})
	if r.status != http.StatusBadRequest {
		t.Errorf("polling a push stream: %d", r.status)
	}
}

// TestLongPoll: without returnImmediately a poll waits and answers as
// soon as an event is queued; with nothing, at the long-poll timeout.
//
// No latency is measured (a loaded machine makes any bound flaky): the
// long-poll timeout and the rescan are far longer than the test waits, so
// an answer in time can only come from the event waking the poll, and the
// poll is known to be waiting (its acknowledgement was applied) before the
// event happens.
func TestLongPoll(t *testing.T) {
	in := start(t, func(c *config.Config) {
		c.SSF.LongPollTimeout = 45 * time.Second
		c.SSF.RescanInterval = time.Hour
	})
	tok := receiverToken(t, in)
	id := createStream(t, in, tok, map[string]any{})["stream_id"].(string)
	ctx := context.Background()
	bob := userID(t, in, "bob")

	// One SET handed out: the long poll acknowledges it, which shows when
	// the poll has reached the queue (it registers for a wake-up before
	// it looks).
	if err := in.App.Identity.SetRisk(ctx, "admin-1", bob, "medium", ""); err != nil {
		t.Fatal(err)
	}
	first := poll(t, in, tok, id, map[string]any{"returnImmediately": true})
	if len(first.Sets) != 1 {
		t.Fatalf("first poll: %d SETs", len(first.Sets))
	}
	type result struct {
		r   response
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := tryCall(in, http.MethodPost, "/ssf/poll/"+id, tok, map[string]any{"returnImmediately": false, "ack": jtis(first)})
		done <- result{r, err}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := in.App.CAE.QueueCounts(ctx, receiverID, id)
		if err != nil {
			t.Fatal(err)
		}
		if c.Queued == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the long poll's acknowledgement was not applied")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-done:
		t.Fatal("the long poll answered before any event")
	default:
	}
	if err := in.App.Identity.SetRisk(ctx, "admin-1", bob, "high", ""); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-done:
		if res.err != nil {
			t.Fatal(res.err)
		}
		wantStatus(t, "long poll", res.r, http.StatusOK)
		var p pollResp
		if err := json.Unmarshal(res.r.body, &p); err != nil || len(p.Sets) != 1 {
			t.Fatalf("long poll: %s", res.r.body)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the long poll did not answer the event (its timeout is 45 s, the rescan an hour)")
	}

	// Nothing queued: the poll ends at the timeout (3 s here) with no SETs,
	// not before it, and does not hang.
	idle := start(t)
	itok := receiverToken(t, idle)
	iid := createStream(t, idle, itok, map[string]any{})["stream_id"].(string)
	begin := time.Now()
	r, err := tryCall(idle, http.MethodPost, "/ssf/poll/"+iid, itok, map[string]any{})
	if err != nil {
		t.Fatalf("idle long poll: %v", err)
	}
	wantStatus(t, "idle long poll", r, http.StatusOK)
	var p pollResp
	if err := json.Unmarshal(r.body, &p); err != nil || p.Sets == nil || len(p.Sets) != 0 {
		t.Fatalf("idle long poll: %s", r.body)
	}
	if d := time.Since(begin); d < 2500*time.Millisecond {
		t.Errorf("idle long poll lasted %v, want the 3 s timeout", d)
	}
}

// tryCall is call for another goroutine than the test's (it returns the
// error instead of failing the test). A request unanswered after 30 s
// fails: far beyond any timeout these tests configure.
func tryCall(in *wardtest.Instance, method, path, tok string, body map[string]any) (response, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return response{}, err
	}
	req, err := http.NewRequest(method, in.URL+path, bytes.NewReader(raw))
	if err != nil {
		return response{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b}, err
}

// TestPollWithRSPoller: the rs package's poller follows a poll stream:
// disabling a user revokes the user's tokens at the resource, and the
// poller's acknowledgements empty the queue.
func TestPollWithRSPoller(t *testing.T) {
	in := start(t)
	tok := receiverToken(t, in)
	st := createStream(t, in, tok, map[string]any{"delivery": map[string]any{"method": model.DeliveryPoll}})
	id := st["stream_id"].(string)
	endpoint := st["delivery"].(map[string]any)["endpoint_url"].(string)
	state := rs.NewRevocationState(rs.StateConfig{})
	applied := make(chan *rs.SET, 16)
	recv, err := rs.NewReceiver(rs.ReceiverConfig{Issuer: in.URL, Audience: receiverID, State: state,
		OnEvent: func(_ context.Context, s *rs.SET, _ []rs.Action) error { applied <- s; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	poller, err := recv.NewPoller(rs.PollConfig{Endpoint: endpoint, Token: func(context.Context) (string, error) { return tok, nil },
		RequestTimeout: 10 * time.Second, MinBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { poller.Run(ctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()

	bob := userID(t, in, "bob")
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	issued := time.Now()
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	if err := in.App.Identity.SetDisabled(context.Background(), "admin-1", bob, true); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-applied:
		if s.Event.Type != cae.EventAccountDisabled {
			t.Fatalf("applied %s", s.Event.Type)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the poller did not receive account-disabled")
	}
	if d := state.Check(&rs.TokenInfo{Issuer: in.URL, Subject: bob, IssuedAt: issued}); d == nil || d.By != "user" {
		t.Errorf("state check of bob's earlier token = %+v, want revoked by user", d)
	}
	// The poller acknowledges in its next request.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, _ := in.App.CAE.QueueCounts(context.Background(), receiverID, id)
		if c.Queued == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %+v: the poller's acknowledgement did not arrive", c)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPausedAndDisabledStreams: a paused stream holds its SETs and sends
// them when enabled again (after a stream-updated SET); a disabled one
// drops them.
func TestPausedAndDisabledStreams(t *testing.T) {
	in := start(t)
	tok := receiverToken(t, in)
	id := createStream(t, in, tok, map[string]any{})["stream_id"].(string)
	ctx := context.Background()
	bob := userID(t, in, "bob")
	setStatus := func(s string) {
		t.Helper()
		wantStatus(t, "status "+s, call(t, in, http.MethodPost, "/ssf/status", tok, map[string]any{"stream_id": id, "status": s}), http.StatusOK)
	}
	setStatus("paused")
	if err := in.App.Identity.SetRisk(ctx, "admin-1", bob, "high", ""); err != nil {
		t.Fatal(err)
	}
	if p := poll(t, in, tok, id, map[string]any{"returnImmediately": true}); len(p.Sets) != 0 {
		t.Fatalf("a paused stream transmitted %d SETs", len(p.Sets))
	}
	setStatus("enabled")
	p := poll(t, in, tok, id, map[string]any{"returnImmediately": true})
	var got []string
	for _, s := range p.Sets {
		for typ, ev := range claimsOf(t, s)["events"].(map[string]any) {
			got = append(got, typ)
			if typ == cae.EventStreamUpdated {
				if st := ev.(map[string]any)["status"]; st != "paused" && st != "enabled" {
					t.Errorf("stream-updated status %v", st)
				}
			}
		}
	}
	if countStr(got, cae.EventRiskLevelChange) != 1 || countStr(got, cae.EventStreamUpdated) != 2 {
		t.Errorf("after re-enabling: %v, want the held risk-level-change and two stream-updated", got)
	}
	poll(t, in, tok, id, map[string]any{"returnImmediately": true, "ack": jtis(p), "maxEvents": 0})

	setStatus("disabled")
	if err := in.App.Identity.SetRisk(ctx, "admin-1", bob, "low", ""); err != nil {
		t.Fatal(err)
	}
	setStatus("enabled")
	p = poll(t, in, tok, id, map[string]any{"returnImmediately": true})
	for _, s := range p.Sets {
		if _, ok := claimsOf(t, s)["events"].(map[string]any)[cae.EventRiskLevelChange]; ok {
			t.Error("an event from while the stream was disabled was delivered")
		}
	}
}

func countStr(l []string, v string) int {
	n := 0
	for _, x := range l {
		if x == v {
			n++
		}
	}
	return n
}

// TestPollSeesPauseByAnotherInstance: a stream paused in the database by
// another instance (not through this one, whose stream snapshot still
// says enabled) transmits nothing to the next poll, and its SETs come
// once it is enabled again the same way.
func TestPollSeesPauseByAnotherInstance(t *testing.T) {
	in := start(t, func(c *config.Config) { c.SSF.RescanInterval = time.Hour })
	tok := receiverToken(t, in)
	id := createStream(t, in, tok, map[string]any{})["stream_id"].(string)
	ctx := context.Background()
	bob := userID(t, in, "bob")
	// Drain what the stream starts with.
	p := poll(t, in, tok, id, map[string]any{"returnImmediately": true})
	poll(t, in, tok, id, map[string]any{"returnImmediately": true, "ack": jtis(p), "maxEvents": 0})
	setStatusElsewhere := func(status string) {
		t.Helper()
		if _, err := in.App.Store.UpdateSSFStream(ctx, id, func(s *model.SSFStream) error {
			s.Status, s.StatusReason = status, "changed elsewhere"
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// The event is queued while the stream is enabled (and reloads this
	// instance's snapshot); the pause comes after it.
	if err := in.App.Identity.SetRisk(ctx, "admin-1", bob, "high", ""); err != nil {
		t.Fatal(err)
	}
	setStatusElsewhere(model.StreamPaused)
	if p := poll(t, in, tok, id, map[string]any{"returnImmediately": true}); len(p.Sets) != 0 {
		t.Fatalf("a stream paused by another instance transmitted %d SETs", len(p.Sets))
	}
	setStatusElsewhere(model.StreamEnabled)
	p = poll(t, in, tok, id, map[string]any{"returnImmediately": true})
	found := false
	for _, s := range p.Sets {
		if _, ok := claimsOf(t, s)["events"].(map[string]any)[cae.EventRiskLevelChange]; ok {
			found = true
		}
	}
	if !found {
		t.Errorf("after enabling elsewhere: %d SETs, none the held risk-level-change", len(p.Sets))
	}
}

// TestPollHandOffAttacks: a SET handed to a waiting long poll (over
// HTTP) is the receiver's to acknowledge: another receiver acknowledging
// or refusing its jti on its own stream, or the same receiver on another
// of its streams, changes nothing; a poll of another client's stream is
// refused as not found; ack lists beyond the limits are refused (400 for
// more than 10,000 entries, 413 for a body over 64 KiB) without touching
// the queue.
func TestPollHandOffAttacks(t *testing.T) {
	in := start(t, func(c *config.Config) {
		c.SSF.LongPollTimeout = 45 * time.Second
		c.SSF.PollHold = time.Minute
		c.SSF.RescanInterval = time.Hour
	})
	tok, otok := receiverToken(t, in), token(t, in, otherID, otherSecret, "ssf.manage ssf.poll")
	id := createStream(t, in, tok, map[string]any{})["stream_id"].(string)
	mine2 := createStream(t, in, tok, map[string]any{})["stream_id"].(string)
	theirs := createStream(t, in, otok, map[string]any{})["stream_id"].(string)
	ctx := context.Background()
	for _, s := range []struct{ tok, id string }{{tok, id}, {tok, mine2}, {otok, theirs}} {
		p := poll(t, in, s.tok, s.id, map[string]any{"returnImmediately": true})
		poll(t, in, s.tok, s.id, map[string]any{"maxEvents": 0, "ack": jtis(p)})
	}
	done := make(chan response, 1)
	go func() {
		r, err := tryCall(in, http.MethodPost, "/ssf/poll/"+id, tok, map[string]any{})
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	// The poll is waiting once this instance has a parked poll; the
	// event is then handed to it.
	time.Sleep(500 * time.Millisecond)
	before := in.App.CAE.Stats().HandedOff.Load()
	if err := in.App.Identity.SetRisk(ctx, "admin-1", userID(t, in, "bob"), "high", ""); err != nil {
		t.Fatal(err)
	}
	var r response
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the long poll did not answer (rescan an hour, timeout 45 s)")
	}
	wantStatus(t, "long poll", r, http.StatusOK)
	var p pollResp
	if err := json.Unmarshal(r.body, &p); err != nil || len(p.Sets) != 1 {
		t.Fatalf("long poll: %s", r.body)
	}
	if in.App.CAE.Stats().HandedOff.Load() == before {
		t.Log("the SET was found by a look in the store, not handed off (the poll was not waiting yet)")
	}
	jti := jtis(p)[0]
	want := func(what string) {
		t.Helper()
		c, err := in.App.CAE.QueueCounts(ctx, receiverID, id)
		if err != nil || c.Queued != 1 || c.Refused != 0 {
			t.Fatalf("%s: queue %+v %v, want the SET still queued", what, c, err)
		}
	}
	errs := map[string]any{jti: map[string]string{"err": "invalid_request", "description": "forged"}}
	poll(t, in, otok, theirs, map[string]any{"maxEvents": 0, "ack": []string{jti}, "setErrs": errs})
	want("acknowledged by another receiver on its stream")
	poll(t, in, tok, mine2, map[string]any{"maxEvents": 0, "ack": []string{jti}, "setErrs": errs})
	want("acknowledged on another stream of the receiver")
	wantStatus(t, "poll of another client's stream", call(t, in, http.MethodPost, "/ssf/poll/"+id, otok,
		map[string]any{"maxEvents": 0, "ack": []string{jti}}), http.StatusNotFound)
	want("acknowledged through another client's poll")
	many := make([]string, 10001)
	for i := range many {
		many[i] = "a"
	}
	many[0] = jti
	wantPollError(t, "10,001 acks", call(t, in, http.MethodPost, "/ssf/poll/"+id, tok, map[string]any{"ack": many}),
		http.StatusBadRequest, "invalid_request")
	want("a refused ack list")
	big := []string{jti, strings.Repeat("x", 70<<10)}
	r = call(t, in, http.MethodPost, "/ssf/poll/"+id, tok, map[string]any{"ack": big})
	wantPollError(t, "70 KiB of acks", r, http.StatusRequestEntityTooLarge, "invalid_request")
	want("an oversized body")
	poll(t, in, tok, id, map[string]any{"maxEvents": 0, "ack": []string{jti}})
	if c, _ := in.App.CAE.QueueCounts(ctx, receiverID, id); c.Queued != 0 {
		t.Fatalf("the receiver's own ack: queue %+v", c)
	}
}
