package interop

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

// followerLine is one JSON line of cae-nats-follower.mjs.
type followerLine struct {
	Kind     string         `json:"kind"`
	Seq      uint64         `json:"seq"`
	Subject  string         `json:"subject"`
	Replay   bool           `json:"replay"`
	JTI      string         `json:"jti"`
	Alg      string         `json:"alg"`
	Event    string         `json:"event"`
	SubID    map[string]any `json:"sub_id"`
	Error    string         `json:"error"`
	Message  string         `json:"message"`
	Replayed int            `json:"replayed"`
}

const (
	riscAccountDisabled = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
	caepSessionRevoked  = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
)

// TestCAENATSFollowerNode runs cae-nats-follower.mjs, an independent
// follower of Ward's CAE stream written with the official NATS client for
// JavaScript (npm nats) and jose, against a real Ward with its embedded
// NATS listening on 127.0.0.1. The follower authenticates with a
// subscriber nkey and reads the stream with JetStream's ordered consumer:
// it must get bob's RISC account-disabled (published before it started)
// by replay, alice's CAEP session-revoked live, verify both against
// Ward's JWKS, and refuse a SET that reached the stream but was signed by
// another key.
func TestCAENATSFollowerNode(t *testing.T) {
	node := requireNode(t)
	if _, err := os.Stat(filepath.Join("node_modules", "nats", "package.json")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("test/interop/node_modules/nats is missing; CI must run the CAE NATS interop test; run: (cd test/interop && npm ci)")
		}
		t.Skip("test/interop/node_modules/nats is missing; run: (cd test/interop && npm ci --no-audit --no-fund)")
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	in := wardtest.Start(t, wardtest.Options{RealClock: true, Configure: func(c *config.Config) {
		c.Bus.NATS.Embedded.Listen = "127.0.0.1:0"
		c.SSF.NATS.SubscriberNKeys = []string{pub}
	}})
	nb, ok := in.App.Bus.(*bus.NATS)
	if !ok {
		t.Fatalf("bus is %T", in.App.Bus)
	}
	natsURL := nb.ClientURL()
	if natsURL == "" {
		t.Fatal("the embedded NATS server does not listen")
	}
	stream, prefix := nb.CAEStream()
	ctx := context.Background()
	bob, alice := userID(t, in, "bob"), userID(t, in, "alice")

	// Before the follower exists: only a replay can tell it.
	if err := in.App.Identity.SetDisabled(ctx, "admin-1", bob, true); err != nil {
		t.Fatal(err)
	}
	waitCAEPublished(t, natsURL, kp, stream, prefix+".risc.account-disabled")

	t0 := time.Now()
	f := startFollower(t, node, []string{
		"WARD_ISSUER=" + in.URL,
		"WARD_NATS_URL=" + natsURL,
		"WARD_NATS_SEED=" + string(seed), // environment only: never on the command line or in a log
		"WARD_CAE_STREAM=" + stream,
		"WARD_CAE_AUDIENCE=" + config.DefaultCAEAudience,
	})
	ready := f.await(t, "ready", func(l followerLine) bool { return l.Kind == "ready" })
	t.Logf("follower ready after %v, %d SETs replayed", time.Since(t0).Round(time.Millisecond), ready.Replayed)

	// Live: an administrator revokes all of alice's sessions (what
	// POST /admin/api/v1/users/{id}/sessions/revoke does).
	tLive := time.Now()
	if _, err := in.App.Sessions.RevokeUser(ctx, "admin-1", alice, model.CauseAdminRevoked); err != nil {
		t.Fatal(err)
	}
	live := f.await(t, "alice's session-revoked", func(l followerLine) bool {
		return l.Kind == "accepted" && l.Event == caepSessionRevoked && l.SubID["sub"] == alice
	})
	t.Logf("alice's session-revoked verified by the follower %v after the revocation", time.Since(tLive).Round(time.Millisecond))

	// A SET that reaches the stream with Ward's claims but another key.
	forged := wardtest.ForgeSET(t, map[string]any{
		"iss": in.URL, "aud": config.DefaultCAEAudience, "jti": "forged-1", "iat": time.Now().Unix(),
		"sub_id": map[string]any{"format": "iss_sub", "iss": in.URL, "sub": alice},
		"events": map[string]any{caepSessionRevoked: map[string]any{"event_timestamp": time.Now().Unix(), "initiating_entity": "admin"}},
	})
	if err := nb.PublishCAE(ctx, "caep.session-revoked", "forged-1", forged); err != nil {
		t.Fatal(err)
	}
	refused := f.await(t, "the forged SET", func(l followerLine) bool {
		return l.Subject != "" && strings.HasSuffix(l.Subject, ".caep.session-revoked") && l.Seq > live.Seq
	})
	lines := f.stop(t)

	if refused.Kind != "refused" {
		t.Errorf("the forged SET was %s by the follower: %+v", refused.Kind, refused)
	} else if refused.Error != "ERR_JWKS_NO_MATCHING_KEY" && refused.Error != "ERR_JWS_SIGNATURE_VERIFICATION_FAILED" {
		t.Errorf("the forged SET was refused for an unexpected reason: %s %s", refused.Error, refused.Message)
	}
	issSub := func(sub string) map[string]any {
		return map[string]any{"format": "iss_sub", "iss": in.URL, "sub": sub}
	}
	var bobSET *followerLine
	for i, l := range lines {
		switch {
		case l.Kind == "accepted" && l.JTI == "forged-1":
			t.Errorf("forged SET accepted: %+v", l)
		case l.Kind == "refused" && l.Seq != refused.Seq:
			t.Errorf("a SET of Ward's refused: %+v", l)
		case l.Kind == "accepted" && l.Event == riscAccountDisabled && l.SubID["sub"] == bob:
			bobSET = &lines[i]
		}
	}
	if bobSET == nil {
		t.Fatal("bob's RISC account-disabled did not reach the follower")
	}
	if !bobSET.Replay {
		t.Errorf("bob's account-disabled came live, want by replay: %+v", *bobSET)
	}
	if !equalJSON(bobSET.SubID, issSub(bob)) {
		t.Errorf("bob's account-disabled sub_id = %v, want %v", bobSET.SubID, issSub(bob))
	}
	if !strings.HasSuffix(bobSET.Subject, ".risc.account-disabled") || bobSET.Alg != "ES256" {
		t.Errorf("bob's account-disabled: subject %s alg %s", bobSET.Subject, bobSET.Alg)
	}
	if live.Replay {
		t.Errorf("alice's session-revoked came by replay, want live: %+v", live)
	}
	if !equalJSON(live.SubID, issSub(alice)) {
		t.Errorf("alice's session-revoked sub_id = %v, want %v", live.SubID, issSub(alice))
	}
	if !strings.HasSuffix(live.Subject, ".caep.session-revoked") || live.Alg != "ES256" {
		t.Errorf("alice's session-revoked: subject %s alg %s", live.Subject, live.Alg)
	}
	for _, l := range lines {
		if strings.Contains(l.Message, string(seed)) {
			t.Error("the follower printed the seed")
		}
	}
}

