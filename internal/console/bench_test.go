package console_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

// BenchmarkRequestCheck measures what the console's check of every
// request costs, over real HTTP on loopback against a real Ward (SQLite):
//
//   - userinfo: the baseline, a bearer access token at Ward's /userinfo
//     (Ward's resource check: signature, revocation, live session, user);
//
//   - console: the console's cached log-verification fragment, whose work
//     besides the check is nothing: the sealed cookie opened, the same
//     resource check, the Ward session read, the DBSC binding and roles.
//
//     go test ./internal/console -run '^$' -bench RequestCheck -benchtime 2000x -count 5
func BenchmarkRequestCheck(b *testing.B) {
	in := wardtest.Start(b, wardtest.Options{})
	// Baseline token: the "web" client's, for alice.
	br := in.Browser()
	verifier, challenge := wardtest.PKCE()
	in.Clock.Advance(31 * time.Second)
	cb := in.Login(b, br, in.AuthorizeURL("web", challenge, nil), "alice", wardtest.AlicePassword, in.TOTP(b, 0))
	form := url.Values{"grant_type": {"authorization_code"}, "code": {cb.Query().Get("code")}, "redirect_uri": {wardtest.RedirectURI}, "code_verifier": {verifier}}
	req, _ := http.NewRequest(http.MethodPost, in.URL+"/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("web", wardtest.WebSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" {
		b.Fatalf("token: %s", body)
	}
	at := tr.AccessToken
	// The console session: sign in through the console.
	in.Clock.Advance(31 * time.Second)
	cbr := in.Browser()
	r, _ := wardtest.Do(b, cbr, http.MethodGet, in.URL+"/console/login", nil)
	r, _ = in.TryLogin(b, cbr, r.Header.Get("Location"), "alice", wardtest.AlicePassword, in.TOTP(b, 0))
	if r, _ = wardtest.Do(b, cbr, http.MethodGet, r.Header.Get("Location"), nil); r.StatusCode != http.StatusSeeOther {
		b.Fatalf("console sign-in: %d", r.StatusCode)
	}
	get := func(c *http.Client, u string, hdr map[string]string) {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("%s: %d", u, resp.StatusCode)
		}
	}
	b.Run("userinfo", func(b *testing.B) {
		defer cpuPerOp(b)()
		for b.Loop() {
			get(http.DefaultClient, in.URL+"/userinfo", map[string]string{"Authorization": "Bearer " + at})
		}
	})
	b.Run("console", func(b *testing.B) {
		defer cpuPerOp(b)()
		for b.Loop() {
			get(cbr, in.URL+"/console/logs/verification", map[string]string{"HX-Request": "true"})
		}
	})
}

// cpuPerOp reports the process's CPU time (user and system: client and
// server, both in this process) per operation, steadier than wall time
// on a loaded machine.
func cpuPerOp(b *testing.B) func() {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			return 0
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	return func() { b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/op") }
}

// BenchmarkReportOnly measures the report-only results page, which reads
// the period's sign-in records (here 5,000, each with a report-only
// result) and sums them up per policy, against the baseline of the
// sign-in log's first page (100 records), over real HTTP against a real
// Ward (SQLite):
//
//	go test ./internal/console -run '^$' -bench ReportOnly -benchtime 20x -count 5
func BenchmarkReportOnly(b *testing.B) {
	in := wardtest.Start(b, wardtest.Options{})
	ctx := context.Background()
	now := in.Clock.Now()
	for i := 0; i < 5000; i++ {
		outcome := "ro-mfa-web=allow"
		if i%3 == 0 {
			outcome = "ro-mfa-web=allow_with_controls:mfa"
		}
		e := &model.Event{ID: "bench-" + strconv.Itoa(i), Type: model.EventSignInSucceeded, Time: now.Add(-time.Duration(i) * time.Minute),
			Actor: "u" + strconv.Itoa(i%50), UserID: "u" + strconv.Itoa(i%50), ClientID: "web", IP: "203.0.113.9", Outcome: model.OutcomeSuccess,
			Data: map[string]string{"ca_version": "2", "ca_report_only": outcome}}
		if _, err := in.App.Store.AppendEvent(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
	in.Clock.Advance(31 * time.Second)
	cbr := in.Browser()
	r, _ := wardtest.Do(b, cbr, http.MethodGet, in.URL+"/console/login", nil)
	r, _ = in.TryLogin(b, cbr, r.Header.Get("Location"), "alice", wardtest.AlicePassword, in.TOTP(b, 0))
	if r, _ = wardtest.Do(b, cbr, http.MethodGet, r.Header.Get("Location"), nil); r.StatusCode != http.StatusSeeOther {
		b.Fatalf("console sign-in: %d", r.StatusCode)
	}
	get := func(u, want string) {
		resp, body := wardtest.Do(b, cbr, http.MethodGet, u, nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, want) {
			b.Fatalf("%s: %d", u, resp.StatusCode)
		}
	}
	b.Run("signin-log-page", func(b *testing.B) {
		for b.Loop() {
			get(in.URL+"/console/logs", "signin.succeeded")
		}
	})
	b.Run("report-only-5000", func(b *testing.B) {
		for b.Loop() {
			get(in.URL+"/console/access/report-only?days=7", "would have required more</span> <strong>1667</strong>")
		}
	})
}
