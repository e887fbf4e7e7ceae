package server_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// lastFailure is the reason of the newest failed token request.
func lastFailure(t *testing.T, in *wardtest.Instance) string {
	t.Helper()
	evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{
		Types: []model.EventType{model.EventTokenRequestFailed}, Limit: 1})
	if err != nil || len(evs) == 0 {
		t.Fatalf("no failed token request recorded: %v", err)
	}
	return evs[0].Reason
}

// Every refusal of the refresh grant (checked against the token, its
// session and its user, read together) has its reason and leaves the
// token usable; the checks run before anything is rotated.
func TestRefreshGrantRefusals(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: noAutoRevoke})
	ctx := context.Background()
	s := newSigner(t)
	signIn := func() string {
		code, verifier := codeFlow(t, in, "spa", s, nil)
		r := exchange(t, in, "spa", code, verifier, s)
		if r.Status != 200 {
			t.Fatalf("token: %d %s", r.Status, r.Body)
		}
		return r.str("refresh_token")
	}
	refused := func(r result, reason string) {
		t.Helper()
		wantError(t, r, 400, "invalid_grant")
		if got := lastFailure(t, in); got != reason {
			t.Errorf("reason %q, want %q", got, reason)
		}
	}
	alice, err := in.App.Store.GetUserByUsername(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	setDisabled := func(v bool) {
		t.Helper()
		// Directly in the store: the identity service would also revoke
		// the sessions (and delete their refresh tokens).
		if _, err := in.App.Store.UpdateUser(ctx, alice.ID, func(u *model.User) error { u.Disabled = v; return nil }); err != nil {
			t.Fatal(err)
		}
	}

	rt := signIn()
	refused(refresh(t, in, "spa", "not-a-refresh-token", s), "refresh_unknown")
	refused(do(t, in, call{path: "/token", basic: [2]string{"web", wardtest.WebSecret}, signer: s,
		form: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}}), "refresh_client_mismatch")
	refused(refresh(t, in, "spa", rt, newSigner(t)), "refresh_key_mismatch")
	setDisabled(true)
	refused(refresh(t, in, "spa", rt, s), "user_disabled")
	setDisabled(false)
	// None of the refusals used the token up.
	r := refresh(t, in, "spa", rt, s)
	if r.Status != 200 {
		t.Fatalf("refresh after refusals: %d %s", r.Status, r.Body)
	}
	rt = r.str("refresh_token")

	// Idle past the session's idle lifetime.
	in.Clock.Advance(in.Config.Tokens.SessionIdle + time.Minute)
	refused(refresh(t, in, "spa", rt, s), "session_inactive")

	rt = signIn()
	if err := in.App.Store.DeleteUser(ctx, alice.ID); err != nil {
		t.Fatal(err)
	}
	refused(refresh(t, in, "spa", rt, s), "user_unknown")
}

// Two refreshes racing with the same token: exactly one rotates it, the
// other is reuse and revokes the session, whatever the interleaving of
// their writes (they may share a commit).
func TestRefreshGrantRace(t *testing.T) {
	refreshRace(t, wardtest.Start(t, wardtest.Options{Configure: noAutoRevoke}))
}

// The same on PostgreSQL, where rotations are row-locked transactions.
func TestRefreshGrantRacePostgres(t *testing.T) {
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI is set but WARD_TEST_POSTGRES_DSN is not")
		}
		t.Skip("set WARD_TEST_POSTGRES_DSN to run against PostgreSQL")
	}
	refreshRace(t, wardtest.Start(t, wardtest.Options{Configure: noAutoRevoke, PostgresDSN: dsn}))
}

