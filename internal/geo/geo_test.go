package geo_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/geo"
	"github.com/ward-idp/ward/internal/geo/geotest"
)

var places = []geotest.Place{
	{CIDR: "203.0.113.0/24", Country: "JP", City: "Tokyo", Lat: 35.69, Lon: 139.69, ASN: 64500, ASOrg: "Example Telecom"},
	{CIDR: "198.51.100.0/24", Country: "DE", City: "Berlin", Lat: 52.52, Lon: 13.40, ASN: 64501, ASOrg: "Beispiel GmbH"},
	{CIDR: "2001:db8:de::/48", Country: "DE"},
	// A private range in the database: never looked up.
	{CIDR: "10.0.0.0/8", Country: "US", ASN: 64999, ASOrg: "should not be used"},
}

func open(t *testing.T) *geo.DB {
	t.Helper()
	city, asn := geotest.Write(t, t.TempDir(), places)
	d, err := geo.Open(city, asn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestLookup(t *testing.T) {
	d := open(t)
	for _, c := range []struct {
		ip   string
		want geo.Location
	}{
		{"203.0.113.9", geo.Location{Country: "JP", City: "Tokyo", Lat: 35.69, Lon: 139.69, HasCoords: true, ASN: 64500, ASOrg: "Example Telecom"}},
		{"::ffff:198.51.100.7", geo.Location{Country: "DE", City: "Berlin", Lat: 52.52, Lon: 13.40, HasCoords: true, ASN: 64501, ASOrg: "Beispiel GmbH"}},
		{"2001:db8:de::1", geo.Location{Country: "DE"}},
		{"192.0.2.1", geo.Location{}},  // not in the database
		{"10.1.2.3", geo.Location{}},   // private: not looked up
		{"127.0.0.1", geo.Location{}},  // loopback
		{"100.64.0.1", geo.Location{}}, // CGNAT shared space
		{"fd00::1", geo.Location{}},    // unique local
		{"fe80::1", geo.Location{}},    // link-local
	} {
		got, err := d.Lookup(netip.MustParseAddr(c.ip))
		if err != nil || got != c.want {
			t.Errorf("Lookup(%s) = %+v, %v; want %+v", c.ip, got, err, c.want)
		}
		cc, err := d.Country(netip.MustParseAddr(c.ip))
		if err != nil || cc != c.want.Country {
			t.Errorf("Country(%s) = %q, %v; want %q", c.ip, cc, err, c.want.Country)
		}
	}
	if got, err := d.Lookup(netip.Addr{}); err != nil || got != (geo.Location{}) {
		t.Errorf("zero address: %+v %v", got, err)
	}
}

func TestOptionalDatabases(t *testing.T) {
	city, asn := geotest.Write(t, t.TempDir(), places)
	none, err := geo.Open("", "")
	if err != nil || none != nil {
		t.Fatalf("Open with no paths = %v, %v; want nil, nil", none, err)
	}
	if loc, err := none.Lookup(netip.MustParseAddr("203.0.113.9")); err != nil || loc != (geo.Location{}) {
		t.Errorf("nil DB: %+v %v", loc, err)
	}
	onlyASN, err := geo.Open("", asn)
	if err != nil {
		t.Fatal(err)
	}
	defer onlyASN.Close()
	if loc, _ := onlyASN.Lookup(netip.MustParseAddr("203.0.113.9")); loc != (geo.Location{ASN: 64500, ASOrg: "Example Telecom"}) {
		t.Errorf("ASN only: %+v", loc)
	}
	// The two files swapped: refused at once, not silently useless.
	for _, c := range [][2]string{{asn, ""}, {"", city}} {
		if _, err := geo.Open(c[0], c[1]); err == nil || !strings.Contains(err.Error(), "database") {
			t.Errorf("Open(%q, %q): %v, want a wrong-kind error", c[0], c[1], err)
		}
	}
	if _, err := geo.Open("/nonexistent.mmdb", ""); err == nil {
		t.Error("a missing file opened")
	}
}

func TestEnrich(t *testing.T) {
	d := open(t)
	a := activity.Activity{Time: time.Unix(1, 0), ID: "e", Kind: activity.KindTokenUse, IP: "203.0.113.9"}
	d.Enrich(&a)
	if a.Country != "JP" || a.City != "Tokyo" || !a.HasCoords || a.ASN != 64500 || a.ASOrg != "Example Telecom" {
		t.Errorf("enriched: %+v", a)
	}
	if err := a.Validate(); err != nil {
		t.Errorf("enriched activity is invalid: %v", err)
	}
	// Precomputed values win (a line from another database).
	b := activity.Activity{Time: time.Unix(1, 0), ID: "e", Kind: activity.KindTokenUse, IP: "203.0.113.9", Country: "KR", ASN: 1, ASOrg: "other"}
	d.Enrich(&b)
	if b.Country != "KR" || b.ASN != 1 || b.ASOrg != "other" || b.City != "Tokyo" {
		t.Errorf("precomputed values overwritten: %+v", b)
	}
	// No address, a bad one, a nil DB: nothing changes.
	for _, ip := range []string{"", "not an ip"} {
		c := activity.Activity{IP: ip}
		d.Enrich(&c)
		if c.Country != "" || c.ASN != 0 {
			t.Errorf("Enrich with ip %q: %+v", ip, c)
		}
	}
	var nilDB *geo.DB
	nilDB.Enrich(&a)
}
