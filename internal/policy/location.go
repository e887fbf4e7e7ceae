package policy

import (
	"fmt"
	"net/netip"

	"github.com/oschwald/maxminddb-golang/v2"
)

// Locator resolves IP addresses to countries with a MaxMind DB (GeoLite2 or
// GeoIP2 Country/City, or any MMDB with country.iso_code). It is safe for
// concurrent use.
type Locator struct {
	db *maxminddb.Reader
}

// OpenLocator opens the MMDB file at path.
func OpenLocator(path string) (*Locator, error) {
	db, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("policy: open mmdb: %w", err)
	}
	return &Locator{db: db}, nil
}

// Close releases the database.
func (l *Locator) Close() error { return l.db.Close() }

type countryRecord struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
}

// Country returns the ISO 3166-1 alpha-2 country of ip, or "" when the
// database has no entry (or no country) for it. IPv4-mapped IPv6 addresses
// are looked up as IPv4.
func (l *Locator) Country(ip netip.Addr) (string, error) {
	if l == nil || !ip.IsValid() {
		return "", nil
	}
	var rec countryRecord
	if err := l.db.Lookup(ip.Unmap()).Decode(&rec); err != nil {
		return "", fmt.Errorf("policy: mmdb lookup: %w", err)
	}
	return rec.Country.ISOCode, nil
}

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
