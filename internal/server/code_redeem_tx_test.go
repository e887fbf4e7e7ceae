package server_test

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// A code exchange whose token.issued the database refuses spends nothing:
// the code, its refresh token and its record commit together, so after
// a plain server_error the same code is redeemed normally, exactly once,
// with exactly one token.issued; presenting it again is refused.
func TestCodeRedemptionCommitsWithRecord(t *testing.T) {
	tokenEventInstances(t, func(t *testing.T, in *wardtest.Instance, refuse func(t *testing.T)) {
		ctx := context.Background()
		refuse(t)
		s := newSigner(t)
		code, verifier := codeFlow(t, in, "spa", s, nil)
		hash := in.App.TokenHasher.Sum(code)
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier},
			"redirect_uri": {wardtest.RedirectURI}, "client_id": {"spa"}}
		for range 2 {
			wantCleanServerError(t, do(t, in, call{path: "/token", signer: s, form: form,
				header: http.Header{"User-Agent": {refusedAgent}}}), code)
			ac, err := in.App.Store.GetAuthCode(ctx, hash)
			if err != nil || !ac.UsedAt.IsZero() {
				t.Fatalf("code after a refused record: %+v, %v; want it unused", ac, err)
			}
			if n := len(tokenEvents(t, in, ac.SessionID, model.EventTokenIssued)); n != 0 {
				t.Fatalf("%d token.issued after a refused record, want 0", n)
			}
		}
		r := exchange(t, in, "spa", code, verifier, s)
		if r.Status != http.StatusOK || r.str("refresh_token") == "" {
			t.Fatalf("exchange after the fault: %d %s", r.Status, r.Body)
		}
		sid, _ := claims(t, r.str("access_token"))["sid"].(string)
		if n := len(tokenEvents(t, in, sid, model.EventTokenIssued)); n != 1 {
			t.Errorf("%d token.issued, want 1", n)
		}
		if _, err := in.App.Store.GetRefreshToken(ctx, in.App.TokenHasher.Sum(r.str("refresh_token"))); err != nil {
			t.Errorf("refresh token of the redemption: %v", err)
		}
		wantError(t, exchange(t, in, "spa", code, verifier, s), http.StatusBadRequest, "invalid_grant")
		if n := len(tokenEvents(t, in, sid, model.EventTokenIssued)); n != 1 {
			t.Errorf("%d token.issued after a replay, want 1", n)
		}
	})
}

// Parallel exchanges of one code: exactly one gets tokens and records
// token.issued; every other one is invalid_grant and issues nothing.
func TestCodeRedemptionConcurrent(t *testing.T) {
	tokenEventInstances(t, func(t *testing.T, in *wardtest.Instance, _ func(t *testing.T)) {
		s := newSigner(t)
		code, verifier := codeFlow(t, in, "spa", s, nil)
		ac, err := in.App.Store.GetAuthCode(context.Background(), in.App.TokenHasher.Sum(code))
		if err != nil {
			t.Fatal(err)
		}
		const n = 8
		results := make([]result, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = exchange(t, in, "spa", code, verifier, s)
			}()
		}
		wg.Wait()
		ok := 0
		for i, r := range results {
			switch {
			case r.Status == http.StatusOK:
				ok++
			case r.Status != http.StatusBadRequest || r.str("error") != "invalid_grant":
				t.Errorf("exchange %d: %d %s, want 200 or invalid_grant", i, r.Status, r.Body)
			case r.str("access_token") != "" || r.str("refresh_token") != "":
				t.Errorf("exchange %d: refused, but carries a token", i)
			}
		}
		if ok != 1 {
			t.Errorf("%d exchanges succeeded, want exactly 1", ok)
		}
		if got := len(tokenEvents(t, in, ac.SessionID, model.EventTokenIssued)); got != 1 {
			t.Errorf("%d token.issued, want exactly 1", got)
		}
	})
}

