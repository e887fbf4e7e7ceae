package detect

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIPList(t *testing.T) {
	l, err := ParseIPList(strings.NewReader("# Tor exits\n192.0.2.7\n\n198.51.100.0/24 # a range\n2001:db8::/32\n::ffff:203.0.113.9\n10.1.2.3/8\n"))
	if err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]bool{"192.0.2.7": true, "192.0.2.8": false, "198.51.100.200": true, "2001:db8:1::1": true,
		"2001:db9::1": false, "203.0.113.9": true, "::ffff:192.0.2.7": true, "10.200.0.1": true, "11.0.0.1": false} {
		if got := l.Contains(netip.MustParseAddr(ip)); got != want {
			t.Errorf("%s: %v, want %v", ip, got, want)
		}
	}
	if l.Len() != 5 || !l.ContainsString("192.0.2.7") || l.ContainsString("nonsense") || l.ContainsString("") {
		t.Errorf("len %d", l.Len())
	}
	var nilList *IPList
	if nilList.Contains(netip.MustParseAddr("192.0.2.7")) || nilList.Len() != 0 {
		t.Error("a nil list contains nothing")
	}
	for in, line := range map[string]string{"192.0.2.1\nfoo\n": "line 2", "192.0.2.0/33\n": "line 1", "\n\n" + strings.Repeat("1", 300) + "\n": "line 3"} {
		if _, err := ParseIPList(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), line) {
			t.Errorf("%q: %v, want an error naming %s", in[:min(len(in), 20)], err, line)
		}
	}
	p := filepath.Join(t.TempDir(), "deny.txt")
	if err := os.WriteFile(p, []byte("192.0.2.0/24\nbad entry\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadIPList(p); err == nil || !strings.Contains(err.Error(), "deny.txt") || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("load: %v", err)
	}
	if _, err := LoadIPList(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing file loads")
	}
}

// TestIPListReload: a changed file replaces the list; an invalid one
// leaves the previous list in use, is refused once with an error naming
// the file and line but not the content, and a valid one after it is
// taken again; a removed file keeps the list too.
func TestIPListReload(t *testing.T) {
	p := filepath.Join(t.TempDir(), "anon.txt")
	write := func(body string, mod time.Time) {
		t.Helper()
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	write("192.0.2.7\n", t0)
	l, err := LoadIPList(p)
	if err != nil {
		t.Fatal(err)
	}
	in := func(ip string) bool { return l.ContainsString(ip) }
	if changed, err := l.Reload(); changed || err != nil {
		t.Fatalf("reload of an unchanged file: %v %v", changed, err)
	}
	write("198.51.100.0/24\n", t0.Add(time.Minute))
	if changed, err := l.Reload(); !changed || err != nil {
		t.Fatalf("reload of a changed file: %v %v", changed, err)
	}
	if in("192.0.2.7") || !in("198.51.100.9") || l.Len() != 1 {
		t.Errorf("after reload: old %v new %v len %d", in("192.0.2.7"), in("198.51.100.9"), l.Len())
	}
	write("203.0.113.1\nsecret-token-xyz\n", t0.Add(2*time.Minute))
	changed, err := l.Reload()
	if changed || err == nil || !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), p) || strings.Contains(err.Error(), "secret-token") {
		t.Errorf("reload of an invalid file: changed %v, err %v (want the file and line, not the content)", changed, err)
	}
	if !in("198.51.100.9") || in("203.0.113.1") {
		t.Error("an invalid file replaced the list")
	}
	if changed, err := l.Reload(); changed || err != nil {
		t.Errorf("the same invalid file again: %v %v, want it ignored until it changes", changed, err)
	}
	write("203.0.113.0/24\n", t0.Add(3*time.Minute))
	if changed, err := l.Reload(); !changed || err != nil || !in("203.0.113.1") {
		t.Errorf("valid file after an invalid one: %v %v", changed, err)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Reload(); err == nil || !in("203.0.113.1") {
		t.Errorf("removed file: err %v, list kept %v", err, in("203.0.113.1"))
	}
}

// TestWatchIPLists: the watcher applies a change without being asked,
// and concurrent lookups during reloads are safe (-race).
func TestWatchIPLists(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.txt")
	if err := os.WriteFile(p, []byte("192.0.2.7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := LoadIPList(p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { WatchIPLists(ctx, 10*time.Millisecond, slog.New(slog.DiscardHandler), l, nil); close(done) }()
	defer func() { cancel(); <-done }()
	future := time.Now().Add(time.Hour)
	if err := os.WriteFile(p, []byte("198.51.100.7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, future, future); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !l.ContainsString("198.51.100.7") {
		if time.Now().After(deadline) {
			t.Fatal("the watcher did not apply the changed file")
		}
		_ = l.ContainsString("192.0.2.7")
		time.Sleep(time.Millisecond)
	}
}
