package server_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// Recovery codes on the sign-in pages: the second form of the
// second-factor page, over real HTTP.

// recoveryCodes gives alice of in a new set of recovery codes.
func recoveryCodes(t *testing.T, in *wardtest.Instance) []string {
	t.Helper()
	ctx := context.Background()
	alice, err := in.App.Store.GetUserByUsername(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	cs, err := in.App.Identity.NewRecoveryCodes(ctx, "test", alice.ID)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Reveal()
	}
	return out
}

// mfaPage signs alice in with her password in b and returns the
// second-factor page's form (its hidden fields).
func mfaPage(t *testing.T, in *wardtest.Instance, b *http.Client) (url.Values, string) {
	t.Helper()
	form := loginForm(t, in, b)
	form.Set("username", "alice")
	form.Set("password", wardtest.AlicePassword)
	status, body := post(b, in.URL+"/login", form)
	if status != http.StatusOK || !strings.Contains(body, `name="otp"`) {
		t.Fatalf("password step: %s", answer(status, body))
	}
	return wardtest.HiddenFields(body), body
}

// recoveryAnswer names what the page said to a recovery code.
func recoveryAnswer(status int, body string) string {
	switch {
	case status == http.StatusSeeOther:
		return "signed in"
	case status == http.StatusUnauthorized && strings.Contains(body, "That recovery code is not valid"):
		return "invalid"
	case status == http.StatusUnauthorized && strings.Contains(body, "That recovery code was already used"):
		return "used"
	case status == http.StatusUnauthorized && strings.Contains(body, "Too many failed attempts"):
		return "locked"
	}
	return fmt.Sprintf("status %d: %.200s", status, body)
}

// useRecoveryCode posts code on the recovery form of the second-factor
// page whose hidden fields are mfa.
func useRecoveryCode(b *http.Client, in *wardtest.Instance, mfa url.Values, code string) (int, string) {
	f := url.Values{}
	for k, v := range mfa {
		f[k] = v
	}
	f.Set("recovery", code)
	return post(b, in.URL+"/login/mfa", f)
}

