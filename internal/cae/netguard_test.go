package cae

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestNetGuard: pushes reach public addresses; loopback, private,
// link-local (cloud metadata), CGNAT and other special ranges only when
// allowed, IPv4-mapped IPv6 included.
func TestNetGuard(t *testing.T) {
	g := netGuard{}
	for _, c := range []struct {
		ip string
		ok bool
	}{
		{"93.184.216.34", true}, {"2606:2800:220:1::1", true}, {"8.8.8.8", true},
		{"127.0.0.1", false}, {"::1", false}, {"10.1.2.3", false}, {"172.16.0.1", false}, {"192.168.1.1", false},
		{"169.254.169.254", false}, {"fe80::1", false}, {"fd00::1", false}, {"100.64.0.1", false},
		{"0.0.0.0", false}, {"::", false}, {"224.0.0.1", false}, {"255.255.255.255", false},
		{"::ffff:127.0.0.1", false}, {"::ffff:169.254.169.254", false}, {"198.18.0.1", false},
		// IPv6 transition forms reach the IPv4 address they carry.
		{"64:ff9b::a9fe:a9fe", false}, {"64:ff9b::7f00:1", false}, {"64:ff9b::a00:1", false}, {"64:ff9b::808:808", true},
		{"2002:a9fe:a9fe::1", false}, {"2002:7f00:1::", false}, {"2002:c0a8:101::1", false}, {"2002:808:808::1", true},
		{"::a9fe:a9fe", false}, {"::7f00:1", false}, {"::808:808", true},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", false}, // Teredo
	} {
		if got := g.permits(netip.MustParseAddr(c.ip)); got != c.ok {
			t.Errorf("permits(%s) = %v, want %v", c.ip, got, c.ok)
		}
	}
	allowed := netGuard{allowed: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.0/8")}}
	if !allowed.permits(netip.MustParseAddr("10.9.8.7")) || !allowed.permits(netip.MustParseAddr("::ffff:127.0.0.1")) ||
		allowed.permits(netip.MustParseAddr("192.168.1.1")) || !allowed.permits(netip.MustParseAddr("64:ff9b::a00:1")) {
		t.Error("allowed networks not applied")
	}
	for host, ok := range map[string]bool{"127.0.0.1": false, "localhost": false, "receiver.example": true, "169.254.169.254": false, "8.8.8.8": true,
		"64:ff9b::a9fe:a9fe": false, "2002:a9fe:a9fe::1": false} {
		if err := g.checkHost(host); (err == nil) != ok {
			t.Errorf("checkHost(%s) = %v, want ok=%v", host, err, ok)
		}
	}
	if err := allowed.checkHost("localhost"); err != nil {
		t.Errorf("checkHost(localhost) with loopback allowed: %v", err)
	}
}

// TestNetGuardDial: the dialler refuses a blocked address after
// resolution (here: "localhost"), before any connection is made.
func TestNetGuardDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- struct{}{}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	dial := netGuard{}.dialContext(time.Second)
	if c, err := dial(context.Background(), "tcp", "localhost:"+port); err == nil || !errors.Is(err, ErrBlockedAddress) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial localhost = %v, want ErrBlockedAddress", err)
	}
	select {
	case <-accepted:
		t.Fatal("a connection reached the blocked address")
	case <-time.After(100 * time.Millisecond):
	}
	allowed := netGuard{allowed: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
	c, err := allowed.dialContext(time.Second)(context.Background(), "tcp", "localhost:"+port)
	if err != nil {
		t.Fatalf("dial with loopback allowed: %v", err)
	}
	c.Close()
}
