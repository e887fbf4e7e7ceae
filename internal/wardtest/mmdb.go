package wardtest

import (
	"testing"

	"github.com/ward-idp/ward/internal/geo/geotest"
)

// CountryMMDB writes a small MMDB file mapping each CIDR to an ISO
// country code, for conditional_access.geoip_database.
func CountryMMDB(t testing.TB, countries map[string]string) string {
	t.Helper()
	var places []geotest.Place
	for cidr, cc := range countries {
		places = append(places, geotest.Place{CIDR: cidr, Country: cc})
	}
	city, _ := geotest.Write(t, t.TempDir(), places)
	return city
}
