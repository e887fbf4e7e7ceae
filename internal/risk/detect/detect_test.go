package detect

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/activity"
)

var t0 = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// where: a network context.
type where struct {
	ip       string
	asn      uint32
	country  string
	lat, lon float64
	ua       string
}

var (
	home   = where{"203.0.113.10", 64500, "DE", 52.52, 13.40, "Mozilla/5.0 (X11) Firefox/133.0"}
	home6  = where{"2001:db8:10::5", 64500, "DE", 52.52, 13.40, "Mozilla/5.0 (X11) Firefox/133.0"}
	office = where{"198.51.100.20", 64501, "DE", 52.50, 13.38, "Mozilla/5.0 (X11) Firefox/133.0"}
	vpn    = where{"192.0.2.50", 64502, "US", 40.71, -74.00, "Mozilla/5.0 (X11) Firefox/133.0"}
	thief  = where{"100.20.30.40", 64666, "SG", 1.35, 103.82, "python-requests/2.32.3"}
)

type gen struct {
	n int
	t time.Time
}

func (g *gen) at(d time.Duration) time.Time { return t0.Add(d) }

func (g *gen) act(kind activity.Kind, t time.Time, w where) activity.Activity {
	g.n++
	return activity.Activity{ID: fmt.Sprintf("ev-%d", g.n), Time: t, Kind: kind, UserID: "u-1", SessionID: "s-1", ClientID: "app",
		IP: w.ip, ASN: w.asn, Country: w.country, Lat: w.lat, Lon: w.lon, HasCoords: true, UserAgent: w.ua, Result: activity.ResultSuccess}
}

func types(fs []Finding) []string {
	var s []string
	for _, f := range fs {
		s = append(s, f.Type)
	}
	return s
}

func only(t *testing.T, fs []Finding, want string) Finding {
	t.Helper()
	if len(fs) != 1 || fs[0].Type != want {
		t.Fatalf("findings %v, want exactly %s", types(fs), want)
	}
	f := fs[0]
	if f.ID == "" || f.Severity == "" || f.Technique == "" || len(f.Evidence) == 0 || f.Time.IsZero() {
		t.Fatalf("incomplete finding %+v", f)
	}
	return f
}

func none(t *testing.T, fs []Finding, what string) {
	t.Helper()
	if len(fs) != 0 {
		t.Fatalf("%s: unexpected findings %v (%s)", what, types(fs), fs[0].Detail)
	}
}

// A bound refresh or access token with another key's proof, or none.
func TestBoundTokenReplay(t *testing.T) {
	e := New(DefaultConfig())
	g := &gen{}
	a := g.act(activity.KindRefresh, g.at(0), thief)
	a.BoundJKT, a.JKT, a.Proof, a.Result, a.Reason, a.RefreshGenPresented = "K1", "K2", activity.ProofWrongKey, activity.ResultFailure, "refresh_key_mismatch", 3
	f := only(t, e.Observe(a), TypeTokenReplayWrongKey)
	if f.Severity != High || f.Confidence < 0.9 || f.Technique != "T1550.001" || f.Evidence[0] != a.ID || f.IP != thief.ip || f.SessionID != "s-1" {
		t.Errorf("wrong-key finding %+v", f)
	}
	u := g.act(activity.KindTokenUse, g.at(time.Hour), thief)
	u.SessionID = "s-2"
	u.BoundJKT, u.Proof, u.Result, u.TokenID = "K1", activity.ProofMissing, activity.ResultFailure, "at-1"
	only(t, e.Observe(u), TypeTokenReplayNoProof)
	// A refused proof (a clock off, a bug) or a good one is not theft.
	for _, p := range []activity.Proof{activity.ProofInvalid, activity.ProofOK, activity.ProofNone} {
		v := g.act(activity.KindTokenUse, g.at(2*time.Hour), home)
		v.SessionID, v.BoundJKT, v.Proof, v.TokenID = "s-"+string(p), "K1", p, ""
		none(t, e.Observe(v), string(p))
	}
	// A DBSC session's cookie with another browser key.
	s := g.act(activity.KindSSOSignIn, g.at(3*time.Hour), thief)
	s.SessionID, s.BoundJKT, s.JKT, s.Proof, s.Result = "s-3", "B1", "B2", activity.ProofWrongKey, activity.ResultFailure
	if fs := e.Observe(s); !slices.Contains(types(fs), TypeCookieReplayBound) {
		t.Errorf("DBSC cookie replay: %v", types(fs))
	}
}

