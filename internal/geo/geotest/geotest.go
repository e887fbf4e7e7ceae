// Package geotest writes small MMDB files for tests: a city database and
// an ASN database with the same layout as DB-IP Lite and GeoLite2, built
// with MaxMind's own writer.
package geotest

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// Place is one network's entry.
type Place struct {
	CIDR     string
	Country  string
	City     string
	Lat, Lon float64
	ASN      uint32
	ASOrg    string
}

// Write builds a city and an ASN database of places in dir and returns
// their paths.
func Write(tb testing.TB, dir string, places []Place) (cityPath, asnPath string) {
	tb.Helper()
	city := newTree(tb, "DBIP-City-Lite")
	asn := newTree(tb, "GeoLite2-ASN")
	for _, p := range places {
		_, n, err := net.ParseCIDR(p.CIDR)
		if err != nil {
			tb.Fatal(err)
		}
		rec := mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String(p.Country)}}
		if p.City != "" {
			rec["city"] = mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String(p.City)}}
			rec["location"] = mmdbtype.Map{"latitude": mmdbtype.Float64(p.Lat), "longitude": mmdbtype.Float64(p.Lon)}
		}
		if err := city.Insert(n, rec); err != nil {
			tb.Fatal(err)
		}
		if p.ASN != 0 {
			if err := asn.Insert(n, mmdbtype.Map{
				"autonomous_system_number":       mmdbtype.Uint32(p.ASN),
				"autonomous_system_organization": mmdbtype.String(p.ASOrg),
			}); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return save(tb, city, filepath.Join(dir, "city.mmdb")), save(tb, asn, filepath.Join(dir, "asn.mmdb"))
}

func newTree(tb testing.TB, typ string) *mmdbwriter.Tree {
	t, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: typ, RecordSize: 24, IncludeReservedNetworks: true})
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

func save(tb testing.TB, t *mmdbwriter.Tree, path string) string {
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := t.WriteTo(f); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return path
}
