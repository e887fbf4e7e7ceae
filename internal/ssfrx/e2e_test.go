package ssfrx_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
	"github.com/ward-idp/ward/rs"
)

// The receiving Ward's client at the transmitting Ward.
const (
	peerClient = "ward-a"
	peerSecret = "ward-a-secret-0123456789-abcdefghijklmnop"
)

// transmitterWard starts the Ward whose SETs the other receives: a
// client for the receiver with the SSF scopes, users named by email too.
func transmitterWard(t *testing.T, o wardtest.Options) *wardtest.Instance {
	t.Helper()
	configure := o.Configure
	o.RealClock = true
	o.Configure = func(c *config.Config) {
		c.SSF.UserEmailAlias = true
		c.SSF.MinVerificationInterval = 10 * time.Millisecond // the restarted receiver asks again at once
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: peerClient, Name: "Ward A (SSF receiver)",
			AuthMethod: "client_secret_basic", Secret: peerSecret, GrantTypes: []string{"client_credentials"},
			Scopes: []string{"ssf.manage", "ssf.read", "ssf.poll"}})
		if configure != nil {
			configure(c)
		}
	}
	return wardtest.Start(t, o)
}

// receiverWard starts a Ward receiving from b by delivery.
func receiverWard(t *testing.T, b *wardtest.Instance, delivery string, o wardtest.Options) *wardtest.Instance {
	t.Helper()
	secretFile := filepath.Join(t.TempDir(), "ward-b.secret")
	if err := os.WriteFile(secretFile, []byte(peerSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o.RealClock = true
	o.Configure = func(c *config.Config) {
		c.SSFReceivers = []config.SSFReceiver{{
			Name: "ward-b", Issuer: b.URL, Delivery: delivery,
			Auth: config.SSFReceiverAuth{ClientID: peerClient, ClientSecretFile: secretFile, TokenURL: b.URL + "/token",
				Scopes: []string{"ssf.manage", "ssf.read", "ssf.poll"}},
			AllowedNetworks: []string{"127.0.0.0/8", "::1/128"},
		}}
	}
	return wardtest.Start(t, o)
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func user(t *testing.T, in *wardtest.Instance, name string) *model.User {
	t.Helper()
	u, err := in.App.Store.GetUserByUsername(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func signals(t *testing.T, in *wardtest.Instance, userID string) []*store.StoredEvent {
	t.Helper()
	evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{model.EventSSFSignalReceived}, UserID: userID})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// signIn gives bob a session at in and returns its id.
func signIn(t *testing.T, in *wardtest.Instance) string {
	t.Helper()
	_, challenge := wardtest.PKCE()
	in.Login(t, in.Browser(), in.AuthorizeURL("web", challenge, nil), "bob", wardtest.BobPassword, "")
	ss, err := in.App.Store.ListSessions(context.Background(), store.SessionFilter{UserID: user(t, in, "bob").ID, ActiveOnly: true, Now: time.Now()})
	if err != nil || len(ss) != 1 {
		t.Fatalf("bob's sessions: %d, %v", len(ss), err)
	}
	return ss[0].ID
}

func streamOf(t *testing.T, in *wardtest.Instance) *model.SSFReceiverStream {
	t.Helper()
	st, err := in.App.Store.GetSSFReceiverStream(context.Background(), "ward-b")
	if err != nil {
		return nil
	}
	return st
}

// peerStreams are the receiver's streams at the transmitting Ward.
func peerStreams(t *testing.T, b *wardtest.Instance) []*model.SSFStream {
	t.Helper()
	l, err := b.App.CAE.ListStreams(context.Background(), peerClient)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testEndToEnd: Ward A sets its stream up at Ward B by itself, B's
// verification event arrives, B revokes a session of bob (a user of
// both, with the same email) and A records ssf.signal_received for its
// own bob with the CAEP session-revoked type within a second; a restart
// of A reuses its stream (none is created twice) and still receives.
func testEndToEnd(t *testing.T, delivery string, o wardtest.Options) {
	b := transmitterWard(t, o)
	a := receiverWard(t, b, delivery, o)
	eventually(t, 10*time.Second, "stream set up and verified", func() bool {
		st := streamOf(t, a)
		return st != nil && st.StreamID != "" && !st.VerifiedAt.IsZero()
	})
	st := streamOf(t, a)
	if l := peerStreams(t, b); len(l) != 1 || l[0].ID != st.StreamID {
		t.Fatalf("streams at the transmitter: %d, want Ward A's one", len(l))
	}
	wantMethod := model.DeliveryPoll
	if delivery == config.SSFDeliveryPush {
		wantMethod = model.DeliveryPush
	}
	if st.Delivery != wantMethod || st.Status != model.StreamEnabled || len(st.Audience) == 0 {
		t.Fatalf("stored stream: %+v", st)
	}

	revokeAndExpect := func(a *wardtest.Instance, n int) {
		t.Helper()
		sid := signIn(t, b)
		start := time.Now()
		if ok, err := b.App.Sessions.Revoke(context.Background(), "admin", sid, model.CauseAdminRevoked); err != nil || !ok {
			t.Fatalf("revoke at B: %v %v", ok, err)
		}
		bobA := user(t, a, "bob")
		eventually(t, time.Second, "signal recorded at A", func() bool { return len(signals(t, a, bobA.ID)) == n })
		t.Logf("%s: signal recorded %v after the revocation", delivery, time.Since(start).Round(time.Millisecond))

		e := signals(t, a, bobA.ID)[0]
		if e.Reason != "session-revoked" || e.Data[activity.DataSignal] != rs.EventSessionRevoked ||
			e.Data[model.DataSSFTransmitter] != "ward-b" || e.Data[model.DataSSFIssuer] != b.URL || e.SessionID != "" || e.Code() != "W9101W" {
			t.Fatalf("signal event: %+v", e)
		}
		act, ok := activity.FromEvent(&e.Event)
		if !ok || act.Kind != activity.KindSignal || act.UserID != bobA.ID || act.Signal != rs.EventSessionRevoked {
			t.Fatalf("activity of the signal: %+v %v", act, ok)
		}
	}
	revokeAndExpect(a, 1)

	a = a.Restart(t)
	eventually(t, 10*time.Second, "stream verified again after the restart", func() bool {
		s := streamOf(t, a)
		return s != nil && s.VerifiedAt.After(st.VerifiedAt)
	})
	if l := peerStreams(t, b); len(l) != 1 || l[0].ID != st.StreamID {
		t.Fatalf("after a restart: %d streams at the transmitter (want the same one)", len(l))
	}
	revokeAndExpect(a, 2)
	if strings.Contains(a.LogText(), peerSecret) {
		t.Fatal("the client secret is in the receiver's log")
	}
	// The counter moves just after the commit that the signal count above
	// saw: wait for it rather than race it.
	eventually(t, time.Second, "the recorded counter", func() bool { return a.App.SSFReceivers.Stats().Recorded.Load() > 0 })
	if s := a.App.SSFReceivers.Stats(); s.Refused.Load() != 0 {
		t.Fatalf("stats: refused %d recorded %d", s.Refused.Load(), s.Recorded.Load())
	}
}

func TestPushEndToEnd(t *testing.T) { testEndToEnd(t, config.SSFDeliveryPush, wardtest.Options{}) }

func TestPollEndToEnd(t *testing.T) { testEndToEnd(t, config.SSFDeliveryPoll, wardtest.Options{}) }

// TestPollEndToEndPostgres runs the poll case on PostgreSQL: two apps on
// two databases.
func TestPollEndToEndPostgres(t *testing.T) {
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("WARD_TEST_POSTGRES_DSN not set")
	}
	testEndToEnd(t, config.SSFDeliveryPoll, wardtest.Options{PostgresDSN: dsn})
}