// Refresh-token reuse: Ward's verdict, and generations beyond the grace.
func TestRefreshReuse(t *testing.T) {
	e := New(DefaultConfig())
	g := &gen{}
	grant := g.act(activity.KindToken, g.at(0), home)
	grant.Grant, grant.RefreshGenIssued, grant.TokenID = "authorization_code", 1, "at-0"
	none(t, e.Observe(grant), "grant")
	for i := 1; i <= 3; i++ {
		r := g.act(activity.KindRefresh, g.at(time.Duration(i)*20*time.Minute), home)
		r.RefreshGenPresented, r.RefreshGenIssued, r.TokenID = i, i+1, fmt.Sprintf("at-%d", i)
		none(t, e.Observe(r), "rotation")
	}
	// A second chain of the same client (another grant) is no reuse.
	g2 := g.act(activity.KindToken, g.at(61*time.Minute), home)
	g2.Grant, g2.RefreshGenIssued, g2.TokenID = "authorization_code", 1, "at-b1"
	none(t, e.Observe(g2), "second grant")
	r2 := g.act(activity.KindRefresh, g.at(62*time.Minute), home)
	r2.RefreshGenPresented, r2.RefreshGenIssued, r2.TokenID = 1, 2, "at-b2"
	none(t, e.Observe(r2), "second chain's rotation")
	// Generation 2 of the first chain (rotated at 40 min) again, an hour later, elsewhere.
	old := g.act(activity.KindRefresh, g.at(2*time.Hour), thief)
	old.RefreshGenPresented, old.Result, old.Reason = 3, activity.ResultFailure, "invalid_grant"
	f := only(t, e.Observe(old), TypeRefreshReuse)
	if f.Technique != "T1528" || len(f.Evidence) != 2 {
		t.Errorf("reuse finding %+v", f)
	}
	// Ward's own verdict, with the rotation that made it a reuse as evidence.
	e2 := New(DefaultConfig())
	rot := g.act(activity.KindRefresh, g.at(20*time.Minute), home)
	rot.RefreshGenPresented, rot.RefreshGenIssued = 1, 2
	for _, a := range []activity.Activity{grant, rot} {
		e2.Observe(a)
	}
	w := g.act(activity.KindRefresh, g.at(3*time.Hour), thief)
	w.RefreshGenPresented, w.Result, w.Reason = 1, activity.ResultFailure, "refresh_reuse"
	f = only(t, e2.Observe(w), TypeRefreshReuse)
	if !slices.Equal(f.Evidence, []string{rot.ID, w.ID}) {
		t.Errorf("evidence %v", f.Evidence)
	}
	// A retry within the grace from the same network and program is not.
	e3 := New(DefaultConfig())
	e3.Observe(grant)
	r := g.act(activity.KindRefresh, g.at(20*time.Minute), home)
	r.RefreshGenPresented, r.RefreshGenIssued = 1, 2
	e3.Observe(r)
	retry := g.act(activity.KindRefresh, g.at(20*time.Minute+5*time.Second), home)
	retry.RefreshGenPresented, retry.Result = 1, activity.ResultFailure
	none(t, e3.Observe(retry), "retry within the grace")
	code := g.act(activity.KindToken, g.at(4*time.Hour), thief)
	code.Grant, code.Result, code.Reason = "authorization_code", activity.ResultFailure, "code_reuse"
	only(t, New(DefaultConfig()).Observe(code), TypeCodeReuse)
}

