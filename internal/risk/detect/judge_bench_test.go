package detect

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/activity"
)

// judgeBench is a user with 50 sign-ins of history and a sign-in from far
// away, with both IP lists and corporate and exempt ASNs configured.
func judgeBench() (Config, []activity.Activity, activity.Activity) {
	cfg := DefaultConfig()
	cfg.AnonymousIPs, _ = ParseIPList(strings.NewReader("100.20.30.0/24\n192.0.2.0/24\n"))
	cfg.MaliciousIPs, _ = ParseIPList(strings.NewReader("100.20.30.40\n198.51.100.0/24\n"))
	for a := uint32(64000); a < 64100; a++ {
		cfg.CorporateASNs = append(cfg.CorporateASNs, a)
		cfg.ExemptASNs = append(cfg.ExemptASNs, a+1000)
	}
	g := &gen{}
	var history []activity.Activity
	for d := 0; d < 50; d++ {
		s := g.act(activity.KindSignIn, g.at(time.Duration(d)*6*time.Hour), home)
		s.SessionID = fmt.Sprintf("s-h%d", d)
		history = append(history, s)
	}
	x := g.act(activity.KindSignIn, g.at(50*6*time.Hour+20*time.Minute), where{thief.ip, thief.asn, thief.country, thief.lat, thief.lon, "Mozilla/5.0 (Windows NT 10.0) Chrome/131.0"})
	x.SessionID = "s-x"
	return cfg, history, x
}

// BenchmarkJudgeSignIn is the sign-in judge's CPU per sign-in (the
// history already loaded).
func BenchmarkJudgeSignIn(b *testing.B) {
	cfg, history, x := judgeBench()
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		if len(JudgeSignIn(cfg, history, x)) == 0 {
			b.Fatal("nothing found")
		}
	}
}

// cpuPerOp reports the process's CPU time (user and system) per
// operation, a steadier figure than wall time on a loaded machine.
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

// BenchmarkJudgeSignInCompiled is BenchmarkJudgeSignIn with the
// configuration compiled once (NewJudge), as online.SignInJudge does.
func BenchmarkJudgeSignInCompiled(b *testing.B) {
	cfg, history, x := judgeBench()
	j := NewJudge(cfg)
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		if len(j.JudgeSignIn(history, x)) == 0 {
			b.Fatal("nothing found")
		}
	}
}

// TestJudgeAlike: the compiled judge finds what the per-call one does,
// and its configuration has the defaults filled in.
func TestJudgeAlike(t *testing.T) {
	cfg, history, x := judgeBench()
	j := NewJudge(cfg)
	a, b := JudgeSignIn(cfg, history, x), j.JudgeSignIn(history, x)
	if len(a) == 0 || fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("per call %v, compiled %v", a, b)
	}
	if j.Config().SessionIdle <= 0 || j.Config().AnonymousIPs != cfg.AnonymousIPs {
		t.Errorf("compiled config %+v", j.Config())
	}
}
