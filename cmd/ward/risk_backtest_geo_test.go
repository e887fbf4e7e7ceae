package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/geo/geotest"
)

// ward risk backtest places lines without a location with the MMDB files
// (--country-database, --asn-database) and keeps a line's precomputed
// location: the same thief is impossible travel when looked up, and not
// when the line says it was at home.
func TestRiskBacktestPlaces(t *testing.T) {
	h := newHarness(t, "")
	dir := t.TempDir()
	city, asn := geotest.Write(t, dir, []geotest.Place{
		{CIDR: "192.0.2.0/24", Country: "JP", City: "Tokyo", Lat: 35.69, Lon: 139.69, ASN: 64500, ASOrg: "Example Telecom"},
		{CIDR: "198.51.100.0/24", Country: "BR", City: "Sao Paulo", Lat: -23.55, Lon: -46.63, ASN: 64501, ASOrg: "Example Hosting"}})
	var lines []string
	for _, d := range []string{"01", "02", "03", "04"} {
		lines = append(lines, `{"t":"2026-03-`+d+`T09:00:00Z","id":"home-`+d+`","kind":"signin","user":"u","session_id":"s-`+d+`","client_id":"c","result":"success","ip":"192.0.2.10","user_agent":"Mozilla/5.0 (Macintosh) Safari/605.1.15"}`)
	}
	thief := `{"t":"2026-03-04T09:20:00Z","id":"thief","kind":"signin","user":"u","session_id":"s-x","client_id":"c","result":"success","ip":"198.51.100.9","user_agent":"Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"`
	write := func(name, last string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Join(append(append([]string{}, lines...), last), "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	looked := write("looked-up.jsonl", thief+"}")
	out := h.ok("", "risk", "backtest", "--events", looked, "--country-database", city, "--asn-database", asn)
	if !strings.Contains(out, `"type":"impossible_travel"`) || !strings.Contains(out, `"evidence":["home-04","thief"]`) || !strings.Contains(out, "JP to BR") {
		t.Errorf("with the databases:\n%s", out)
	}
	// Without the databases there is no place and no network: nothing to compare.
	if out := h.ok("", "risk", "backtest", "--events", looked); strings.Contains(out, "impossible_travel") || strings.Contains(out, "unfamiliar") {
		t.Errorf("without the databases:\n%s", out)
	}
	// A precomputed location is kept: this line says Tokyo, on the user's own network.
	pre := write("precomputed.jsonl", thief+`,"asn":64500,"as_org":"Example Telecom","country":"JP","city":"Tokyo","lat":35.69,"lon":139.69}`)
	if out := h.ok("", "risk", "backtest", "--events", pre, "--country-database", city, "--asn-database", asn); strings.Contains(out, "impossible_travel") {
		t.Errorf("a precomputed location was looked up again:\n%s", out)
	}
	// A database of the wrong kind is a usage error.
	if _, errs, code := h.run("", "risk", "backtest", "--events", looked, "--country-database", asn); code == 0 || !strings.Contains(errs, "ASN") {
		t.Errorf("wrong database: %d %s", code, errs)
	}
}