// Concurrent use of an unbound token: another program elsewhere is
// theft; the same program switching networks (a VPN) is not; the same
// program alternating between two places too far apart is.
func TestConcurrentUse(t *testing.T) {
	g := &gen{}
	use := func(e *Engine, d time.Duration, w where) []Finding {
		a := g.act(activity.KindTokenUse, g.at(d), w)
		a.TokenID, a.Proof, a.Resource = "", activity.ProofNone, "https://api.example"
		return e.Observe(a)
	}
	e := New(DefaultConfig())
	none(t, use(e, 0, home), "first use")
	none(t, use(e, time.Minute, home6), "IPv6 of the same provider")
	none(t, use(e, 2*time.Minute, office), "the same program at the office")
	f := only(t, use(e, 3*time.Minute, thief), TypeTokenConcurrentUse)
	if f.Severity != High {
		t.Errorf("another program elsewhere: %+v", f)
	}

	// The same program through a VPN in another country, then back: one
	// switch is tolerated; alternating within the window is not.
	e = New(DefaultConfig())
	none(t, use(e, 0, home), "home")
	none(t, use(e, time.Minute, vpn), "VPN switched on")
	none(t, use(e, 30*time.Minute, vpn), "VPN")
	none(t, use(e, 50*time.Minute, home), "VPN switched off after 20 minutes")
	none(t, use(e, 52*time.Minute, vpn), "VPN on again (first return: X Y X needs Y since X's last use)")
	f = only(t, use(e, 54*time.Minute, home), TypeTokenConcurrentUse)
	if f.Severity != Medium || !strings.Contains(f.Detail, "alternately") {
		t.Errorf("alternation: %+v", f)
	}

	// A bound token with its own key's proof is its client wherever it is.
	e = New(DefaultConfig())
	for i, w := range []where{home, thief, home, thief} {
		a := g.act(activity.KindTokenUse, g.at(time.Duration(i)*time.Minute), w)
		a.JKT, a.BoundJKT, a.Proof = "K1", "K1", activity.ProofOK
		none(t, e.Observe(a), "proven key")
	}
}

// The SSO cookie from another browser on another network.
func TestSSOCookie(t *testing.T) {
	g := &gen{}
	e := New(DefaultConfig())
	s := g.act(activity.KindSignIn, g.at(0), home)
	s.JKT = "K1"
	none(t, e.Observe(s), "sign-in")
	gr := g.act(activity.KindToken, g.at(time.Second), home)
	gr.JKT, gr.Proof, gr.Grant, gr.RefreshGenIssued, gr.TokenID = "K1", activity.ProofOK, "authorization_code", 1, "at-1"
	none(t, e.Observe(gr), "grant")
	// The same browser at the office the next day: roaming.
	o := g.act(activity.KindSSOSignIn, g.at(24*time.Hour), office)
	o.JKT, o.Proof = "K1", activity.ProofNone
	none(t, e.Observe(o), "same browser at the office")
	// Another browser elsewhere.
	x := g.act(activity.KindSSOSignIn, g.at(25*time.Hour), where{thief.ip, thief.asn, thief.country, thief.lat, thief.lon, "Mozilla/5.0 (Windows NT 10.0) Chrome/131.0"})
	x.JKT, x.Proof = "KX", activity.ProofNone
	fs := e.Observe(x)
	if !slices.Contains(types(fs), TypeSSOCookieAnomaly) {
		t.Fatalf("cookie from another browser elsewhere: %v", types(fs))
	}
	// The browser's user agent copied: a new key for the client, from a network new to the user.
	e2 := New(DefaultConfig())
	for _, a := range []activity.Activity{s, gr} {
		e2.Observe(a)
	}
	y := g.act(activity.KindSSOSignIn, g.at(26*time.Hour), where{thief.ip, thief.asn, thief.country, thief.lat, thief.lon, home.ua})
	y.JKT, y.Proof = "KX", activity.ProofNone
	fs = e2.Observe(y)
	if !slices.Contains(types(fs), TypeSSOCookieAnomaly) {
		t.Fatalf("cookie with the user agent copied and a new key: %v", types(fs))
	}
}