// TestRecoveryCodeSignIn: a user who lost the authenticator signs in with
// password and a recovery code through the real pages (no JavaScript:
// a second form in a details element). The session and the tokens carry
// the second factor (amr pwd otp mfa, the multi-factor acr), the sign-in
// log says the method and how many codes are left. The same code again,
// a wrong code and too many attempts each get their own message.
func TestRecoveryCodeSignIn(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) { c.Lockout.MaxFailures = 3 }})
	ctx := context.Background()
	codes := recoveryCodes(t, in)
	b := in.Browser()
	_, challenge := wardtest.PKCE()
	_, body := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("web", challenge, nil), nil)
	form := wardtest.HiddenFields(body)
	form.Set("username", "alice")
	form.Set("password", wardtest.AlicePassword)
	resp, body := wardtest.Do(t, b, http.MethodPost, in.URL+"/login", form)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("password: %d", resp.StatusCode)
	}
	for _, want := range []string{`<details>`, `<summary>Use a recovery code instead</summary>`, `name="recovery"`, `name="otp"`} {
		if !strings.Contains(body, want) {
			t.Errorf("second-factor page lacks %s", want)
		}
	}
	if strings.Contains(body, "<script") || strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src") {
		t.Errorf("second-factor page has script or allows it")
	}
	if strings.Count(body, `name="state"`) != 2 || strings.Count(body, `name="csrf"`) != 2 {
		t.Errorf("the two forms do not both carry state and csrf")
	}
	mfa := wardtest.HiddenFields(body)

	// Typed in capitals without the dash.
	status, body := useRecoveryCode(b, in, mfa, strings.ToUpper(strings.ReplaceAll(codes[0], "-", "")))
	if status != http.StatusSeeOther {
		t.Fatalf("recovery code: %s", recoveryAnswer(status, body))
	}
	if status, body := useRecoveryCode(b, in, mfa, codes[0]); status == http.StatusSeeOther {
		t.Fatalf("a recovery code was accepted twice: %s", recoveryAnswer(status, body))
	}

	// The session, the tokens and the log.
	alice, _ := in.App.Store.GetUserByUsername(ctx, "alice")
	evs, err := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventSignInSucceeded}, UserID: alice.ID})
	if err != nil || len(evs) != 1 {
		t.Fatalf("signin.succeeded: %v, %v", evs, err)
	}
	ev := evs[0]
	if ev.Data["method"] != "recovery_code" || ev.Data["recovery_codes_left"] != "9" || ev.Data["amr"] != "pwd otp mfa" || ev.Data["acr"] != "urn:ward:acr:mfa" {
		t.Errorf("signin.succeeded data %v", ev.Data)
	}
	sess, err := in.App.Store.GetSession(ctx, ev.SessionID)
	if err != nil || strings.Join(sess.AMR, " ") != "pwd otp mfa" || sess.ACR != "urn:ward:acr:mfa" {
		t.Errorf("session %+v, %v", sess, err)
	}
	used, _ := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventMFARecoveryCodeUsed}})
	if len(used) != 1 || used[0].UserID != alice.ID || used[0].Data["codes_left"] != "9" || used[0].IP == "" {
		t.Errorf("mfa.recovery_code_used: %+v", used)
	}

	// Another browser: the used code says so, a wrong code says so, and
	// too many wrong codes lock (limit 3).
	b2 := in.Browser()
	mfa2, _ := mfaPage(t, in, b2)
	status, body = useRecoveryCode(b2, in, mfa2, codes[0])
	if a := recoveryAnswer(status, body); a != "used" {
		t.Errorf("used code: %s", a)
	}
	if !strings.Contains(body, "<details open>") || !strings.Contains(body, `name="recovery"`) {
		t.Errorf("the page after a failed recovery code does not show its form open")
	}
	for i := range 3 {
		status, body = useRecoveryCode(b2, in, mfa2, fmt.Sprintf("wrong-code%d", i))
		if a := recoveryAnswer(status, body); a != "invalid" {
			t.Fatalf("wrong code %d: %s", i+1, a)
		}
	}
	status, body = useRecoveryCode(b2, in, mfa2, codes[1])
	if a := recoveryAnswer(status, body); a != "locked" {
		t.Errorf("right code after 3 wrong ones (limit 3): %s, want locked", a)
	}
	failed := failedSignIns(t, in, "recovery_code")
	if failed["recovery_code_replay"] != 2 || failed["invalid_recovery_code"] != 3 || failed["locked"] != 1 {
		t.Errorf("sign-in log of the recovery-code failures: %v", failed)
	}
	if n, _ := in.App.Identity.RecoveryCodesLeft(ctx, alice.ID); n != 9 {
		t.Errorf("%d codes left, want 9 (refused codes are not used up)", n)
	}
}

// TestRecoveryCodeTokens: the tokens of a recovery-code sign-in carry the
// second factor like a TOTP sign-in's.
func TestRecoveryCodeTokens(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	codes := recoveryCodes(t, in)
	b := in.Browser()
	verifier, challenge := wardtest.PKCE()
	_, body := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("web", challenge, nil), nil)
	form := wardtest.HiddenFields(body)
	form.Set("username", "alice")
	form.Set("password", wardtest.AlicePassword)
	_, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login", form)
	mfa := wardtest.HiddenFields(body)
	mfa.Set("recovery", codes[5])
	resp, _ := wardtest.Do(t, b, http.MethodPost, in.URL+"/login/mfa", mfa)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("recovery code: %d", resp.StatusCode)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("redirect %q", resp.Header.Get("Location"))
	}
	r := do(t, in, call{path: "/token", basic: [2]string{"web", wardtest.WebSecret}, form: url.Values{"grant_type": {"authorization_code"},
		"code": {loc.Query().Get("code")}, "code_verifier": {verifier}, "redirect_uri": {wardtest.RedirectURI}}})
	if r.Status != 200 {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	id := claims(t, r.str("id_token"))
	if fmt.Sprint(id["amr"]) != "[pwd otp mfa]" || id["acr"] != "urn:ward:acr:mfa" {
		t.Errorf("ID token amr %v acr %v", id["amr"], id["acr"])
	}
	if at := claims(t, r.str("access_token")); at["acr"] != "urn:ward:acr:mfa" {
		t.Errorf("access token acr %v", at["acr"])
	}
}

