package rs

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ClientIP is the address of the client behind r: the connection's peer,
// unless the peer is in trusted (a reverse proxy you run), in which case
// X-Forwarded-For is walked from the right past trusted proxies and the
// first address that is not one is the client. This is the one client-IP
// rule of Ward: the authorization server, the admin API, the gateway and
// rs usage records and ipr checks all use it.
//
// It is written for the attacker's side:
//   - a client that is not a trusted proxy cannot choose its address:
//     its X-Forwarded-For is ignored, whatever it says;
//   - behind a trusted proxy, the entries a client can forge are to the
//     left of the one the proxy appended, and the walk stops at that one;
//   - every field of every X-Forwarded-For header counts, in order (a
//     second header cannot hide the proxy's entry); an entry that is not a
//     bare IP address (empty, a port, a zone, a name, garbage) ends the
//     walk at the last trusted hop, the nearest address still vouched for;
//   - IPv4-mapped IPv6 addresses are unmapped before any comparison, so
//     ::ffff:10.0.0.1 is 10.0.0.1 for trusted and for the result.
//
// The zero Addr means the peer address itself is not an IP address (a
// Unix socket, a test that did not set RemoteAddr).
func ClientIP(r *http.Request, trusted []netip.Prefix) netip.Addr {
	cur := peerIP(r)
	if !contains(trusted, cur) {
		return cur
	}
	xff := r.Header.Values("X-Forwarded-For")
	for i := len(xff) - 1; i >= 0; i-- {
		v := xff[i]
		for {
			j := strings.LastIndexByte(v, ',')
			a, err := netip.ParseAddr(strings.TrimSpace(v[j+1:]))
			if err != nil || a.Zone() != "" {
				return cur
			}
			a = a.Unmap()
			if !contains(trusted, a) {
				return a
			}
			cur = a
			if j < 0 {
				break
			}
			v = v[:j]
		}
	}
	return cur
}

// TrustedPeer reports whether the connection's peer is in trusted: a
// proxy whose forwarding headers (X-Forwarded-For, -Proto, -Host) may be
// believed.
func TrustedPeer(r *http.Request, trusted []netip.Prefix) bool {
	return contains(trusted, peerIP(r))
}

// peerIP is the connection's peer address, unmapped; zero if RemoteAddr
// holds no IP address.
func peerIP(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

func contains(trusted []netip.Prefix, a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
