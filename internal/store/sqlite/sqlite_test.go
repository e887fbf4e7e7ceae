package sqlite_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/sqlite"
	"github.com/ward-idp/ward/internal/store/storetest"
)

func open(tb testing.TB, opts ...sqlite.Option) *sqlite.Store {
	tb.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(tb.TempDir(), "ward.db"), opts...)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store { return open(t, sqlite.WithClock(now)) })
}

func TestConformanceMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
		s, err := sqlite.Open(context.Background(), ":memory:", sqlite.WithClock(now))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestReopen checks that migrations are idempotent and data persists.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "ward.db")
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.CreateUser(ctx, &model.User{ID: "u1", Username: "alice"}); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s, err = sqlite.Open(ctx, path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	u, err := s.GetUser(ctx, "u1")
	if err != nil || u.Username != "alice" {
		t.Errorf("after reopen: got %+v, %v; want alice", u, err)
	}
}

// TestClock checks that RecordJTI decides expiry with the injected clock.
func TestClock(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "ward.db"), sqlite.WithClock(clk.Now))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	exp := clk.Now().Add(time.Minute)
	steps := []struct {
		advance time.Duration
		want    error
	}{
		{0, nil},
		{59 * time.Second, store.ErrReplay},
		{time.Second, nil}, // now == exp: expired
	}
	for i, st := range steps {
		clk.Advance(st.advance)
		if err := s.RecordJTI(ctx, "k", exp); err != st.want {
			t.Errorf("step %d: got %v, want %v", i, err, st.want)
		}
	}
}

