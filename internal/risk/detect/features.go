package detect

import (
	"math"
	"net/netip"
	"time"

	"github.com/ward-idp/ward/internal/activity"
)

// netctx is what the detectors compare of where and from what an activity
// came: the network (ASN, and the /24 or /48 the address is in), the place,
// and the client's fingerprint (normalised user agent, device, key). Hashes
// are FNV-1a: deterministic, so a backtest and the live service agree.
type netctx struct {
	asn     uint32
	prefix  uint64 // hash of the /24 (IPv4) or /48 (IPv6); 0: no address
	country [2]byte
	coords  bool
	lat     float32
	lon     float32
	ua      uint64 // hash of the user agent without its digits; 0: none
	dev     uint64 // hash of the device id; 0: none
	jkt     uint64 // hash of the proof key's thumbprint; 0: none
	// corp: the organisation's network; exempt: a network whose
	// addresses say nothing of where the user is (Config.ExemptASNs);
	// anon, bad: on the anonymous or malicious list.
	corp, exempt, anon, bad bool
}

func contextOf(a *activity.Activity, r *rules) netctx {
	cfg := &r.cfg
	c := netctx{asn: a.ASN, ua: uaHash(a.UserAgent), dev: strHash(a.DeviceID), jkt: strHash(a.JKT)}
	if a.IP != "" {
		if ip, err := netip.ParseAddr(a.IP); err == nil {
			ip = ip.Unmap().WithZone("")
			c.prefix = prefixHash(ip)
			c.corp = cfg.CorporateIPs.Contains(ip)
			c.anon = cfg.AnonymousIPs.Contains(ip)
			c.bad = cfg.MaliciousIPs.Contains(ip)
		}
	}
	if c.asn != 0 {
		c.corp = c.corp || r.corpASN[c.asn]
		c.exempt = r.exemptASN[c.asn]
	}
	if len(a.Country) == 2 {
		c.country = [2]byte{a.Country[0], a.Country[1]}
	}
	if a.HasCoords {
		c.coords, c.lat, c.lon = true, float32(a.Lat), float32(a.Lon)
	}
	return c
}

// sameNetwork: the same autonomous system (mobile CGNAT churn, a dual-stack
// client alternating IPv4 and IPv6 of one provider, DHCP renewals), or, when
// the ASN is unknown, the same /24 or /48.
func (c *netctx) sameNetwork(o *netctx) bool {
	if c.asn != 0 && o.asn != 0 {
		return c.asn == o.asn
	}
	return c.prefix != 0 && c.prefix == o.prefix
}

// otherClient: both fingerprints are known and differ in user agent or
// device: another program or machine.
func (c *netctx) otherClient(o *netctx) bool {
	if c.ua != 0 && o.ua != 0 && c.ua != o.ua {
		return true
	}
	return c.dev != 0 && o.dev != 0 && c.dev != o.dev
}

// km is the great-circle distance between two located contexts (-1 when
// either is not located: then only countries are compared, see far).
func (c *netctx) km(o *netctx) float64 {
	if !c.coords || !o.coords {
		return -1
	}
	return haversine(float64(c.lat), float64(c.lon), float64(o.lat), float64(o.lon))
}

// tooFast reports whether going from o (at to) to c (at tc, unix
// nanoseconds) needs more than MaxSpeedKmh over more than MinTravelKm, and
// the distance (-1: unknown). Without coordinates, another country reached
// within an hour counts as too fast.
func tooFast(c *netctx, tc int64, o *netctx, to int64, cfg *Config) (bool, float64) {
	dt := time.Duration(tc - to)
	if dt < 0 {
		dt = -dt
	}
	d := c.km(o)
	if d < 0 {
		if c.country != [2]byte{} && o.country != [2]byte{} && c.country != o.country && dt < time.Hour {
			return true, -1
		}
		return false, -1
	}
	if d <= cfg.MinTravelKm {
		return false, d
	}
	h := dt.Hours()
	if h <= 0 {
		return true, d
	}
	return d/h > cfg.MaxSpeedKmh, d
}

func haversine(lat1, lon1, lat2, lon2 float64) float64 {
	const r = 6371.0
	rad := math.Pi / 180
	dlat, dlon := (lat2-lat1)*rad, (lon2-lon1)*rad
	s := math.Sin(dlat/2)*math.Sin(dlat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dlon/2)*math.Sin(dlon/2)
	return 2 * r * math.Asin(math.Min(1, math.Sqrt(s)))
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func strHash(s string) uint64 {
	if s == "" {
		return 0
	}
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h | 1
}

// uaHash hashes a user agent without its digits, so that a browser or app
// update (Chrome/126 -> Chrome/127) is the same client.
func uaHash(s string) uint64 {
	if s == "" {
		return 0
	}
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b >= '0' && b <= '9' {
			continue
		}
		h ^= uint64(b)
		h *= fnvPrime
	}
	return h | 1
}

// prefixHash hashes the /24 of an IPv4 address or the /48 of an IPv6 one.
func prefixHash(a netip.Addr) uint64 {
	h := uint64(fnvOffset)
	if a.Is4() {
		b := a.As4()
		for _, x := range b[:3] {
			h ^= uint64(x)
			h *= fnvPrime
		}
		return h | 1
	}
	b := a.As16()
	h ^= 6
	h *= fnvPrime
	for _, x := range b[:6] {
		h ^= uint64(x)
		h *= fnvPrime
	}
	return h | 1
}