// Tokens not as Ward issued them.
func TestAnomalousToken(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxTokenLifetime = time.Hour
	e := New(cfg)
	g := &gen{}
	gr := g.act(activity.KindToken, g.at(0), home)
	gr.TokenID, gr.Grant, gr.Resource, gr.JKT, gr.Proof = "at-1", "authorization_code", "https://api.example", "K1", activity.ProofOK
	e.Observe(gr)
	use := func(d time.Duration, jti, res string) []Finding {
		a := g.act(activity.KindTokenUse, g.at(d), home)
		a.TokenID, a.Resource, a.JKT, a.BoundJKT, a.Proof = jti, res, "K1", "K1", activity.ProofOK
		return e.Observe(a)
	}
	none(t, use(time.Minute, "at-1", "https://api.example"), "as issued")
	none(t, use(2*time.Minute, "at-never", "https://api.example"), "unknown id while the engine may have missed its grant")
	only(t, use(90*time.Minute, "at-never-2", "https://api.example"), TypeAnomalousToken)
	gr2 := g.act(activity.KindToken, g.at(91*time.Minute), home)
	gr2.SessionID, gr2.TokenID, gr2.Grant, gr2.Resource = "s-2", "at-2", "authorization_code", "https://api.example"
	e.Observe(gr2)
	a := g.act(activity.KindTokenUse, g.at(92*time.Minute), home)
	a.SessionID, a.TokenID, a.Resource, a.Proof = "s-2", "at-2", "https://payroll.example", activity.ProofNone
	if f := only(t, e.Observe(a), TypeAnomalousToken); !strings.Contains(f.Detail, "never requested") {
		t.Errorf("audience: %s", f.Detail)
	}
	b := g.act(activity.KindTokenUse, g.at(93*time.Minute), home)
	b.SessionID, b.UserID, b.TokenID, b.Resource, b.Proof = "s-3", "u-9", "at-2", "https://api.example", activity.ProofNone
	if f := only(t, e.Observe(b), TypeAnomalousToken); !strings.Contains(f.Detail, "subject") {
		t.Errorf("claims: %s", f.Detail)
	}
	c := g.act(activity.KindTokenUse, g.at(91*time.Minute+2*time.Hour), home)
	c.SessionID, c.TokenID, c.Resource, c.Proof = "s-2", "at-2", "https://api.example", activity.ProofNone
	if f := only(t, e.Observe(c), TypeAnomalousToken); !strings.Contains(f.Detail, "lifetime") {
		t.Errorf("lifetime: %s", f.Detail)
	}
}

