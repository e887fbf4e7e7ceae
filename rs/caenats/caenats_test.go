package caenats_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
	"github.com/ward-idp/ward/rs"
	"github.com/ward-idp/ward/rs/caenats"
)

// ward starts Ward with the embedded NATS listening on a random port and
// one subscriber nkey, and returns the instance and a connection that
// authenticates with that key.
func ward(t *testing.T) (*wardtest.Instance, *bus.NATS, func(t *testing.T) *nats.Conn) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	in := wardtest.Start(t, wardtest.Options{RealClock: true, Configure: func(c *config.Config) {
		c.Bus.NATS.Embedded.Listen = "127.0.0.1:0"
		c.SSF.NATS.SubscriberNKeys = []string{pub}
	}})
	nb, ok := in.App.Bus.(*bus.NATS)
	if !ok {
		t.Fatalf("bus is %T", in.App.Bus)
	}
	settle(t, nb)
	url := nb.ClientURL()
	if url == "" {
		t.Fatal("the embedded server does not listen")
	}
	connect := func(t *testing.T) *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(url, nats.Nkey(pub, kp.Sign), nats.Name("resource"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	return in, nb, connect
}

// settle waits until Ward has published every SET the events so far
// yield (the fixtures' start-up events among them), so counts in a test
// are its own.
func settle(t *testing.T, nb *bus.NATS) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		c, err := nb.JetStream().Consumer(ctx, nb.Stream(), "cae-nats")
		if err == nil {
			if i, err := c.Info(ctx); err == nil && i.NumPending == 0 && i.NumAckPending == 0 && i.Delivered.Stream > 0 {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the cae-nats consumer did not catch up within 15 s")
}

func newReceiver(t *testing.T, in *wardtest.Instance) (*rs.Receiver, *rs.RevocationState) {
	t.Helper()
	st := rs.NewRevocationState(rs.StateConfig{MaxTokenLifetime: 25 * time.Hour})
	r, err := rs.NewReceiver(rs.ReceiverConfig{Issuer: in.URL, Audience: config.DefaultCAEAudience, State: st})
	if err != nil {
		t.Fatal(err)
	}
	return r, st
}

// follow starts a follower (checking every check, the default if zero)
// and waits for its replay.
func follow(t *testing.T, nc *nats.Conn, r *rs.Receiver, check time.Duration) *caenats.Follower {
	t.Helper()
	f, err := caenats.Follow(context.Background(), caenats.Config{Conn: nc, Receiver: r, CheckInterval: check})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	select {
	case <-f.Ready():
	case <-time.After(10 * time.Second):
		t.Fatalf("follower not ready after 10 s: %+v", f.Stats())
	}
	return f
}

func userID(t *testing.T, in *wardtest.Instance, name string) string {
	t.Helper()
	u, err := in.App.Store.GetUserByUsername(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}

// rejected waits until the state rejects tok, or fails.
func rejected(t *testing.T, st *rs.RevocationState, tok *rs.TokenInfo, f *caenats.Follower) *rs.Decision {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if d := st.Check(tok); d != nil {
			return d
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("token of %s still accepted after 10 s; follower %+v", tok.Subject, f.Stats())
	return nil
}

func bobToken(in *wardtest.Instance, bob string) *rs.TokenInfo {
	now := time.Now()
	return &rs.TokenInfo{Issuer: in.URL, Subject: bob, SessionID: "s-1", IssuedAt: now.Add(-2 * time.Second),
		ExpiresAt: now.Add(time.Hour)}
}

// TestFollowRevokesAndReplays: a follower hears that a user was disabled
// within moments; a resource that starts afterwards replays the stream
// and rejects the same token before it serves anything.
func TestFollowRevokesAndReplays(t *testing.T) {
	in, _, connect := ward(t)
	bob := userID(t, in, "bob")
	r, st := newReceiver(t, in)
	f := follow(t, connect(t), r, 0)
	base := f.Stats()

	tok := bobToken(in, bob)
	if d := st.Check(tok); d != nil {
		t.Fatalf("rejected before any event: %+v", d)
	}
	if err := in.App.Identity.SetDisabled(context.Background(), "admin-1", bob, true); err != nil {
		t.Fatal(err)
	}
	d := rejected(t, st, tok, f)
	if d.Kind != rs.Revoked || d.By != "user" {
		t.Fatalf("decision %+v, want revoked by user", d)
	}
	if s := f.Stats(); s.Applied != base.Applied+1 || s.Refused != 0 {
		t.Fatalf("stats %+v, want one more applied than %+v", s, base)
	}
	// Another user is untouched.
	if d := st.Check(&rs.TokenInfo{Issuer: in.URL, Subject: "another-user", IssuedAt: tok.IssuedAt, ExpiresAt: tok.ExpiresAt}); d != nil {
		t.Fatalf("another user rejected: %+v", d)
	}
	// A token issued after the revocation is accepted.
	later := bobToken(in, bob)
	later.IssuedAt = time.Now().Add(2 * time.Second)
	if d := st.Check(later); d != nil {
		t.Fatalf("token issued after the revocation rejected: %+v", d)
	}

	// A resource starting now rebuilds the state from the stream.
	r2, st2 := newReceiver(t, in)
	f2 := follow(t, connect(t), r2, 0)
	if d := st2.Check(tok); d == nil || d.By != "user" {
		t.Fatalf("replayed state: %+v (follower %+v)", d, f2.Stats())
	}
	if s, s1 := f2.Stats(), f.Stats(); s.Applied != s1.Applied || s.Refused != 0 {
		t.Fatalf("replay stats %+v, want what the first follower applied (%+v)", s, s1)
	}
}

// TestForgedAndDuplicateSETs: what reaches the stream but was not signed
// by Ward, or is addressed to someone else, changes nothing; the same
// event published twice is applied once.
func TestForgedAndDuplicateSETs(t *testing.T) {
	in, nb, connect := ward(t)
	bob := userID(t, in, "bob")
	r, st := newReceiver(t, in)
	f := follow(t, connect(t), r, 0)
	base := f.Stats()
	ctx := context.Background()
	tok := bobToken(in, bob)

	claims := map[string]any{
		"iss": in.URL, "aud": config.DefaultCAEAudience, "jti": "forged-1", "iat": time.Now().Unix(),
		"sub_id": map[string]any{"format": "iss_sub", "iss": in.URL, "sub": bob},
		"events": map[string]any{"https://schemas.openid.net/secevent/risc/event-type/account-disabled": map[string]any{}},
	}
	if err := nb.PublishCAE(ctx, "risc.account-disabled", "forged-1", wardtest.ForgeSET(t, claims)); err != nil {
		t.Fatal(err)
	}
	// Ward's key, but another audience: e.g. a SET lifted from someone's
	// SSF stream and replayed here.
	set, err := in.App.CAE.Broadcast(ctx, &model.Event{ID: "ev-other-aud", Type: model.EventUserDisabled, UserID: bob, Time: time.Now()}, "https://other.example")
	if err != nil || len(set) != 1 {
		t.Fatalf("broadcast: %v %d", err, len(set))
	}
	if err := nb.PublishCAE(ctx, set[0].Name, set[0].ID, set[0].SET); err != nil {
		t.Fatal(err)
	}
	waitStats(t, f, func(s caenats.Stats) bool { return s.Refused == base.Refused+2 })
	if d := st.Check(tok); d != nil {
		t.Fatalf("a forged SET revoked: %+v", d)
	}

	// The same domain event handled twice (at-least-once) gives the same
	// jti; published under another message id it passes the stream's
	// de-duplication but the follower applies it once.
	ev := &model.Event{ID: "ev-dup", Type: model.EventUserSessionsRevoked, UserID: bob, Time: time.Now()}
	for i := range 2 {
		sets, err := in.App.CAE.Broadcast(ctx, ev, config.DefaultCAEAudience)
		if err != nil || len(sets) != 1 {
			t.Fatalf("broadcast: %v %d", err, len(sets))
		}
		if err := nb.PublishCAE(ctx, sets[0].Name, sets[0].ID+"-"+string(rune('a'+i)), sets[0].SET); err != nil {
			t.Fatal(err)
		}
	}
	waitStats(t, f, func(s caenats.Stats) bool { return s.Applied == base.Applied+1 && s.Duplicates == base.Duplicates+1 })
	if d := st.Check(tok); d == nil {
		t.Fatal("the genuine SET was not applied")
	}
}

func waitStats(t *testing.T, f *caenats.Follower, ok func(caenats.Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok(f.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("follower stats %+v", f.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSubscriberPermissions: a resource's key reads the CAE stream and
// can do nothing else: not publish to it, not purge or delete it, not
// keep a durable consumer, not see Ward's domain events (they hold IP
// addresses and drive Ward's own consumers), and a client without a key
// is not let in at all.
func TestSubscriberPermissions(t *testing.T) {
	in, nb, connect := ward(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	var mu sync.Mutex
	var asyncErrs []string
	nc := connect(t)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		mu.Lock()
		asyncErrs = append(asyncErrs, err.Error())
		mu.Unlock()
	})
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s0, err := js.Stream(ctx, caenats.DefaultStream)
	if err != nil {
		t.Fatalf("stream info refused to a subscriber: %v", err)
	}
	before := s0.CachedInfo().State.Msgs

	// Publishing (plain or JetStream) is refused.
	if err := nc.Publish("ward.cae.caep.session-revoked", []byte("x")); err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	_, err = js.Publish(pctx, "ward.cae.caep.session-revoked", []byte("x"))
	pcancel()
	if err == nil {
		t.Fatal("a subscriber published to the CAE stream")
	}
	// Destructive operations are refused. (Consumers, durable or not,
	// share one API subject; the account bounds how many exist.)
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, time.Second) }
	c1, k1 := short()
	if s, err := js.Stream(c1, caenats.DefaultStream); err != nil {
		t.Fatal(err)
	} else if err := s.Purge(c1); err == nil {
		t.Fatal("a subscriber purged the CAE stream")
	}
	k1()
	c2, k2 := short()
	if err := js.DeleteStream(c2, caenats.DefaultStream); err == nil {
		t.Fatal("a subscriber deleted the CAE stream")
	}
	k2()
	// Ward's domain events are not visible from the subscriber account.
	c4, k4 := short()
	if _, err := js.Stream(c4, nb.Stream()); err == nil {
		t.Fatalf("a subscriber sees the %s stream", nb.Stream())
	}
	k4()
	sub, err := nc.SubscribeSync("ward.events.>")
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	if err := in.App.Identity.SetDisabled(context.Background(), "admin-1", userID(t, in, "bob"), true); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.NextMsg(time.Second); err == nil {
		t.Fatalf("a subscriber received a domain event on %s", m.Subject)
	}
	mu.Lock()
	errs := strings.Join(asyncErrs, "; ")
	mu.Unlock()
	if !strings.Contains(strings.ToLower(errs), "permissions violation") {
		t.Fatalf("no permissions violation reported; async errors: %q", errs)
	}
	// The stream holds what Ward published, and nothing else.
	var n uint64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		s, err := js.Stream(ctx, caenats.DefaultStream)
		if err != nil {
			t.Fatal(err)
		}
		if n = s.CachedInfo().State.Msgs; n > before {
			break
		}
	}
	if n != before+1 {
		t.Fatalf("CAE stream holds %d messages, want %d (+ the account-disabled SET)", n, before+1)
	}

	// No key, no connection.
	if nc2, err := nats.Connect(nb.ClientURL(), nats.MaxReconnects(0)); err == nil {
		nc2.Close()
		t.Fatal("connected without a key")
	} else if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("connect without a key: %v", err)
	}
}

// TestReadyWhenFilterSelectsNothing: a follower whose subjects select
// none of the stored SETs is ready at once, not at the next matching
// event.
func TestReadyWhenFilterSelectsNothing(t *testing.T) {
	in, _, connect := ward(t)
	bob := userID(t, in, "bob")
	all, st := newReceiver(t, in)
	fa := follow(t, connect(t), all, 0)
	if err := in.App.Identity.SetDisabled(context.Background(), "admin-1", bob, true); err != nil {
		t.Fatal(err)
	}
	rejected(t, st, bobToken(in, bob), fa) // the SET is in the stream
	r, _ := newReceiver(t, in)
	f, err := caenats.Follow(context.Background(), caenats.Config{Conn: connect(t), Receiver: r,
		Subjects: []string{"ward.cae.caep.device-compliance-change"}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	select {
	case <-f.Ready():
	case <-time.After(5 * time.Second):
		t.Fatalf("not ready: %+v", f.Stats())
	}
	if s := f.Stats(); s.Received != 0 {
		t.Fatalf("received %+v", s)
	}
}

// TestResumesAfterStall: a consumer that stops delivering while the
// stream holds SETs for it (here paused on the server, which keeps its
// heartbeats going, so the client library sees nothing wrong) is
// replaced, and the follower goes on from the last SET it processed.
func TestResumesAfterStall(t *testing.T) {
	in, nb, connect := ward(t)
	bob := userID(t, in, "bob")
	r, st := newReceiver(t, in)
	f := follow(t, connect(t), r, 200*time.Millisecond)
	base := f.Stats()

	ctx := context.Background()
	js := nb.CAEJetStream()
	stream, err := js.Stream(ctx, caenats.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	var paused int
	for name := range stream.ConsumerNames(ctx).Name() {
		if _, err := js.PauseConsumer(ctx, caenats.DefaultStream, name, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		paused++
	}
	if paused != 1 {
		t.Fatalf("paused %d consumers, want the follower's one", paused)
	}
	tok := bobToken(in, bob)
	if err := in.App.Identity.SetDisabled(ctx, "admin-1", bob, true); err != nil {
		t.Fatal(err)
	}
	if d := rejected(t, st, tok, f); d.By != "user" {
		t.Fatalf("decision %+v, want revoked by user", d)
	}
	s := f.Stats()
	if s.Resumes < 1 || s.Applied != base.Applied+1 || s.Duplicates != base.Duplicates {
		t.Fatalf("stats %+v, want a resume and one more applied than %+v", s, base)
	}
	// The replaced consumer is deleted; the new one follows.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []string
		for name := range stream.ConsumerNames(ctx).Name() {
			if c, err := js.Consumer(ctx, caenats.DefaultStream, name); err == nil && c.CachedInfo().Paused {
				left = append(left, name)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stalled consumer %v is still on the server", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestResumesAfterLostDelivery: a consumer that says it delivered a SET
// the follower never processed (lost on the way, with no later message to
// show the gap) is replaced too, and the SET comes again (a duplicate,
// applied once).
func TestResumesAfterLostDelivery(t *testing.T) {
	in, _, connect := ward(t)
	bob := userID(t, in, "bob")
	r, st := newReceiver(t, in)
	f := follow(t, connect(t), r, 200*time.Millisecond)
	if err := in.App.Identity.SetDisabled(context.Background(), "admin-1", bob, true); err != nil {
		t.Fatal(err)
	}
	rejected(t, st, bobToken(in, bob), f)
	base := f.Stats()
	caenats.SetLastSeq(f, 0)
	deadline := time.Now().Add(10 * time.Second)
	for s := f.Stats(); s.Resumes == 0 || s.Duplicates == base.Duplicates; s = f.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("no resume after a lost delivery: %+v (before %+v)", s, base)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := f.Stats(); s.Applied != base.Applied {
		t.Fatalf("stats %+v: the redelivered SETs were applied again (before %+v)", s, base)
	}
}
