// Package netguard keeps Ward's outbound requests to URLs that others
// choose (an SSF receiver's push endpoint, an SSF transmitter's
// configuration, JWKS and stream endpoints) away from Ward's own machine
// and network: server-side request forgery against the cloud metadata
// service at 169.254.169.254, an admin port on loopback, a database on
// the private network. Requests connect only to public addresses, plus
// the networks the operator allows; the check runs on the address
// actually dialled, after DNS resolution, so a name that resolves (or
// re-resolves) to a blocked address is refused too.
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// ErrBlocked is a connection refused because its address is not public
// and not allowed (Guard.Err, when set, is returned in its place).
var ErrBlocked = errors.New("netguard: address is not public and not allowed")

// Guard decides which addresses outbound requests may connect to.
type Guard struct {
	// Allowed are the non-public networks that may be reached anyway.
	Allowed []netip.Prefix
	// Setting names the configuration key that lists Allowed, for error
	// messages ("ssf.push_allowed_networks").
	Setting string
	// Err, when set, is the error a blocked dial wraps instead of
	// ErrBlocked (a caller's own sentinel).
	Err error
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

// Permits reports whether a request may connect to ip.
func (g Guard) Permits(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range g.Allowed {
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
	// IPv6 forms that carry an IPv4 address reach that address (through
	// a NAT64 gateway or a 6to4 relay): they are as public as it is.
	if v4, ok := embeddedIPv4(ip); ok {
		return g.Permits(v4)
	}
	if teredo.Contains(ip) {
		return false // deprecated, and its client address is obfuscated
	}
	return true
}

// IPv6 transition prefixes.
var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96") // RFC 6052 well-known prefix
	sixToFour = netip.MustParsePrefix("2002::/16")    // RFC 3056
	teredo    = netip.MustParsePrefix("2001::/32")    // RFC 4380
	v4compat  = netip.MustParsePrefix("::/96")        // IPv4-compatible (deprecated, RFC 4291)
)

// embeddedIPv4 returns the IPv4 address an IPv6 address carries: the
// last 32 bits of NAT64 and IPv4-compatible addresses, bits 16–48 of 6to4.
func embeddedIPv4(ip netip.Addr) (netip.Addr, bool) {
	if !ip.Is6() {
		return netip.Addr{}, false
	}
	b := ip.As16()
	switch {
	case nat64.Contains(ip), v4compat.Contains(ip):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}), true
	case sixToFour.Contains(ip):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), true
	}
	return netip.Addr{}, false
}

func (g Guard) setting() string {
	if g.Setting == "" {
		return "the allowed networks"
	}
	return g.Setting
}

// CheckHost refuses a URL host that is an IP literal (or "localhost")
// the guard does not permit; names are checked when dialled.
func (g Guard) CheckHost(host string) error {
	if ip, err := netip.ParseAddr(host); err == nil {
		if !g.Permits(ip) {
			return fmt.Errorf("%s is not a public address (allow its network in %s)", ip, g.setting())
		}
		return nil
	}
	if Loopback(host) && !g.Permits(netip.MustParseAddr("127.0.0.1")) {
		return fmt.Errorf("%s is a loopback name (allow 127.0.0.0/8 in %s)", host, g.setting())
	}
	return nil
}

// Loopback reports whether host is "localhost" or a loopback address.
func Loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// DialContext dials like net.Dialer but refuses blocked addresses after
// resolution, before connecting.
func (g Guard) DialContext(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	blocked := g.Err
	if blocked == nil {
		blocked = ErrBlocked
	}
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			host, _, err := net.SplitHostPort(address)
			if err != nil {
				return err
			}
			ip, err := netip.ParseAddr(host)
			if err != nil || !g.Permits(ip) {
				return fmt.Errorf("%w: %s", blocked, host)
			}
			return nil
		}}
	return d.DialContext
}

// Client returns an HTTP client whose connections pass the guard: no
// proxy (a proxy would dial for it, past the guard), no redirects
// followed (a redirect is another URL nobody checked), and timeout on
// the whole request (0: none; use the request's context).
func (g Guard) Client(timeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.DialContext = g.DialContext(30 * time.Second)
	return &http.Client{Transport: t, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