// The sign-in family, in the engine and as the pure JudgeSignIn, alike.
func TestSignInFamily(t *testing.T) {
	cfg := DefaultConfig()
	g := &gen{}
	var history []activity.Activity
	for d := 0; d < 4; d++ {
		s := g.act(activity.KindSignIn, g.at(time.Duration(d)*24*time.Hour), home)
		s.SessionID = fmt.Sprintf("s-h%d", d)
		history = append(history, s)
	}
	e := New(cfg)
	for _, h := range history {
		none(t, e.Observe(h), "history")
	}
	// Travel with the user's own browser: not flagged.
	trip := g.act(activity.KindSignIn, g.at(4*24*time.Hour), vpn)
	trip.SessionID = "s-trip"
	if got := JudgeSignIn(cfg, history, trip); len(got) != 0 {
		t.Errorf("own browser through a VPN abroad: %v", got)
	}
	// A thief's browser from far away 20 minutes after the user's last sign-in.
	x := g.act(activity.KindSignIn, g.at(3*24*time.Hour+20*time.Minute), where{thief.ip, thief.asn, thief.country, thief.lat, thief.lon, "Mozilla/5.0 (Windows NT 10.0) Chrome/131.0"})
	x.SessionID = "s-x"
	pure := JudgeSignIn(cfg, history, x)
	fs := e.Observe(x)
	if len(pure) == 0 || len(pure) != len(fs) {
		t.Fatalf("JudgeSignIn %v, engine %v", pure, types(fs))
	}
	for i := range pure {
		if pure[i].Type != fs[i].Type || pure[i].ID != fs[i].ID || pure[i].Severity != fs[i].Severity {
			t.Errorf("judged differently: %+v vs %+v", pure[i], fs[i].Detection)
		}
	}
	if pure[0].Type != TypeImpossibleTravel {
		t.Errorf("want impossible travel first, got %v", pure[0].Type)
	}
	// ObserveJudged learns without judging the sign-in again.
	y := x
	y.ID, y.Time = "ev-y", x.Time.Add(time.Hour)
	none(t, e.ObserveJudged(y), "already judged")
	// The same thief a week later, close enough to travel: unfamiliar properties.
	z := x
	z.ID, z.Time = "ev-z", x.Time.Add(7*24*time.Hour)
	if got := JudgeSignIn(cfg, history, z); len(got) != 1 || got[0].Type != TypeUnfamiliarSignIn {
		t.Errorf("unfamiliar sign-in: %v", got)
	}
	// Lists.
	cfg.AnonymousIPs, _ = ParseIPList(strings.NewReader("100.20.30.0/24\n"))
	cfg.MaliciousIPs, _ = ParseIPList(strings.NewReader("100.20.30.40\n"))
	got := JudgeSignIn(cfg, nil, x)
	if len(got) != 2 || got[0].Type != TypeMaliciousIP || got[1].Type != TypeAnonymousIP || got[1].Technique != "T1090.003" {
		t.Errorf("lists: %v", got)
	}
}

// Password spray, brute force and second-factor failures, at their thresholds.
func TestFailures(t *testing.T) {
	e := New(DefaultConfig())
	g := &gen{}
	fail := func(d time.Duration, user, reason string, w where) []Finding {
		a := g.act(activity.KindSignIn, g.at(d), w)
		a.UserID, a.SessionID, a.Result, a.Reason = user, "", activity.ResultFailure, reason
		return e.Observe(a)
	}
	for i := 0; i < 9; i++ {
		reason, user := "invalid_credentials", fmt.Sprintf("u-%d", i)
		if i%3 == 2 {
			reason, user = "unknown_user", ""
		}
		none(t, fail(time.Duration(i)*time.Minute, user, reason, thief), "below the spray threshold")
	}
	f := only(t, fail(10*time.Minute, "u-10", "invalid_credentials", thief), TypePasswordSpray)
	if f.Technique != "T1110.003" || len(f.Evidence) != 10 {
		t.Errorf("spray %+v", f)
	}
	none(t, fail(11*time.Minute, "u-11", "invalid_credentials", thief), "spray reported once per window")
	// The spraying source then signs in: a sprayed account taken over.
	s := g.act(activity.KindSignIn, g.at(12*time.Minute), thief)
	s.UserID, s.SessionID = "u-3", "s-sprayed"
	if fs := e.Observe(s); !slices.Contains(types(fs), TypePasswordSpray) {
		t.Errorf("success from the spraying source: %v", types(fs))
	}

	e = New(DefaultConfig())
	for i := 0; i < 9; i++ {
		none(t, fail(time.Duration(i)*30*time.Second, "u-1", "invalid_credentials", where{ip: fmt.Sprintf("198.51.100.%d", i)}), "below brute force")
	}
	only(t, fail(5*time.Minute, "u-1", "invalid_credentials", home), TypeBruteForce)
	for i := 0; i < 4; i++ {
		none(t, fail(6*time.Minute+time.Duration(i)*time.Second, "u-2", "invalid_totp", home), "a few second-factor typos")
	}
	only(t, fail(7*time.Minute, "u-2", "invalid_totp", home), TypeMFAFatigue)
}

