package identity

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestNoSecretsInLogs runs a whole account life cycle with debug logging
// into a buffer and checks that no password, TOTP seed or password hash
// reaches a log line or an event.
func TestNoSecretsInLogs(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxFailures = 3; o.IPFailuresPerMinute = 4 })
	ctx := context.Background()
	const (
		pw1      = "first-Secret-Passphrase-1"
		pw2      = "second-Secret-Passphrase-2"
		wrongPW  = "wrong-Secret-Passphrase-3"
		typedPW  = "oops-typed-password-in-username" // typed into the username field
		staticPW = "static-config-Passphrase-4"
	)
	secrets := []string{pw1, pw2, wrongPW, typedPW, staticPW}

	u, err := e.svc.CreateUser(ctx, "admin", NewUser{Username: "alice", Email: "alice@example.com", Password: pw1})
	if err != nil {
		t.Fatal(err)
	}
	const staticSeed = "KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU"
	if _, err := e.svc.CreateUser(ctx, "config", NewUser{Username: "svc", Password: staticPW, TOTPSecret: staticSeed}); err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, staticSeed)
	e.svc.CreateUser(ctx, "admin", NewUser{Username: "weak", Password: "weakpw"}) // policy failure
	e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: pw1, IP: "192.0.2.1", UserAgent: "ua"})
	for range 3 {
		e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: wrongPW, IP: "192.0.2.1"})
	}
	e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: pw1, IP: "192.0.2.2"}) // locked
	e.svc.CheckPassword(ctx, Attempt{Username: typedPW, Password: pw1, IP: "192.0.2.1"})
	e.svc.CheckPassword(ctx, Attempt{Username: typedPW, Password: pw1, IP: "192.0.2.1"}) // throttled
	e.svc.Unlock(ctx, "admin", u.ID)
	e.svc.SetPassword(ctx, "admin", u.ID, pw2)
	e.svc.CheckPassword(ctx, Attempt{Username: "alice", Password: pw2, IP: "192.0.2.3"})

	sec, url, err := e.svc.NewTOTPKey(u, "Ward")
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, sec, url)
	if err := e.svc.EnrollTOTP(ctx, u.ID, u.ID, sec, codeAt(t, sec, e.clock.Now())); err != nil {
		t.Fatal(err)
	}
	u, _ = e.store.GetUser(ctx, u.ID)
	secrets = append(secrets, u.PasswordHash)
	e.clock.Advance(time.Minute)
	e.svc.CheckTOTP(ctx, u, "000000", "192.0.2.4")
	e.svc.CheckTOTP(ctx, u, codeAt(t, sec, e.clock.Now()), "192.0.2.4")
	e.svc.CheckTOTP(ctx, u, codeAt(t, sec, e.clock.Now()), "192.0.2.4") // replay

	// Secret-bearing values logged directly redact themselves.
	e.svc.log.Debug("attempt", "attempt", Attempt{Username: typedPW, Password: pw1, IP: "192.0.2.9"})
	e.svc.log.Debug("new user", "nu", NewUser{Username: "x", Password: pw2, TOTPSecret: staticSeed})

	logs := e.logs.String()
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	if len(lines) < 15 {
		t.Fatalf("only %d log lines; the flow did not log at debug level:\n%s", len(lines), logs)
	}
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Fatalf("not a JSON log line: %s", l)
		}
	}
	for _, want := range []string{`"reason":"locked"`, `"reason":"throttled"`, `"reason":"unknown_user"`, `"msg":"user locked"`, `"msg":"TOTP code replayed"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s", want)
		}
	}
	var events strings.Builder
	for _, ev := range e.rec.Events() {
		b, _ := json.Marshal(ev)
		events.Write(b)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("log output contains secret %.12q...", s)
		}
		if strings.Contains(events.String(), s) {
			t.Errorf("events contain secret %.12q...", s)
		}
	}
}
