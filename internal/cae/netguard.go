package cae

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/ward-idp/ward/internal/netguard"
)

// Push endpoints are URLs a receiver chooses, so pushing is a request
// Ward makes on a client's behalf: without a guard a receiver could aim
// it at Ward's own machine or network. Pushes therefore go only to public
// addresses, plus the networks the operator allows
// (ssf.push_allowed_networks), with the rules of package netguard (shared
// with Ward's own SSF receiver, which fetches from transmitters); IP
// literals are refused already when the stream is created or updated.

// ErrBlockedAddress is a push refused because its address is not public
// and not allowed.
var ErrBlockedAddress = errors.New("cae: push endpoint address is not public and not in ssf.push_allowed_networks")

// netGuard decides which addresses pushes may connect to.
type netGuard struct {
	allowed []netip.Prefix
}

func (g netGuard) guard() netguard.Guard {
	return netguard.Guard{Allowed: g.allowed, Setting: "ssf.push_allowed_networks", Err: ErrBlockedAddress}
}

// permits reports whether a push may connect to ip.
func (g netGuard) permits(ip netip.Addr) bool { return g.guard().Permits(ip) }

// checkHost refuses an endpoint host that is an IP literal (or
// "localhost") the guard does not permit; names are checked when dialled.
func (g netGuard) checkHost(host string) error { return g.guard().CheckHost(host) }

// dialContext dials like net.Dialer but refuses blocked addresses after
// resolution, before connecting.
func (g netGuard) dialContext(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return g.guard().DialContext(timeout)
}
