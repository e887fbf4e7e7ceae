package backtest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
)

// The generator's world: places, networks and programs. Every network is
// synthetic (its number, name and addresses are invented for the
// generator), with the properties that matter to the detectors: whether
// its addresses churn (mobile CGNAT, in-flight), where they geolocate,
// and whether the organisation, a commercial VPN or an attacker uses it.

type city struct {
	name     string
	country  string
	lat, lon float64
}

var cities = map[string]city{
	"berlin":     {"Berlin", "DE", 52.52, 13.40},
	"munich":     {"Munich", "DE", 48.14, 11.58},
	"hamburg":    {"Hamburg", "DE", 53.55, 9.99},
	"paris":      {"Paris", "FR", 48.86, 2.35},
	"lyon":       {"Lyon", "FR", 45.76, 4.84},
	"london":     {"London", "GB", 51.51, -0.13},
	"newyork":    {"New York", "US", 40.71, -74.00},
	"sanfran":    {"San Francisco", "US", 37.77, -122.42},
	"ashburn":    {"Ashburn", "US", 39.04, -77.49},
	"amsterdam":  {"Amsterdam", "NL", 52.37, 4.90},
	"madrid":     {"Madrid", "ES", 40.42, -3.70},
	"milan":      {"Milan", "IT", 45.46, 9.19},
	"warsaw":     {"Warsaw", "PL", 52.23, 21.01},
	"stockholm":  {"Stockholm", "SE", 59.33, 18.07},
	"tokyo":      {"Tokyo", "JP", 35.68, 139.69},
	"singapore":  {"Singapore", "SG", 1.35, 103.82},
	"saopaulo":   {"Sao Paulo", "BR", -23.55, -46.63},
	"bangalore":  {"Bangalore", "IN", 12.97, 77.59},
	"toronto":    {"Toronto", "CA", 43.65, -79.38},
	"sydney":     {"Sydney", "AU", -33.87, 151.21},
	"lagos":      {"Lagos", "NG", 6.52, 3.38},
	"moscow":     {"Moscow", "RU", 55.76, 37.62},
	"frankfurt":  {"Frankfurt", "DE", 50.11, 8.68},
	"lakeforest": {"Lake Forest", "US", 33.65, -117.69},
}

// Home cities of the organisation's people (weights by repetition).
var homeCities = []string{"berlin", "berlin", "berlin", "munich", "munich", "hamburg", "paris", "paris", "lyon", "london", "london", "newyork", "newyork", "sanfran", "amsterdam", "madrid", "warsaw"}

// Travel destinations.
var destinations = []string{"newyork", "sanfran", "tokyo", "singapore", "london", "paris", "madrid", "sydney", "toronto", "saopaulo"}

type netKind int

const (
	netHome netKind = iota
	netMobile
	netOffice
	netCorpVPN
	netCommercialVPN
	netInflight
	netRelay
	netHosting
)

// network is one autonomous system of the world.
type network struct {
	asn     uint32
	org     string
	kind    netKind
	country string // home country ("" for international ones)
	v4      [2]byte
	v6      uint16 // 2a0X:v6::/32
}

type world struct {
	nets       []*network
	home       map[string][]*network // by country
	mobile     map[string]*network
	office     *network
	corpVPN    *network
	commVPN    []*network
	inflight   *network
	relay      *network
	hosting    []*network
	hostingAt  map[*network][]string // cities of its data centres
	offices    []string
	torPrefix  netip.Prefix // Tor exits (on the anonymous list)
	evilPrefix netip.Prefix // a deny-listed range (on the malicious list)
}

