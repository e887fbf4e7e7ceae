package policy

import (
	"net/netip"
)

// location is a compiled NamedLocation.
type location struct {
	id        string
	trusted   bool
	prefixes  []netip.Prefix
	countries []string
}

func (l *location) contains(ip netip.Addr, country string) bool {
	if ip.IsValid() {
		ip = ip.Unmap()
		for _, p := range l.prefixes {
			if p.Contains(ip) {
				return true
			}
		}
	}
	if country != "" {
		for _, c := range l.countries {
			if c == country {
				return true
			}
		}
	}
	return false
}