// TestRecoveryCodeDeviceApproval: a device approval signed in with a
// recovery code tells the user how many codes are left on the
// confirmation page, and the approval goes on.
func TestRecoveryCodeDeviceApproval(t *testing.T) {
	in := startDevice(t)
	codes := recoveryCodes(t, in)
	dcode, ucode := startDeviceFlow(t, in, "tv", nil, nil)
	b := in.Browser()
	resp, body := enterUserCode(t, in, b, ucode, ucode)
	if resp.StatusCode != 200 || !strings.Contains(body, `name="password"`) {
		t.Fatalf("verification page: %d %.300s", resp.StatusCode, body)
	}
	form := wardtest.HiddenFields(body)
	form.Set("username", "alice")
	form.Set("password", wardtest.AlicePassword)
	_, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login", form)
	mfa := wardtest.HiddenFields(body)
	mfa.Set("recovery", codes[3])
	resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/login/mfa", mfa)
	if resp.StatusCode != 200 || !strings.Contains(body, "You signed in with a recovery code; you have 9 left") {
		t.Fatalf("confirmation page: %d %.600s", resp.StatusCode, body)
	}
	confirmDevice(t, in, b, body)
	if tok := poll(t, in, "tv", dcode, nil); tok.Status != 200 {
		t.Fatalf("token: %d %s", tok.Status, tok.Body)
	}
}

// TestRecoveryCodeGuessRace: after alice's right password, 60 concurrent
// wrong recovery codes; at most the lockout limit are evaluated.
func TestRecoveryCodeGuessRace(t *testing.T) {
	const n, maxFail = 60, 5
	for name, dsn := range raceBackends(t) {
		t.Run(name, func(t *testing.T) {
			in := startBehindProxy(t, dsn, func(c *config.Config) { c.Lockout.MaxFailures = maxFail })
			codes := recoveryCodes(t, in)
			b := browserFrom(in, "203.0.113.7")
			mfa, _ := mfaPage(t, in, b)
			answers := make([]string, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				c := browserFrom(in, fmt.Sprintf("203.0.113.%d", 10+i%4))
				c.Jar = b.Jar
				wg.Go(func() {
					<-start
					answers[i] = recoveryAnswer(useRecoveryCode(c, in, mfa, fmt.Sprintf("zzzzz-%05d", i)))
				})
			}
			close(start)
			wg.Wait()
			count := map[string]int{}
			for _, a := range answers {
				count[a]++
			}
			t.Logf("%s: %d of %d wrong recovery codes evaluated (limit %d); answers %v", name, count["invalid"], n, maxFail, count)
			if count["invalid"] > maxFail || count["invalid"]+count["locked"] != n {
				t.Errorf("answers %v: want at most %d invalid, the rest locked", count, maxFail)
			}
			if a := recoveryAnswer(useRecoveryCode(b, in, mfa, codes[0])); a != "locked" {
				t.Errorf("right code after the burst: %s, want locked", a)
			}
		})
	}
}

// TestRecoveryCodeOnceAcrossInstances: two instances on one PostgreSQL
// database; a code used on one is "already used" on the other, where
// another code of the set signs in.
func TestRecoveryCodeOnceAcrossInstances(t *testing.T) {
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("WARD_TEST_POSTGRES_DSN is not set")
	}
	a := wardtest.Start(t, wardtest.Options{PostgresDSN: dsn})
	b := wardtest.Start(t, wardtest.Options{Join: a})
	codes := recoveryCodes(t, a)
	ba := a.Browser()
	mfa, _ := mfaPage(t, a, ba)
	if ans := recoveryAnswer(useRecoveryCode(ba, a, mfa, codes[0])); ans != "signed in" {
		t.Fatalf("first instance: %s", ans)
	}
	bb := b.Browser()
	mfa, _ = mfaPage(t, b, bb)
	if ans := recoveryAnswer(useRecoveryCode(bb, b, mfa, codes[0])); ans != "used" {
		t.Errorf("the same code on the second instance: %s, want used", ans)
	}
	if ans := recoveryAnswer(useRecoveryCode(bb, b, mfa, codes[1])); ans != "signed in" {
		t.Errorf("another code on the second instance: %s", ans)
	}
	alice, _ := b.App.Store.GetUserByUsername(context.Background(), "alice")
	if n, _ := b.App.Identity.RecoveryCodesLeft(context.Background(), alice.ID); n != 8 {
		t.Errorf("%d codes left, want 8", n)
	}
}