func newWorld() *world {
	w := &world{home: map[string][]*network{}, mobile: map[string]*network{}, hostingAt: map[*network][]string{}}
	asn := uint32(4200000000) // private 32-bit ASNs: invented networks
	add := func(org string, kind netKind, country string) *network {
		i := len(w.nets)
		n := &network{asn: asn + uint32(i), org: org, kind: kind, country: country, v4: [2]byte{byte(24 + i/200), byte(i % 200)}, v6: uint16(0x1000 + i)}
		w.nets = append(w.nets, n)
		return n
	}
	countries := map[string]bool{}
	for _, c := range cities {
		countries[c.country] = true
	}
	for _, cc := range sortedKeys(countries) {
		w.home[cc] = []*network{add(cc+" Broadband", netHome, cc), add(cc+" Fibre", netHome, cc)}
		w.mobile[cc] = add(cc+" Mobile", netMobile, cc)
	}
	w.office = add("Example Corp", netOffice, "DE")
	w.offices = []string{"berlin", "munich", "paris", "london", "newyork"}
	w.corpVPN = add("Example Corp VPN", netCorpVPN, "NL")
	w.commVPN = []*network{add("Commercial VPN A", netCommercialVPN, ""), add("Commercial VPN B", netCommercialVPN, "")}
	w.inflight = add("Inflight Wifi", netInflight, "US")
	w.relay = add("Private Relay", netRelay, "")
	for _, h := range []struct {
		org    string
		cities []string
	}{{"Cloud Hosting A", []string{"frankfurt", "amsterdam", "newyork", "singapore"}}, {"Cloud Hosting B", []string{"paris", "london"}},
		{"Budget VPS", []string{"moscow", "warsaw"}}, {"Bulletproof Hosting", []string{"lagos", "saopaulo"}}} {
		n := add(h.org, netHosting, "")
		w.hosting = append(w.hosting, n)
		w.hostingAt[n] = h.cities
	}
	t := w.hosting[2].v4
	w.torPrefix = netip.PrefixFrom(netip.AddrFrom4([4]byte{t[0], t[1], 250, 0}), 24)
	e := w.hosting[3].v4
	w.evilPrefix = netip.PrefixFrom(netip.AddrFrom4([4]byte{e[0], e[1], 251, 0}), 24)
	return w
}

func sortedKeys(m map[string]bool) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

// place is where an activity comes from.
type place struct {
	net      *network
	ip       string
	city     string
	country  string
	lat, lon float64
}

func (n *network) v4Addr(c, d byte) string {
	return netip.AddrFrom4([4]byte{n.v4[0], n.v4[1], c, d}).String()
}

func (n *network) v6Addr(sub uint16, host uint64) string {
	var b [16]byte
	b[0], b[1] = 0x2a, 0x0c
	b[2], b[3] = byte(n.v6>>8), byte(n.v6)
	b[4], b[5] = byte(sub>>8), byte(sub)
	for i := 0; i < 8; i++ {
		b[8+i] = byte(host >> (8 * i))
	}
	return netip.AddrFrom16(b).String()
}

func at(n *network, ip, cityKey string, jitterDeg float64, r *rand.Rand) place {
	c := cities[cityKey]
	lat, lon := c.lat, c.lon
	if jitterDeg > 0 {
		lat += (r.Float64()*2 - 1) * jitterDeg
		lon += (r.Float64()*2 - 1) * jitterDeg
	}
	return place{net: n, ip: ip, city: c.name, country: c.country, lat: clamp(lat, -89.9, 89.9), lon: clamp(lon, -179.9, 179.9)}
}

func clamp(v, lo, hi float64) float64 {
	return max(lo, min(hi, v))
}

// Programs.
var (
	browsers = []string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
	}
	attackerBrowsers = []string{
		"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
		"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
	}
	attackerTools = []string{"python-requests/2.32.3", "curl/8.5.0", "Go-http-client/2.0", "axios/1.7.2", "PostmanRuntime/7.42.0"}
	mailApps      = []string{"WardMail/5.2 (iPhone; iOS 18.1; Scale/3.00)", "WardMail/5.2 (Linux; Android 14; Pixel 8)"}
	reportsApp    = "Reports/3.1 (Windows NT 10.0; Win64; x64) WinHTTP"
)

func randHex(r *rand.Rand, n int) string {
	const hex = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = hex[r.IntN(16)]
	}
	return string(b)
}

func randKey(r *rand.Rand) string {
	const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	b := make([]byte, 43)
	for i := range b {
		b[i] = b64[r.IntN(64)]
	}
	return string(b)
}

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

func userID(i int) string { return fmt.Sprintf("u-%06d", i) }
