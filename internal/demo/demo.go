// Package demo is `ward demo`: the token-theft attack chain of
// Microsoft's "How to break the token theft cyber-attack chain" played
// against a live Ward, first with its defences off, then on.
//
// It starts an embedded Ward (SQLite and the embedded NATS bus in a
// temporary directory), ward gateway and a small document application on
// loopback ports the OS picks, and drives them only through their public
// interfaces: Ward's sign-in pages with a cookie-keeping browser, the
// token endpoint with DPoP proofs (package dpop), the admin API with an
// administrator's DPoP-bound token, the gateway over HTTP and the device
// agent (package agent) for the laptop's key. The victim connects from
// 127.0.0.1, the attacker from 127.0.0.66: two client networks on one
// machine. Everything it starts is stopped and its directories removed
// when Run returns, also when ctx is cancelled (Ctrl-C).
//
// Each step is printed as it happens and recorded in a Report (steps,
// detections, user risk, the measured CAE revocation time), which the
// command writes as JSON with --json.
package demo

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ward-idp/ward/rs"
)

// Options configure Run.
type Options struct {
	// Printer receives the timeline (required).
	Printer *Printer
	// Target, when set, plays against a running Ward (--server) instead
	// of the embedded one: run 2 only, see docs/demo.md.
	Target *Target
	// Console asks for the console URLs of what the demo shows.
	Console bool
	// Hold, if set with Console, is called with a message before the
	// embedded deployment stops, and should return when the user is
	// done with the console (or ctx ends).
	Hold func(ctx context.Context, msg string)
	// TempDir is where the embedded deployment's directories go ("" for
	// os.TempDir()).
	TempDir string
}

// ErrNoAttackerNetwork: the machine cannot send from a second loopback
// address, so the attacker would share the victim's network.
var ErrNoAttackerNetwork = errors.New("demo: cannot send from " + attackerIP + " (the attacker's network); on macOS run `sudo ifconfig lo0 alias " + attackerIP + "` first")

// Run plays the demo and returns its report. An error means the demo
// could not be played (a server did not start, a request failed); steps
// that did not go as the story expects are in the report as failed.
func Run(ctx context.Context, o Options) (*Report, error) {
	rec := &recorder{p: o.Printer, rep: &Report{Mode: "embedded", StartedAt: time.Now().UTC()}, start: time.Now()}
	err := rec.play(ctx, o)
	rec.rep.DurationMS = ms(time.Since(rec.start))
	switch {
	case err != nil && ctx.Err() != nil:
		rec.rep.Incomplete = "interrupted"
	case err != nil:
		rec.rep.Incomplete = err.Error()
	}
	return rec.rep, err
}

func (r *recorder) play(ctx context.Context, o Options) error {
	if o.Target != nil {
		r.rep.Mode, r.rep.Issuer = "server", o.Target.Issuer
		t := *o.Target
		t.remote = true
		return r.run2(ctx, &t, o)
	}
	if !canBind(attackerIP) {
		return ErrNoAttackerNetwork
	}
	r.p.Section("The story",
		"Contoso keeps its documents in an app behind MFA. Alice (finance) works on her laptop on Contoso's network, "+victimIP+". "+
			"Malware on the laptop copies her tokens and her browser's SSO cookie and sends them to an attacker on another network, "+attackerIP+". "+
			"Everything runs on this machine: Ward, ward gateway, the document app, alice, the attacker; the two addresses are two loopback addresses. "+
			"The demo plays it twice: with Ward's defences off, then on.")
	if err := r.run1(ctx, o); err != nil {
		return err
	}
	return r.run2(ctx, nil, o)
}

// recorder prints steps and keeps them in the report.
type recorder struct {
	p     *Printer
	rep   *Report
	start time.Time
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (r *recorder) step(s Step) Step {
	s.AtMS = ms(time.Since(r.start))
	r.rep.Steps = append(r.rep.Steps, s)
	r.p.Step(s)
	return s
}

// expect records s with outcome want when ok, else as failed with why.
func (r *recorder) expect(ok bool, s Step, want, why string) {
	s.Outcome = want
	if !ok {
		s.Outcome = OutcomeFailed
		s.Detail = strings.TrimSpace(s.Detail + " — expected: " + why)
	}
	r.step(s)
}

// tempDir makes a directory for one run's deployment.
func tempDir(o Options, run int) (string, error) {
	return os.MkdirTemp(o.TempDir, fmt.Sprintf("ward-demo-run%d-", run))
}

// claimsOf returns the payload of a JWT (unverified: only to show what
// the token says; the servers verify it).
func claimsOf(jwt string) map[string]any {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return nil
	}
	return m
}

// cnfJKT is the key thumbprint a token is bound to ("" if unbound).
func cnfJKT(jwt string) string {
	if c, ok := claimsOf(jwt)["cnf"].(map[string]any); ok {
		s, _ := c["jkt"].(string)
		return s
	}
	return ""
}

// challengeError returns the error code and description of a
// resource's refusal (its WWW-Authenticate challenges, read by package
// rs).
func challengeError(r *result) string {
	code, _ := challengeErrorDesc(r)
	return code
}

func challengeErrorDesc(r *result) (code, desc string) {
	cs, _ := rs.ParseChallenges(r.Header)
	for _, c := range cs {
		if c.Error != "" {
			return c.Error, c.ErrorDescription
		}
	}
	return "", ""
}

// refusal describes a resource's 401 from its challenge.
func refusal(r *result) string {
	code, desc := challengeErrorDesc(r)
	switch {
	case code == "" && desc == "":
		return fmt.Sprintf("HTTP %d", r.Status)
	case desc == "":
		return fmt.Sprintf("HTTP %d %s", r.Status, code)
	}
	return fmt.Sprintf("HTTP %d %s: %s", r.Status, code, desc)
}

func tokenRefusal(t *tokens) string {
	if t.ErrorDescription == "" {
		return fmt.Sprintf("HTTP %d %s", t.Status, t.Error)
	}
	return fmt.Sprintf("HTTP %d %s: %s", t.Status, t.Error, t.ErrorDescription)
}

func pageRefusal(p *page) string {
	if p.Error != "" {
		return strings.TrimSpace("redirected to the app with error=" + p.Error + " " + p.ErrorDescription)
	}
	s := p.Title
	if p.Text != "" {
		s += ": " + p.Text
	}
	if p.Status != 0 && p.Status != 200 {
		s = fmt.Sprintf("HTTP %d %s", p.Status, s)
	}
	return s
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// nextSecond waits for the next whole second: resources compare a
// token's iat with a revocation in whole seconds, so a token issued in
// the second of a revocation counts as issued before it.
func nextSecond(ctx context.Context) error {
	return sleepCtx(ctx, time.Until(time.Now().Truncate(time.Second).Add(time.Second+10*time.Millisecond)))
}