// TestRecordJTIDeferred: a deferred key is written without a write on the
// caller's path, within a few milliseconds, and before Close returns; a
// key committed before (by an earlier run) is refused with a read; an
// expired one is taken over; RecordJTI and RecordJTIDeferred see each
// other's keys.
func TestRecordJTIDeferred(t *testing.T) {
	ctx := context.Background()
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	path := filepath.Join(t.TempDir(), "ward.db")
	s, err := sqlite.Open(ctx, path, sqlite.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	exp := clk.Now().Add(time.Minute)
	if err := s.RecordJTIDeferred(ctx, "soon", exp); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for { // written by the writer, without any other write
		if seen, err := s.HasJTI(ctx, "soon"); err != nil {
			t.Fatal(err)
		} else if seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a deferred key was not written within 5s")
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.RecordJTIDeferred(ctx, "at-close", exp); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordJTIDeferred(ctx, "short", clk.Now().Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordJTI(ctx, "sync", exp); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	clk.Advance(30 * time.Second) // "short" has expired
	s, err = sqlite.Open(ctx, path, sqlite.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, k := range []string{"soon", "at-close", "sync"} {
		if err := s.RecordJTIDeferred(ctx, k, exp); err != store.ErrReplay {
			t.Errorf("%s after a restart: RecordJTIDeferred = %v, want ErrReplay", k, err)
		}
	}
	if err := s.RecordJTI(ctx, "at-close", exp); err != store.ErrReplay {
		t.Errorf("at-close after a restart: RecordJTI = %v, want ErrReplay", err)
	}
	if err := s.RecordJTIDeferred(ctx, "short", exp); err != nil {
		t.Errorf("an expired key: %v, want it taken over", err)
	}
	clk.Advance(time.Minute) // every key recorded before the restart has expired
	if err := s.RecordJTIDeferred(ctx, "soon", clk.Now().Add(time.Minute)); err != nil {
		t.Errorf("a key expired since: %v, want it taken over", err)
	}
}

// ---- benchmarks ----
//
// Run on one core, as the token endpoint's budget is stated per core:
//
//	go test -run '^$' -bench SQLite -cpu 1 ./internal/store/sqlite/

func benchHash() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

func BenchmarkSQLiteRotateRefreshToken(b *testing.B) {
	s, ctx := open(b), context.Background()
	now := time.Now()
	if err := s.CreateSession(ctx, &model.Session{ID: "s1", UserID: "u1", ExpiresAt: now.Add(time.Hour)}); err != nil {
		b.Fatal(err)
	}
	mk := func() *model.RefreshToken {
		return &model.RefreshToken{Hash: benchHash(), SessionID: "s1", ClientID: "c1", UserID: "u1",
			Scope: "openid offline_access", JKT: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
			AuthTime: now, AMR: []string{"pwd"}, CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)}
	}
	cur := mk()
	if err := s.CreateRefreshToken(ctx, cur); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		next := mk()
		if _, err := s.RotateRefreshToken(ctx, cur.Hash, now, next); err != nil {
			b.Fatal(err)
		}
		cur = next
	}
}

func BenchmarkSQLiteGetRefreshToken(b *testing.B) {
	s, ctx := open(b), context.Background()
	t := &model.RefreshToken{Hash: benchHash(), SessionID: "s1", AMR: []string{"pwd"}, ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.CreateRefreshToken(ctx, t); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.GetRefreshToken(ctx, t.Hash); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSQLiteRecordJTI(b *testing.B) {
	s, ctx := open(b), context.Background()
	exp := time.Now().Add(time.Minute)
	i := 0
	for b.Loop() {
		i++
		if err := s.RecordJTI(ctx, fmt.Sprintf("client-1:%016x", i), exp); err != nil {
			b.Fatal(err)
		}
	}
}

func benchEvent() *model.Event {
	return &model.Event{
		ID: "01JD8X3V4Q", Type: model.EventTokenIssued, Time: time.Now(), Actor: "client-1",
		ClientID: "client-1", TokenID: "jti-0123456789", IP: "203.0.113.7", UserAgent: "Go-http-client/1.1",
		Outcome: model.OutcomeSuccess, Binding: model.BindingDPoP, CorrelationID: "corr-0123456789",
		Data: map[string]string{"grant_type": model.GrantClientCredentials, "scope": "api.read"},
	}
}

func BenchmarkSQLiteAppendEvent(b *testing.B) {
	s, ctx := open(b), context.Background()
	e := benchEvent()
	for b.Loop() {
		if _, err := s.AppendEvent(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSQLiteClientCredentialsGrant is the store work of one
// client_credentials grant: RecordJTI (client assertion) + AppendEvent.
func BenchmarkSQLiteClientCredentialsGrant(b *testing.B) {
	s, ctx := open(b), context.Background()
	exp := time.Now().Add(time.Minute)
	e := benchEvent()
	i := 0
	for b.Loop() {
		i++
		if err := s.RecordJTI(ctx, fmt.Sprintf("client-1:%016x", i), exp); err != nil {
			b.Fatal(err)
		}
		if _, err := s.AppendEvent(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSQLiteRefreshGrant is the store work of one refresh grant:
// GetRefreshToken + RotateRefreshToken + AppendEvent.
func BenchmarkSQLiteRefreshGrant(b *testing.B) {
	s, ctx := open(b), context.Background()
	now := time.Now()
	mk := func() *model.RefreshToken {
		return &model.RefreshToken{Hash: benchHash(), SessionID: "s1", ClientID: "c1", UserID: "u1",
			Scope: "openid offline_access", AuthTime: now, AMR: []string{"pwd"}, CreatedAt: now,
			ExpiresAt: now.Add(24 * time.Hour)}
	}
	cur := mk()
	if err := s.CreateRefreshToken(ctx, cur); err != nil {
		b.Fatal(err)
	}
	e := benchEvent()
	e.Type = model.EventTokenRefreshed
	for b.Loop() {
		if _, err := s.GetRefreshToken(ctx, cur.Hash); err != nil {
			b.Fatal(err)
		}
		next := mk()
		if _, err := s.RotateRefreshToken(ctx, cur.Hash, now, next); err != nil {
			b.Fatal(err)
		}
		if _, err := s.AppendEvent(ctx, e); err != nil {
			b.Fatal(err)
		}
		cur = next
	}
}

// BenchmarkSQLiteClientCredentialsGrantParallel runs the grant's store
// work from many goroutines: reads scale, writes queue on the single
// write connection.
func BenchmarkSQLiteClientCredentialsGrantParallel(b *testing.B) {
	s, ctx := open(b), context.Background()
	exp := time.Now().Add(time.Minute)
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		e := benchEvent()
		for pb.Next() {
			if err := s.RecordJTI(ctx, fmt.Sprintf("client-1:%016x", n.Add(1)), exp); err != nil {
				b.Error(err)
				return
			}
			if _, err := s.AppendEvent(ctx, e); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// benchDevice returns device i of a fleet: a random-looking RFC 7638
// thumbprint (base64url SHA-256, as in production) and realistic JSON.
func benchDevice(i int, now time.Time) *model.Device {
	sum := sha256.Sum256([]byte(strconv.Itoa(i)))
	return &model.Device{
		ID: fmt.Sprintf("dev-%08d", i), UserID: fmt.Sprintf("user-%06d", i/2),
		JKT:        base64.RawURLEncoding.EncodeToString(sum[:]),
		PublicJWK:  json.RawMessage(`{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`),
		KeyStorage: "tpm", Platform: "linux", OSName: "Debian GNU/Linux", OSVersion: "13",
		Hostname: fmt.Sprintf("ws-%06d", i), AgentVersion: "1.4.2", TrustType: model.TrustManaged,
		Status: model.DeviceActive, Compliance: model.Compliant,
		Posture:   json.RawMessage(`{"firewall":true,"disk_encrypted":true,"screen_lock":true,"os":{"patch":"2026-02"}}`),
		PostureAt: now, ComplianceAt: now, CreatedAt: now.Add(time.Duration(i) * time.Microsecond),
		LastSeen: now, UpdatedAt: now,
	}
}

// BenchmarkSQLiteCreateDevice is one device registration (one INSERT
// into devices and its three indexes, committed on its own).
func BenchmarkSQLiteCreateDevice(b *testing.B) {
	s, ctx := open(b), context.Background()
	now := time.Now()
	i := 0
	for b.Loop() {
		if err := s.CreateDevice(ctx, benchDevice(i, now)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkSQLiteGetDeviceByJKT100k looks devices up by key thumbprint
// (the lookup behind every DPoP-bound request) in a fleet of 100,000.
// The fleet is registered with CreateDevice, outside the timed loop; the
// time that takes is reported as register-ns/device.
func BenchmarkSQLiteGetDeviceByJKT100k(b *testing.B) {
	const fleet = 100_000
	s, ctx := open(b), context.Background()
	now := time.Now()
	jkts := make([]string, fleet)
	start := time.Now()
	for i := range fleet {
		d := benchDevice(i, now)
		jkts[i] = d.JKT
		if err := s.CreateDevice(ctx, d); err != nil {
			b.Fatal(err)
		}
	}
	setup := time.Since(start)
	b.Logf("registered %d devices with CreateDevice in %v (%v per device)", fleet, setup.Round(time.Millisecond), setup/fleet)
	i := 0
	for b.Loop() { // the timer starts here
		// A stride coprime to the fleet size visits every device in an
		// order unrelated to insertion.
		j := (i * 7919) % fleet
		d, err := s.GetDeviceByJKT(ctx, jkts[j])
		if err != nil {
			b.Fatal(err)
		}
		if d.JKT != jkts[j] {
			b.Fatalf("GetDeviceByJKT(%s) = device with JKT %s", jkts[j], d.JKT)
		}
		i++
	}
	b.ReportMetric(float64(setup.Nanoseconds())/fleet, "register-ns/device")
}

// BenchmarkSQLiteDPoPGrant is the store work of a client_credentials
// grant with a DPoP proof, one at a time: the audit event alone (no
// replay record), with RecordJTI (a commit of its own) and with
// RecordJTIDeferred (the insert written later with others), for keys as
// the server stores them: the proof's expiry (whole seconds, as iat is)
// in front of one of 16 clients' key thumbprints and a random jti.
// cpu-µs/op is the process's CPU time, the writer's and checkpointer's
// included, the final flush at Close too.
func BenchmarkSQLiteDPoPGrant(b *testing.B) {
	var jkts [16]string
	for i := range jkts {
		jkts[i] = base64.RawURLEncoding.EncodeToString(benchHash())
	}
	for _, mode := range []string{"event", "RecordJTI", "RecordJTIDeferred"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			s, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "ward.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			e := benchEvent()
			start := cpuTime()
			for b.Loop() {
				exp := time.Now().Truncate(time.Second).Add(5*time.Minute + 30*time.Second)
				jti := benchHash()
				key := fmt.Sprintf("dpop:%016x:%s:%x", exp.UnixMicro(), jkts[jti[0]%16], jti[:16])
				switch mode {
				case "RecordJTI":
					err = s.RecordJTI(ctx, key, exp)
				case "RecordJTIDeferred":
					err = s.RecordJTIDeferred(ctx, key, exp)
				}
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.AppendEvent(ctx, e); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64((cpuTime()-start).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