// follower is the running node process and its parsed output.
type follower struct {
	cmd    *exec.Cmd
	stdin  interface{ Close() error }
	lines  chan followerLine
	seen   []followerLine
	done   chan struct{}
	cancel context.CancelFunc
}

func startFollower(t *testing.T, node string, env []string) *follower {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, node, "cae-nats-follower.mjs")
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	cmd.Stderr = &testWriter{t: t, prefix: "node stderr: "}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &follower{cmd: cmd, stdin: stdin, lines: make(chan followerLine, 256), done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(f.done)
		defer close(f.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			t.Log("node: " + sc.Text())
			var l followerLine
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Kind != "" {
				f.lines <- l
			}
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		cancel()
		<-f.done
		_ = cmd.Wait()
	})
	return f
}

// await returns the first line (from now on, or already seen) that ok
// accepts, or fails after 20 s.
func (f *follower) await(t *testing.T, what string, ok func(followerLine) bool) followerLine {
	t.Helper()
	for _, l := range f.seen {
		if ok(l) {
			return l
		}
	}
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, open := <-f.lines:
			if !open {
				t.Fatalf("the follower exited before %s", what)
			}
			f.seen = append(f.seen, l)
			if ok(l) {
				return l
			}
		case <-timeout:
			t.Fatalf("no %s from the follower after 20 s", what)
		}
	}
}

// stop closes the follower's stdin (its signal to stop), waits for it to
// exit cleanly and returns every line it printed.
func (f *follower) stop(t *testing.T) []followerLine {
	t.Helper()
	f.stdin.Close()
	for l := range f.lines {
		f.seen = append(f.seen, l)
	}
	<-f.done
	if err := f.cmd.Wait(); err != nil {
		t.Errorf("node cae-nats-follower.mjs: %v", err)
	}
	if n := len(f.seen); n == 0 || f.seen[n-1].Kind != "done" {
		t.Errorf("the follower did not finish cleanly")
	}
	return f.seen
}

type testWriter struct {
	t      *testing.T
	prefix string
}

func (w *testWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		w.t.Log(w.prefix + line)
	}
	return len(p), nil
}

// waitCAEPublished waits until the CAE stream holds a SET on subject
// (Ward publishes asynchronously, from its outbox), asking the stream's
// state as the subscriber may.
func waitCAEPublished(t *testing.T, url string, kp nkeys.KeyPair, stream, subject string) {
	t.Helper()
	pub, _ := kp.PublicKey()
	nc, err := nats.Connect(url, nats.Nkey(pub, kp.Sign), nats.Name("interop-check"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if i, err := s.Info(ctx, jetstream.WithSubjectFilter(subject)); err == nil && i.State.Subjects[subject] > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no SET on %s in %s after 15 s", subject, stream)
}

func userID(t *testing.T, in *wardtest.Instance, name string) string {
	t.Helper()
	u, err := in.App.Store.GetUserByUsername(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