// A code refused after it passed the request checks (here: its session
// ended) is spent with the refusal's record, in one write: it cannot be
// presented again for another try.
func TestCodeRefusedIsSpent(t *testing.T) {
	tokenEventInstances(t, func(t *testing.T, in *wardtest.Instance, _ func(t *testing.T)) {
		ctx := context.Background()
		s := newSigner(t)
		// A wrong verifier does not spend a code (a third party who saw
		// it cannot burn it): the request checks come first. (Checked
		// before the revocation below: what the risk engine makes of a
		// refusal on an ended session may end the user's later sessions.)
		code, verifier := codeFlow(t, in, "spa", s, nil)
		wrong, _ := wardtest.PKCE()
		wantError(t, exchange(t, in, "spa", code, wrong, s), http.StatusBadRequest, "invalid_grant")
		if r := exchange(t, in, "spa", code, verifier, s); r.Status != http.StatusOK {
			t.Errorf("exchange after a wrong verifier: %d %s", r.Status, r.Body)
		}

		code, verifier = codeFlow(t, in, "spa", s, nil)
		hash := in.App.TokenHasher.Sum(code)
		ac, err := in.App.Store.GetAuthCode(ctx, hash)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.App.Store.RevokeSession(ctx, ac.SessionID, in.Clock.Now(), "test"); err != nil {
			t.Fatal(err)
		}
		r := exchange(t, in, "spa", code, verifier, s)
		wantError(t, r, http.StatusBadRequest, "invalid_grant")
		ac, err = in.App.Store.GetAuthCode(ctx, hash)
		if err != nil || ac.UsedAt.IsZero() {
			t.Fatalf("refused code: %+v, %v; want it spent", ac, err)
		}
		failed, err := in.App.Store.ListEvents(ctx, store.EventFilter{CorrelationID: r.Header.Get("X-Correlation-ID"),
			Types: []model.EventType{model.EventTokenRequestFailed}})
		if err != nil || len(failed) != 1 || failed[0].Reason != "session_inactive" || failed[0].SessionID != ac.SessionID {
			t.Errorf("refusal record: %+v, %v; want one token.request_failed session_inactive of the session", failed, err)
		}
		// The client's retry (the same key and verifier: a lost response, a
		// reloaded callback page) is refused again, but is not a reuse.
		r = exchange(t, in, "spa", code, verifier, s)
		wantError(t, r, http.StatusBadRequest, "invalid_grant")
		if n := len(tokenEvents(t, in, ac.SessionID, model.EventTokenIssued)); n != 0 {
			t.Errorf("%d token.issued, want 0", n)
		}
		retry, err := in.App.Store.ListEvents(ctx, store.EventFilter{CorrelationID: r.Header.Get("X-Correlation-ID")})
		if err != nil || len(retry) != 1 || retry[0].Type != model.EventTokenRequestFailed || retry[0].Reason != "code_refused_before" {
			t.Errorf("retry of a refused code recorded %+v, %v; want one token.request_failed code_refused_before", retry, err)
		}
		if n := len(tokenEvents(t, in, ac.SessionID, model.EventCodeReuseDetected)); n != 0 {
			t.Errorf("%d code.reuse_detected after a retry of a refused code, want 0", n)
		}
		// Another key presenting it is not that client: a reuse, as for a
		// code that issued tokens.
		r = exchange(t, in, "spa", code, verifier, newSigner(t))
		wantError(t, r, http.StatusBadRequest, "invalid_grant")
		other, err := in.App.Store.ListEvents(ctx, store.EventFilter{CorrelationID: r.Header.Get("X-Correlation-ID"),
			Types: []model.EventType{model.EventTokenRequestFailed}})
		if err != nil || len(other) != 1 || other[0].Reason != "code_reused" {
			t.Errorf("refused code presented with another key recorded %+v, %v; want code_reused", other, err)
		}
	})
}

// The device grant's redemption commits as the code exchange's does: a
// poll whose token.issued the database refuses leaves the approved
// request unspent, the next poll gets the tokens, and the one after that
// is refused. A request approved for a session that then ended is spent
// with its refusal.
func TestDeviceRedemptionCommitsWithRecord(t *testing.T) {
	in := startDevice(t)
	refuseTokenEventsSQLite(t, in.DBPath)
	ctx := context.Background()
	s := newSigner(t)
	b := in.Browser()
	dcode, ucode := startDeviceFlow(t, in, "tv", s, nil)
	answerDevice(t, in, b, ucode, "approve")
	form := url.Values{"grant_type": {deviceGrant}, "device_code": {dcode}, "client_id": {"tv"}}
	wantCleanServerError(t, do(t, in, call{path: "/token", signer: s, form: form,
		header: http.Header{"User-Agent": {refusedAgent}}}), dcode)
	hash := in.App.TokenHasher.Sum(dcode)
	dc, err := in.App.Store.GetDeviceCode(ctx, hash)
	if err != nil || !dc.UsedAt.IsZero() || dc.Status != model.DeviceCodeApproved {
		t.Fatalf("device request after a refused record: %+v, %v; want approved and unused", dc, err)
	}
	if r := poll(t, in, "tv", dcode, s); r.Status != http.StatusOK || r.str("refresh_token") == "" {
		t.Fatalf("poll after the fault: %d %s", r.Status, r.Body)
	}
	if n := len(tokenEvents(t, in, dc.SessionID, model.EventTokenIssued)); n != 1 {
		t.Errorf("%d token.issued, want 1", n)
	}
	wantError(t, poll(t, in, "tv", dcode, s), http.StatusBadRequest, "invalid_grant")

	// Approved, then the session ends: the poll is refused and spends it.
	in.Clock.Advance(6 * time.Second)
	dcode, ucode = startDeviceFlow(t, in, "tv", s, nil)
	answerDevice(t, in, b, ucode, "approve")
	hash = in.App.TokenHasher.Sum(dcode)
	if dc, err = in.App.Store.GetDeviceCode(ctx, hash); err != nil {
		t.Fatal(err)
	}
	if _, err := in.App.Store.RevokeSession(ctx, dc.SessionID, in.Clock.Now(), "test"); err != nil {
		t.Fatal(err)
	}
	wantError(t, poll(t, in, "tv", dcode, s), http.StatusBadRequest, "invalid_grant")
	if dc, err = in.App.Store.GetDeviceCode(ctx, hash); err != nil || dc.UsedAt.IsZero() {
		t.Errorf("refused device request: %+v, %v; want it spent", dc, err)
	}
	in.Clock.Advance(6 * time.Second)
	r := poll(t, in, "tv", dcode, s)
	wantError(t, r, http.StatusBadRequest, "invalid_grant")
	if r.str("access_token") != "" {
		t.Error("a spent device request yielded a token")
	}
}