// sourceKey is the address failed sign-ins are counted by: the address for
// IPv4, its /64 for IPv6 (one host).
func sourceKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// fam is one familiar value of a user's history: when it was last seen.
type fam[T comparable] struct {
	v           T
	first, last int64 // unix nanoseconds
}

// famSet is a small bounded set of familiar values; the least recently
// seen is replaced when it is full.
type famSet[T comparable] []fam[T]

// has reports whether v is familiar at now: first seen at least
// Config.FamiliarAfter before (a network an attacker has used for ten
// minutes is not familiar) and last seen within Config.ProfileRetention.
func (s famSet[T]) has(v T, now int64, cfg *Config) bool {
	for i := range s {
		if s[i].v == v {
			return now-s[i].last <= int64(cfg.ProfileRetention) && now-s[i].first >= int64(cfg.FamiliarAfter)
		}
	}
	return false
}

func (s *famSet[T]) see(v T, now int64, max int) {
	var zero T
	if v == zero {
		return
	}
	for i := range *s {
		if (*s)[i].v == v {
			(*s)[i].last = maxInt64((*s)[i].last, now)
			return
		}
	}
	if len(*s) < max {
		*s = append(*s, fam[T]{v: v, first: now, last: now})
		return
	}
	oldest := 0
	for i := range *s {
		if (*s)[i].last < (*s)[oldest].last {
			oldest = i
		}
	}
	(*s)[oldest] = fam[T]{v: v, first: now, last: now}
}

func maxInt64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// Bounds of one user's history.
const (
	maxFamASN     = 16
	maxFamCountry = 8
	maxFamUA      = 12
	maxFamDev     = 8
)

// profile is a user's history as the sign-in detectors see it: the
// networks, countries, browsers and devices of the user's own successful,
// unflagged activity, and the last located one.
type profile struct {
	signIns int
	asns    famSet[uint32]
	// churn counts, per familiar network (same order as asns' values are
	// looked up by asn), how often the user's /24 or /48 changed in it:
	// a network where it changes all the time is a mobile carrier's
	// CGNAT or an in-flight network, whose addresses say nothing of
	// where the user is.
	churn     []asnChurn
	countries famSet[[2]byte]
	uas       famSet[uint64]
	devs      famSet[uint64]
	last      use // last located activity
	// failures for brute force and second-factor attacks
	pwFails  []stamp
	mfaFails []stamp
	supp     suppressor
}

// asnChurn counts prefix changes within one network of a user's.
type asnChurn struct {
	asn     uint32
	prefix  uint64
	changes uint16
}

// mobileChurn is how many prefix changes make a network mobile-like.
const mobileChurn = 3

func (p *profile) seePrefix(asn uint32, prefix uint64) {
	if asn == 0 || prefix == 0 {
		return
	}
	for i := range p.churn {
		if c := &p.churn[i]; c.asn == asn {
			if c.prefix != prefix {
				c.prefix = prefix
				if c.changes < 1<<15 {
					c.changes++
				}
			}
			return
		}
	}
	if len(p.churn) >= maxFamASN {
		p.churn = p.churn[1:]
	}
	p.churn = append(p.churn, asnChurn{asn: asn, prefix: prefix})
}

// mobileLike: the user's addresses in this network keep changing.
func (p *profile) mobileLike(asn uint32) bool {
	if p == nil || asn == 0 {
		return false
	}
	for i := range p.churn {
		if p.churn[i].asn == asn {
			return p.churn[i].changes >= mobileChurn
		}
	}
	return false
}

// stamp is an event at a time (the evidence of counters).
type stamp struct {
	t  int64 // unix nanoseconds
	id string
}

// use is a context seen at a time, with the activity that showed it.
type use struct {
	c           netctx
	first, last int64 // unix nanoseconds
	id          string
	lastID      string
	set         bool
}

// learn records a successful, unflagged activity of the user: sign-ins
// and grants, which Ward itself saw from the user's client (a resource may
// see a server of the client's, so token uses are not learned).
func (p *profile) learn(a *activity.Activity, c *netctx) {
	n := a.Time.UnixNano()
	if a.Kind == activity.KindSignIn || a.Kind == activity.KindSSOSignIn {
		p.signIns++
	}
	p.asns.see(c.asn, n, maxFamASN)
	p.seePrefix(c.asn, c.prefix)
	p.countries.see(c.country, n, maxFamCountry)
	p.uas.see(c.ua, n, maxFamUA)
	p.devs.see(c.dev, n, maxFamDev)
	if c.coords && (!p.last.set || n >= p.last.last) {
		p.last = use{c: *c, first: n, last: n, id: a.ID, lastID: a.ID, set: true}
	}
}

// familiarNet: the organisation's network (Config.CorporateASNs and
// CorporateIPs) or one in the user's own history.
func familiarNet(cfg *Config, p *profile, c *netctx, now int64) bool {
	if c.corp {
		return true
	}
	return c.asn != 0 && p != nil && p.asns.has(c.asn, now, cfg)
}

// suppressor remembers which detection types were reported recently about
// one subject.
type suppressor []struct {
	typ   string
	until int64
}

// allow reports whether typ may be reported at t, and if so starts its
// window.
func (s *suppressor) allow(typ string, t int64, window time.Duration) bool {
	for i := range *s {
		if (*s)[i].typ == typ {
			if t < (*s)[i].until {
				return false
			}
			(*s)[i].until = t + int64(window)
			return true
		}
	}
	*s = append(*s, struct {
		typ   string
		until int64
	}{typ, t + int64(window)})
	return true
}
