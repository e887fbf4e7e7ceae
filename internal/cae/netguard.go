package cae

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// Push endpoints are URLs a receiver chooses, so pushing is a request
// Ward makes on a client's behalf: without a guard a receiver could aim
// it at Ward's own machine or network (server-side request forgery: the
// cloud metadata service at 169.254.169.254, an admin port on loopback, a
// database on the private network). Pushes therefore go only to public
// addresses, plus the networks the operator allows
// (ssf.push_allowed_networks). The check runs on the address actually
// dialled, after DNS resolution, so a name that resolves (or re-resolves)
// to a blocked address is refused too; IP literals are refused already
// when the stream is created or updated.

// ErrBlockedAddress is a push refused because its address is not public
// and not allowed.
var ErrBlockedAddress = errors.New("cae: push endpoint address is not public and not in ssf.push_allowed_networks")

// netGuard decides which addresses pushes may connect to.
type netGuard struct {
	allowed []netip.Prefix
}

// special are the non-public ranges that netip's predicates miss.
var special = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
}

// permits reports whether a push may connect to ip.
func (g netGuard) permits(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range g.allowed {
		if p.Contains(ip) {
			return true
		}
	}
	if !ip.IsValid() || ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range special {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// checkHost refuses an endpoint host that is an IP literal (or
// "localhost") the guard does not permit; names are checked when dialled.
func (g netGuard) checkHost(host string) error {
	if ip, err := netip.ParseAddr(host); err == nil {
		if !g.permits(ip) {
			return fmt.Errorf("%s is not a public address (allow its network in ssf.push_allowed_networks)", ip)
		}
		return nil
	}
	if loopback(host) && !g.permits(netip.MustParseAddr("127.0.0.1")) {
		return fmt.Errorf("%s is a loopback name (allow 127.0.0.0/8 in ssf.push_allowed_networks)", host)
	}
	return nil
}

// dialContext dials like net.Dialer but refuses blocked addresses after
// resolution, before connecting.
func (g netGuard) dialContext(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			ip, err := netip.ParseAddr(host)
			if err != nil || !g.permits(ip) {
				return fmt.Errorf("%w: %s", ErrBlockedAddress, host)
			}
			return nil
		}}
	return d.DialContext
}
