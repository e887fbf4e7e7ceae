package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// The sign-in pages under concurrent guessing, over real HTTP, on SQLite
// and (with WARD_TEST_POSTGRES_DSN) PostgreSQL. Requests come through a
// trusted proxy on loopback, which names the client in X-Forwarded-For,
// so that one test can speak for several networks.

func raceBackends(t *testing.T) map[string]string {
	b := map[string]string{"sqlite": ""}
	if dsn := os.Getenv("WARD_TEST_POSTGRES_DSN"); dsn != "" {
		b["postgres"] = dsn
	} else {
		t.Logf("WARD_TEST_POSTGRES_DSN is not set: PostgreSQL is not raced")
	}
	return b
}

func startBehindProxy(t *testing.T, dsn string, configure func(*config.Config)) *wardtest.Instance {
	return wardtest.Start(t, wardtest.Options{PostgresDSN: dsn, Configure: func(c *config.Config) {
		c.TrustedProxies = []string{"127.0.0.1/32"}
		if configure != nil {
			configure(c)
		}
	}})
}

// browserFrom is a browser whose requests come from ip.
func browserFrom(in *wardtest.Instance, ip string) *http.Client {
	b := in.Browser()
	b.Transport = forwardedFor(ip)
	return b
}

// loginForm opens the login page in b and returns its form.
func loginForm(t *testing.T, in *wardtest.Instance, b *http.Client) url.Values {
	t.Helper()
	_, challenge := wardtest.PKCE()
	resp, body := wardtest.Do(t, b, http.MethodGet, in.AuthorizeURL("web", challenge, nil), nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="password"`) {
		t.Fatalf("login page: %d %.200s", resp.StatusCode, body)
	}
	return wardtest.HiddenFields(body)
}

// post sends a form and returns the status and body; a transport error
// (a dropped connection) is returned as status 0.
func post(b *http.Client, u string, form url.Values) (int, string) {
	resp, err := b.PostForm(u, form)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(body)
}

// answer names what a sign-in page said.
func answer(status int, body string) string {
	switch {
	case status == 0:
		return "connection error: " + body
	case status == http.StatusSeeOther:
		return "signed in"
	case strings.Contains(body, "Incorrect username or password"):
		return "incorrect"
	case strings.Contains(body, "That code is not valid"):
		return "invalid code"
	case strings.Contains(body, "already used"):
		return "code used"
	case strings.Contains(body, "Too many failed attempts"):
		return "locked"
	case strings.Contains(body, "Too many sign-in attempts"):
		return "throttled"
	}
	return fmt.Sprintf("status %d: %.120s", status, body)
}

func failedSignIns(t *testing.T, in *wardtest.Instance, stage string) map[string]int {
	t.Helper()
	evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{model.EventSignInFailed}, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, e := range evs {
		if e.Data["stage"] == stage {
			out[e.Reason]++
		}
	}
	return out
}

// TestSignInGuessRace: 120 concurrent password posts from 4 networks,
// 119 wrong and bob's right one, with a lockout limit of 5. At most 5
// passwords are evaluated ("incorrect"); every other post is told the
// account is locked; the right password either signs in or gets the
// answer of a wrong one; no connection is dropped; every failure is in
// the sign-in log.
func TestSignInGuessRace(t *testing.T) {
	const n, maxFail = 120, 5
	for name, dsn := range raceBackends(t) {
		t.Run(name, func(t *testing.T) {
			in := startBehindProxy(t, dsn, func(c *config.Config) {
				c.Lockout.MaxFailures = maxFail
				c.Passwords.MaxQueue = n // this test is about the lockout, not the queue
			})
			browsers := make([]*http.Client, n)
			forms := make([]url.Values, n)
			for i := range n {
				browsers[i] = browserFrom(in, fmt.Sprintf("198.51.100.%d", i%4+1))
				forms[i] = loginForm(t, in, browsers[i])
				forms[i].Set("username", "bob")
				forms[i].Set("password", fmt.Sprintf("wrong-guess-%03d", i))
			}
			right := n / 3
			forms[right].Set("password", wardtest.BobPassword)
			answers := make([]string, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					answers[i] = answer(post(browsers[i], in.URL+"/login", forms[i]))
				})
			}
			close(start)
			wg.Wait()
			count := map[string]int{}
			for i, a := range answers {
				if i != right {
					count[a]++
				}
			}
			t.Logf("%s: %d of %d wrong passwords evaluated (limit %d); right password: %s; answers %v", name, count["incorrect"], n-1, maxFail, answers[right], count)
			if count["incorrect"] > maxFail {
				t.Errorf("%d wrong passwords evaluated, limit %d", count["incorrect"], maxFail)
			}
			if count["incorrect"]+count["locked"] != n-1 {
				t.Errorf("wrong passwords answered %v, want only incorrect and locked", count)
			}
			switch answers[right] {
			case "signed in", "incorrect", "locked":
			default:
				t.Errorf("right password answered %q", answers[right])
			}
			if answers[right] == "incorrect" && count["incorrect"] >= maxFail {
				t.Errorf("right password evaluated beyond the limit")
			}
			failed := failedSignIns(t, in, "password")
			total := 0
			for _, c := range failed {
				total += c
			}
			wantFailed := n - 1
			if answers[right] != "signed in" {
				wantFailed = n
			}
			if total != wantFailed {
				t.Errorf("%d sign-in failures in the log (%v), want %d", total, failed, wantFailed)
			}
		})
	}
}

// TestTOTPGuessRace: after alice's right password, 60 concurrent wrong
// codes on the second-factor page; at most the limit are evaluated.
func TestTOTPGuessRace(t *testing.T) {
	const n, maxFail = 60, 5
	for name, dsn := range raceBackends(t) {
		t.Run(name, func(t *testing.T) {
			in := startBehindProxy(t, dsn, func(c *config.Config) { c.Lockout.MaxFailures = maxFail })
			b := browserFrom(in, "203.0.113.7")
			form := loginForm(t, in, b)
			form.Set("username", "alice")
			form.Set("password", wardtest.AlicePassword)
			status, body := post(b, in.URL+"/login", form)
			if status != http.StatusOK || !strings.Contains(body, `name="otp"`) {
				t.Fatalf("password step: %s", answer(status, body))
			}
			mfa := wardtest.HiddenFields(body)
			right := in.TOTP(t, 0)
			answers := make([]string, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				f := url.Values{}
				for k, v := range mfa {
					f[k] = v
				}
				code := fmt.Sprintf("%06d", i)
				if code == right {
					code = "999999"
				}
				f.Set("otp", code)
				// Four networks: the per-network budget (30) is not the limit here.
				c := browserFrom(in, fmt.Sprintf("203.0.113.%d", 10+i%4))
				c.Jar = b.Jar
				wg.Go(func() {
					<-start
					answers[i] = answer(post(c, in.URL+"/login/mfa", f))
				})
			}
			close(start)
			wg.Wait()
			count := map[string]int{}
			for _, a := range answers {
				count[a]++
			}
			t.Logf("%s: %d of %d wrong codes evaluated (limit %d); answers %v", name, count["invalid code"], n, maxFail, count)
			if count["invalid code"] > maxFail || count["invalid code"]+count["locked"] != n {
				t.Errorf("answers %v: want at most %d invalid, the rest locked", count, maxFail)
			}
			f := url.Values{}
			for k, v := range mfa {
				f[k] = v
			}
			f.Set("otp", right)
			if a := answer(post(b, in.URL+"/login/mfa", f)); a != "locked" {
				t.Errorf("right code after the burst: %s, want locked", a)
			}
		})
	}
}

// TestTOTPReplayPage: a code used once says so on the page, and replays
// do not lock the account.
func TestTOTPReplayPage(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) { c.Lockout.MaxFailures = 3 }})
	b := in.Browser()
	form := loginForm(t, in, b)
	form.Set("username", "alice")
	form.Set("password", wardtest.AlicePassword)
	_, body := post(b, in.URL+"/login", form)
	mfa := wardtest.HiddenFields(body)
	mfa.Set("otp", in.TOTP(t, 0))
	if a := answer(post(b, in.URL+"/login/mfa", mfa)); a != "signed in" {
		t.Fatalf("right code: %s", a)
	}
	for i := range 5 {
		if a := answer(post(b, in.URL+"/login/mfa", mfa)); a != "code used" {
			t.Fatalf("replay %d: %s, want the code-used message", i+1, a)
		}
	}
	failed := failedSignIns(t, in, "totp")
	if failed["totp_replay"] != 5 {
		t.Errorf("replays in the sign-in log: %v, want 5 totp_replay", failed)
	}
	in.Clock.Advance(90 * time.Second)
	mfa.Set("otp", in.TOTP(t, 0))
	if a := answer(post(b, in.URL+"/login/mfa", mfa)); a != "signed in" {
		t.Errorf("next code after 5 replays (limit 3): %s, want signed in", a)
	}
}

// TestUnknownNameLockoutAcrossInstances: attempts alternate between two
// instances on one PostgreSQL database, and those after the lock go to a
// third whose memory has seen none of them (as after a restart): the
// lockout sequence of an unknown name is that of a real account.
func TestUnknownNameLockoutAcrossInstances(t *testing.T) {
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("WARD_TEST_POSTGRES_DSN is not set")
	}
	const maxFail = 3
	cfg := func(c *config.Config) { c.Lockout.MaxFailures = maxFail }
	a := wardtest.Start(t, wardtest.Options{PostgresDSN: dsn, Configure: cfg})
	b := wardtest.Start(t, wardtest.Options{Join: a, Configure: cfg})
	seq := func(user string, restarted *wardtest.Instance) []string {
		var out []string
		for i := range maxFail + 2 {
			in := []*wardtest.Instance{a, b}[i%2]
			if i >= maxFail {
				in = restarted
			}
			br := in.Browser()
			form := loginForm(t, in, br)
			form.Set("username", user)
			form.Set("password", fmt.Sprintf("guess-%d-long-enough", i))
			out = append(out, answer(post(br, in.URL+"/login", form)))
		}
		return out
	}
	c := wardtest.Start(t, wardtest.Options{Join: a, Configure: cfg})
	real, unknown := seq("bob", c), seq("ghost", c)
	t.Logf("real %v, unknown %v", real, unknown)
	if fmt.Sprint(real) != fmt.Sprint(unknown) || real[maxFail] != "locked" {
		t.Errorf("sequences: real %v, unknown %v; want the same, locked after %d", real, unknown, maxFail)
	}
}

// TestSignInFloodDoesNotQueueLegitimateUsers: a flood of 250 wrong
// sign-ins from 10 networks (within their budgets) against the default
// argon2 cost. Attempts beyond the bounded queue in front of the hash
// computations are refused at once, so a legitimate sign-in during the
// flood gets an answer quickly (it signs in, or is told to try again)
// instead of waiting behind the flood, and signs in once it is over.
func TestSignInFloodDoesNotQueueLegitimateUsers(t *testing.T) {
	const n = 250
	in := startBehindProxy(t, "", func(c *config.Config) {
		d := config.Default()
		c.Passwords.Argon2MemoryKiB, c.Passwords.Argon2Time = d.Passwords.Argon2MemoryKiB, d.Passwords.Argon2Time
	})
	browsers := make([]*http.Client, n)
	forms := make([]url.Values, n)
	for i := range n {
		browsers[i] = browserFrom(in, fmt.Sprintf("2001:db8:%d::1", i%10))
		forms[i] = loginForm(t, in, browsers[i])
		forms[i].Set("username", fmt.Sprintf("user%03d", i))
		forms[i].Set("password", "Winter2026!")
	}
	legit := browserFrom(in, "192.0.2.200")
	legitForm := loginForm(t, in, legit)
	legitForm.Set("username", "bob")
	legitForm.Set("password", wardtest.BobPassword)

	// Unloaded, for reference.
	ref := browserFrom(in, "192.0.2.201")
	refForm := loginForm(t, in, ref)
	refForm.Set("username", "bob")
	refForm.Set("password", wardtest.BobPassword)
	t0 := time.Now()
	if a := answer(post(ref, in.URL+"/login", refForm)); a != "signed in" {
		t.Fatalf("unloaded sign-in: %s", a)
	}
	unloaded := time.Since(t0)

	answers := make([]string, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			answers[i] = answer(post(browsers[i], in.URL+"/login", forms[i]))
		})
	}
	close(start)
	time.Sleep(50 * time.Millisecond) // the flood is under way
	t0 = time.Now()
	legitAnswer := answer(post(legit, in.URL+"/login", legitForm))
	during := time.Since(t0)
	wg.Wait()
	count := map[string]int{}
	for _, a := range answers {
		count[a]++
	}
	t.Logf("legitimate sign-in: %v unloaded, %v during the flood (%s); flood answers %v", unloaded.Round(time.Millisecond), during.Round(time.Millisecond), legitAnswer, count)
	if legitAnswer != "signed in" && legitAnswer != "throttled" {
		t.Errorf("legitimate sign-in during the flood: %s", legitAnswer)
	}
	// No timing assertion (a busy machine would make it flaky): the bound
	// shows in the answers, since attempts beyond the queue are refused at
	// once rather than queued; the times are logged above.
	if count["incorrect"]+count["throttled"] != n || count["throttled"] == 0 {
		t.Errorf("flood answers %v: want incorrect or throttled, some throttled", count)
	}
	legit = browserFrom(in, "192.0.2.200") // without the session of a sign-in during the flood
	legitForm = loginForm(t, in, legit)
	legitForm.Set("username", "bob")
	legitForm.Set("password", wardtest.BobPassword)
	if a := answer(post(legit, in.URL+"/login", legitForm)); a != "signed in" {
		t.Errorf("legitimate sign-in after the flood: %s", a)
	}
}
