package detect

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/activity"
)

// FuzzObserve: hostile activities — any kind, proof, result, reason,
// signal, generation, count, address, place, time (zero, far past and
// future, out of order) — never panic the engine, and every finding it
// reports is one the risk service accepts.
func FuzzObserve(f *testing.F) {
	f.Add("refresh", "wrong_key", "failure", "refresh_reuse", "s", "app", "203.0.113.1", "ua", "K", "K2", 3, 2, int64(0), 52.5, 13.4, uint32(64500), "DE", "")
	f.Add("token_use", "none", "success", "", "", "", "2001:db8::1", "", "", "", 0, 0, int64(-1<<62), 91.0, math.NaN(), uint32(0), "", "")
	f.Add("signal", "", "", "", "s", "", "", "", "", "", 0, 0, int64(1<<62), 0.0, 0.0, uint32(1), "ZZ", "https://x/token-theft")
	f.Add("signin", "", "failure", "unknown_user", "", "c", "not-an-ip", "", "", "", -5, 1<<40, int64(5), -90.0, 180.0, uint32(4294967295), "D", "")
	f.Fuzz(func(t *testing.T, kind, proof, result, reason, session, client, ip, ua, jkt, bound string, presented, issued int, dt int64,
		lat, lon float64, asn uint32, country, signal string) {
		cfg := DefaultConfig()
		cfg.MaxSessions, cfg.MaxUsers, cfg.MaxTokens, cfg.MaxSources, cfg.SeenIDs = 8, 8, 8, 8, 16
		cfg.AnonymousIPs, _ = ParseIPList(strings.NewReader("203.0.113.0/24\n2001:db8::/32\n"))
		e := New(cfg)
		base := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
		for i := 0; i < 12; i++ {
			a := activity.Activity{ID: string(rune('a'+i%5)) + kind, Time: base.Add(time.Duration(dt) * time.Duration(i%3)), Kind: activity.Kind(kind),
				UserID: "u" + session[:min(len(session), 1)], SessionID: session, ClientID: client, TokenID: jkt, DeviceID: bound,
				RefreshGenPresented: presented - i, RefreshGenIssued: issued + i, JKT: jkt, BoundJKT: bound, Proof: activity.Proof(proof),
				Result: result, Reason: reason, Signal: signal, Count: presented, IP: ip, UserAgent: ua, ASN: asn + uint32(i%2),
				Country: country, Lat: lat, Lon: lon + float64(i), HasCoords: i%2 == 0, Resource: reason}
			if i%4 == 3 {
				a.Kind = activity.Kinds[i%len(activity.Kinds)]
			}
			for _, fd := range e.Observe(a) {
				if !typePattern(fd.Type) || (fd.Severity != Low && fd.Severity != Medium && fd.Severity != High) ||
					fd.Confidence < 0 || fd.Confidence > 1 || len(fd.Evidence) == 0 || len(fd.Evidence) > maxEvidence || len(fd.ID) > 128 {
					t.Fatalf("finding the risk service would refuse: %+v", fd)
				}
			}
			_ = JudgeSignIn(cfg, []activity.Activity{a}, a)
		}
		if s := e.Stats(); s.Sessions > 8 || s.Users > 8 || s.Tokens > 8 || s.Sources > 8 {
			t.Fatalf("bounds exceeded: %+v", s)
		}
	})
}

func typePattern(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && strings.IndexByte("_.:-", c) >= 0) {
			return false
		}
	}
	return true
}
