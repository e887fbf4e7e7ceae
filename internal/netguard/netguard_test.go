package netguard

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

// TestPermits: public addresses pass; loopback, private, link-local
// (cloud metadata), CGNAT, transition forms of those, and Teredo only
// when allowed. (The push side's full table is internal/cae's
// TestNetGuard, which runs through this package.)
func TestPermits(t *testing.T) {
	g := Guard{}
	for ip, ok := range map[string]bool{
		"93.184.216.34": true, "2606:2800:220:1::1": true, "127.0.0.1": false, "::1": false, "10.1.2.3": false,
		"169.254.169.254": false, "::ffff:169.254.169.254": false, "100.64.0.1": false, "64:ff9b::7f00:1": false,
		"64:ff9b::808:808": true, "2002:a9fe:a9fe::1": false, "2001:0:4136:e378:8000:63bf:3fff:fdd2": false,
	} {
		if got := g.Permits(netip.MustParseAddr(ip)); got != ok {
			t.Errorf("Permits(%s) = %v, want %v", ip, got, ok)
		}
	}
	a := Guard{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	if !a.Permits(netip.MustParseAddr("127.0.0.1")) || a.Permits(netip.MustParseAddr("10.0.0.1")) {
		t.Error("allowed networks not applied")
	}
	if err := (Guard{Setting: "x.allowed"}).CheckHost("localhost"); err == nil || !strings.Contains(err.Error(), "x.allowed") {
		t.Errorf("CheckHost(localhost) = %v, want a refusal naming the setting", err)
	}
	if err := a.CheckHost("localhost"); err != nil {
		t.Errorf("CheckHost(localhost) with loopback allowed: %v", err)
	}
}

// TestClient: the guarded client refuses a loopback server after
// resolution (ErrBlocked, or the caller's error), reaches it when
// allowed, and does not follow redirects.
func TestClient(t *testing.T) {
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	url := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	if _, err := (Guard{}).Client(0).Get(url); !errors.Is(err, ErrBlocked) {
		t.Fatalf("GET loopback = %v, want ErrBlocked", err)
	}
	mine := errors.New("mine")
	if _, err := (Guard{Err: mine}).Client(0).Get(url); !errors.Is(err, mine) {
		t.Fatalf("GET loopback = %v, want the caller's error", err)
	}
	if hits != 0 {
		t.Fatal("a blocked request reached the server")
	}
	c := Guard{Allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}.Client(0)
	resp, err := c.Get(url + "/redirect")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || hits != 1 {
		t.Fatalf("redirect: status %d after %d requests, want 302 not followed", resp.StatusCode, hits)
	}
}
