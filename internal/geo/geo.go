// Package geo places IP addresses: country, city and coordinates from a
// city or country MMDB (DB-IP Lite, GeoLite2/GeoIP2), and the autonomous
// system from an ASN MMDB. Both databases are optional; what one lacks is
// left empty. Conditional Access reads countries from it for named
// locations; the risk detectors read whole locations, online and in
// backtests, through Enrich.
package geo

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/oschwald/maxminddb-golang/v2"

	"github.com/ward-idp/ward/internal/activity"
)

// DB is a pair of optional MMDB readers. It is safe for concurrent use,
// and a nil *DB knows nothing.
type DB struct {
	city *maxminddb.Reader // country or city database
	asn  *maxminddb.Reader
}

// Open opens the databases at cityPath (a country or city MMDB) and
// asnPath (an ASN MMDB); an empty path leaves that one out. With both
// empty it returns nil: a DB that knows nothing.
func Open(cityPath, asnPath string) (*DB, error) {
	if cityPath == "" && asnPath == "" {
		return nil, nil
	}
	d := &DB{}
	var err error
	if cityPath != "" {
		if d.city, err = maxminddb.Open(cityPath); err != nil {
			return nil, fmt.Errorf("geo: open %s: %w", cityPath, err)
		}
		if err := check(d.city, "country"); err != nil {
			d.Close()
			return nil, fmt.Errorf("geo: %s: %w", cityPath, err)
		}
	}
	if asnPath != "" {
		if d.asn, err = maxminddb.Open(asnPath); err != nil {
			d.Close()
			return nil, fmt.Errorf("geo: open %s: %w", asnPath, err)
		}
		if err := check(d.asn, "asn"); err != nil {
			d.Close()
			return nil, fmt.Errorf("geo: %s: %w", asnPath, err)
		}
	}
	return d, nil
}

// check refuses a database of the wrong kind (an ASN file given as the
// city database, or the reverse), which would otherwise answer nothing
// for every address without a word.
func check(r *maxminddb.Reader, want string) error {
	t := r.Metadata.DatabaseType
	isASN := strings.Contains(strings.ToLower(t), "asn")
	switch {
	case want == "asn" && !isASN:
		return fmt.Errorf("database type %q is not an ASN database", t)
	case want == "country" && isASN:
		return fmt.Errorf("database type %q is an ASN database, not a country or city one", t)
	}
	return nil
}

// Close releases the databases.
func (d *DB) Close() error {
	if d == nil {
		return nil
	}
	var errs []error
	if d.city != nil {
		errs = append(errs, d.city.Close())
	}
	if d.asn != nil {
		errs = append(errs, d.asn.Close())
	}
	return errors.Join(errs...)
}

// Location is what the databases say of an address; empty fields are
// unknown.
type Location struct {
	Country   string // ISO 3166-1 alpha-2
	City      string // English name
	Lat, Lon  float64
	HasCoords bool
	ASN       uint32
	ASOrg     string
}

type cityRecord struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	City struct {
		Names map[string]string `maxminddb:"names"`
	} `maxminddb:"city"`
	Location struct {
		Latitude  *float64 `maxminddb:"latitude"`
		Longitude *float64 `maxminddb:"longitude"`
	} `maxminddb:"location"`
}

type asnRecord struct {
	Number uint32 `maxminddb:"autonomous_system_number"`
	Org    string `maxminddb:"autonomous_system_organization"`
}

// Country returns the country of ip, or "" when unknown (no database, no
// entry, an address that is not public). IPv4-mapped IPv6 addresses are
// looked up as IPv4.
func (d *DB) Country(ip netip.Addr) (string, error) {
	if d == nil || d.city == nil || !Routable(ip) {
		return "", nil
	}
	var rec cityRecord
	if err := d.city.Lookup(ip.Unmap()).Decode(&rec); err != nil {
		return "", fmt.Errorf("geo: lookup: %w", err)
	}
	return rec.Country.ISOCode, nil
}

// Lookup returns everything the databases know of ip.
func (d *DB) Lookup(ip netip.Addr) (Location, error) {
	var loc Location
	if d == nil || !Routable(ip) {
		return loc, nil
	}
	ip = ip.Unmap()
	if d.city != nil {
		var rec cityRecord
		if err := d.city.Lookup(ip).Decode(&rec); err != nil {
			return loc, fmt.Errorf("geo: lookup: %w", err)
		}
		loc.Country, loc.City = rec.Country.ISOCode, rec.City.Names["en"]
		if la, lo := rec.Location.Latitude, rec.Location.Longitude; la != nil && lo != nil &&
			*la >= -90 && *la <= 90 && *lo >= -180 && *lo <= 180 {
			loc.Lat, loc.Lon, loc.HasCoords = *la, *lo, true
		}
	}
	if d.asn != nil {
		var rec asnRecord
		if err := d.asn.Lookup(ip).Decode(&rec); err != nil {
			return loc, fmt.Errorf("geo: lookup asn: %w", err)
		}
		loc.ASN, loc.ASOrg = rec.Number, rec.Org
	}
	return loc, nil
}

// Routable reports whether ip could be anywhere on the Internet: not
// loopback, private (RFC 1918, RFC 4193), link-local, CGNAT shared
// space (RFC 6598) or unspecified. Those say nothing about a place.
func Routable(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap()
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() {
		return false
	}
	return !cgnat.Contains(ip)
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// Enrich fills the location fields of a that are empty from the
// databases: precomputed values (a line written elsewhere, with another
// database) are kept. A lookup error leaves a as it is.
func (d *DB) Enrich(a *activity.Activity) {
	if d == nil || a.IP == "" || (a.Country != "" && a.ASN != 0 && a.HasCoords) {
		return
	}
	ip, err := netip.ParseAddr(a.IP)
	if err != nil {
		return
	}
	loc, err := d.Lookup(ip)
	if err != nil {
		return
	}
	if a.Country == "" {
		a.Country = loc.Country
	}
	if a.City == "" {
		a.City = loc.City
	}
	if !a.HasCoords && loc.HasCoords {
		a.Lat, a.Lon, a.HasCoords = loc.Lat, loc.Lon, true
	}
	if a.ASN == 0 {
		a.ASN, a.ASOrg = loc.ASN, loc.ASOrg
	}
	// A database with odd values must not make the line invalid.
	if len(a.Country) != 2 || strings.ToUpper(a.Country) != a.Country {
		a.Country = ""
	}
	if len(a.City) > activity.MaxField || !utf8.ValidString(a.City) {
		a.City = ""
	}
	if len(a.ASOrg) > activity.MaxField || !utf8.ValidString(a.ASOrg) {
		a.ASOrg = ""
	}
}