func TestSignals(t *testing.T) {
	e := New(DefaultConfig())
	g := &gen{}
	for sig, want := range map[string]string{
		"https://schemas.openid.net/secevent/risc/event-type/credential-compromise": "external_credential_compromise",
		"https://schemas.openid.net/secevent/caep/event-type/session-revoked":       "external_session_revoked",
		"https://edr.example/secevent/token-theft":                                  "external_token_theft",
	} {
		a := g.act(activity.KindSignal, g.at(0), where{})
		a.Signal = sig
		only(t, e.Observe(a), want)
	}
	a := g.act(activity.KindSignal, g.at(0), where{})
	a.Signal = "https://schemas.openid.net/secevent/caep/event-type/credential-change"
	none(t, e.Observe(a), "a password change elsewhere is a fact, not a detection")
}

// Redelivery yields nothing; a fresh engine over the same activity finds
// the same ids.
func TestIdempotentAndStable(t *testing.T) {
	g := &gen{}
	a := g.act(activity.KindRefresh, g.at(0), thief)
	a.BoundJKT, a.JKT, a.Proof, a.Result = "K1", "K2", activity.ProofWrongKey, activity.ResultFailure
	e := New(DefaultConfig())
	first := e.Observe(a)
	none(t, e.Observe(a), "redelivery")
	if s := e.Stats(); s.Duplicates != 1 || s.Observed != 1 || s.Findings[TypeTokenReplayWrongKey] != 1 {
		t.Errorf("stats %+v", s)
	}
	again := New(DefaultConfig()).Observe(a)
	if len(first) != 1 || len(again) != 1 || first[0].ID != again[0].ID || !strings.HasPrefix(first[0].ID, "det:") {
		t.Errorf("ids %v %v", first, again)
	}
}

// Memory is bounded by the configuration, not by traffic; a token
// dropped to make room never makes its later use look forged.
func TestBounded(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxSessions, cfg.MaxUsers, cfg.MaxTokens, cfg.SeenIDs = 100, 100, 100, 1000
	cfg.MaxTokenLifetime = time.Hour
	e := New(cfg)
	g := &gen{}
	for i := 0; i < 5000; i++ {
		a := g.act(activity.KindToken, g.at(time.Duration(i)*time.Second), home)
		a.UserID, a.SessionID, a.TokenID, a.Grant = fmt.Sprintf("u-%d", i), fmt.Sprintf("s-%d", i), fmt.Sprintf("at-%d", i), "authorization_code"
		e.Observe(a)
	}
	s := e.Stats()
	if s.Sessions > 100 || s.Users > 100 || s.Tokens > 100 || s.Evicted == 0 {
		t.Errorf("stats %+v", s)
	}
	u := g.act(activity.KindTokenUse, g.at(5000*time.Second+time.Minute), home)
	u.UserID, u.SessionID, u.TokenID = "u-10", "s-10", "at-10"
	none(t, e.Observe(u), "use of a token dropped to make room")
}

// The engine is safe for concurrent use.
func TestConcurrentObserve(t *testing.T) {
	e := New(DefaultConfig())
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := &gen{n: w * 100000}
			for i := 0; i < 500; i++ {
				a := g.act(activity.KindTokenUse, g.at(time.Duration(i)*time.Second), home)
				a.SessionID = fmt.Sprintf("s-%d", i%7)
				e.Observe(a)
				e.Stats()
			}
		}()
	}
	wg.Wait()
	if e.Stats().Observed != 2000 {
		t.Errorf("observed %d", e.Stats().Observed)
	}
}