func refreshRace(t *testing.T, in *wardtest.Instance) {
	ctx := context.Background()
	s := newSigner(t)
	for round := range 5 {
		code, verifier := codeFlow(t, in, "spa", s, nil)
		r := exchange(t, in, "spa", code, verifier, s)
		if r.Status != 200 {
			t.Fatalf("token: %d %s", r.Status, r.Body)
		}
		rt, sid := r.str("refresh_token"), claims(t, r.str("access_token"))["sid"].(string)
		res := make([]result, 2)
		var wg sync.WaitGroup
		for i := range res {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[i] = refresh(t, in, "spa", rt, s)
			}()
		}
		wg.Wait()
		ok := 0
		for _, r := range res {
			switch {
			case r.Status == 200:
				ok++
			case r.str("error") != "invalid_grant":
				t.Fatalf("round %d: %d %s", round, r.Status, r.Body)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d refreshes succeeded, want exactly 1", round, ok)
		}
		sess, err := in.App.Store.GetSession(ctx, sid)
		if err != nil || sess.RevokedAt.IsZero() || sess.RevokeCause != "refresh_reuse" {
			t.Fatalf("round %d: session after the race: %+v, %v; want revoked for reuse", round, sess, err)
		}
		evs, err := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventRefreshReuseDetected}, SessionID: sid})
		if err != nil || len(evs) != 1 {
			t.Fatalf("round %d: reuse events %v, %v", round, evs, err)
		}
		// The reuse is a detection the risk engine handles on its own
		// time; the next round's sign-in would race it (a sign-in judged
		// on a level that changes before its session is stored is refused
		// with 409, as it should be), so wait for it.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			ds, err := in.App.Store.ListRiskDetections(ctx, store.RiskDetectionFilter{SessionID: sid})
			if err == nil && len(ds) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: no risk detection of the reuse after 10 s (%v)", round, err)
			}
		}
	}
}

// Fifty refreshes racing with one refresh token, against the real HTTP
// server: exactly one rotates it; the 49 others presented a token that was
// just rotated, which is reuse, and get invalid_grant (never a server
// error). The session is revoked once, so its theft signal and its
// session.revoked are each recorded once, however many requests found
// the reuse.
func TestRefreshStorm(t *testing.T) {
	refreshStorm(t, wardtest.Start(t, wardtest.Options{}))
}

func TestRefreshStormPostgres(t *testing.T) {
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("CI is set but WARD_TEST_POSTGRES_DSN is not")
		}
		t.Skip("set WARD_TEST_POSTGRES_DSN to run against PostgreSQL")
	}
	refreshStorm(t, wardtest.Start(t, wardtest.Options{PostgresDSN: dsn}))
}

func refreshStorm(t *testing.T, in *wardtest.Instance) {
	const n = 50
	ctx := context.Background()
	s := newSigner(t)
	code, verifier := codeFlow(t, in, "spa", s, nil)
	r := exchange(t, in, "spa", code, verifier, s)
	if r.Status != 200 {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	rt, sid := r.str("refresh_token"), claims(t, r.str("access_token"))["sid"].(string)
	res := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res[i] = refresh(t, in, "spa", rt, s)
		}()
	}
	close(start)
	wg.Wait()
	statuses := map[string]int{}
	for _, r := range res {
		switch {
		case r.Status == 200:
			statuses["200"]++
		case r.Status == 400 && r.str("error") == "invalid_grant":
			statuses["400 invalid_grant"]++
		default:
			statuses[fmt.Sprintf("%d %s", r.Status, r.str("error"))]++
			t.Errorf("unexpected answer %d %s", r.Status, r.Body)
		}
	}
	if statuses["200"] != 1 || statuses["400 invalid_grant"] != n-1 {
		t.Fatalf("answers %v, want exactly one 200 and %d invalid_grant", statuses, n-1)
	}
	sess, err := in.App.Store.GetSession(ctx, sid)
	if err != nil || sess.RevokedAt.IsZero() || sess.RevokeCause != "refresh_reuse" {
		t.Fatalf("session after the storm: %+v, %v; want revoked for reuse", sess, err)
	}
	for _, typ := range []model.EventType{model.EventRefreshReuseDetected, model.EventSessionRevoked} {
		evs, err := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{typ}, SessionID: sid})
		if err != nil || len(evs) != 1 {
			t.Errorf("%s events of the session: %d (%v), want exactly 1", typ, len(evs), err)
		}
	}
	if strings.Contains(in.LogText(), `"level":"ERROR"`) {
		t.Errorf("errors logged during the storm:\n%s", in.LogText())
	}
}
