package backtest

import (
	"container/heap"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"time"

	"github.com/ward-idp/ward/internal/activity"
)

// GenOptions says what traffic to generate.
type GenOptions struct {
	Users int
	Days  int
	Seed  uint64
	// Start is midnight (UTC) of the first day, a Monday by default.
	Start time.Time
	// HistoryDays: no attack in the first days, which build the
	// detectors' history (score with --history-until Start+HistoryDays).
	HistoryDays int
	// Attacks is how many attacks of each kind (spread over the days
	// after the history, on distinct victims where the kind allows).
	Attacks int
	// Kinds limits the attack kinds (nil: all of AttackKinds).
	Kinds []string
}

// Label is one attack of the generated traffic: its kind, its victim and
// the ids of the attacker's events (and of Ward's refusals they caused).
// Labels are written to a file of their own: the detectors never see them.
type Label struct {
	Attack  string    `json:"attack"`
	Kind    string    `json:"kind"`
	Evasive bool      `json:"evasive,omitempty"`
	User    string    `json:"user,omitempty"`
	Session string    `json:"session_id,omitempty"`
	Start   time.Time `json:"t"`
	Events  []string  `json:"events"`
}

// Attack kinds. The evasive ones imitate the victim's client exactly
// (user agent copied) with an unbound credential: what network features
// alone can and cannot see (docs/risk.md says which are caught).
var AttackKinds = []string{
	"bound_refresh_wrong_key", "bound_access_wrong_key", "bound_access_no_proof",
	"bearer_token_replay", "bearer_token_replay_copied_ua",
	"refresh_token_reuse", "refresh_token_race", "authorization_code_reuse",
	"sso_cookie_theft", "sso_cookie_theft_copied_ua", "sso_cookie_theft_dbsc",
	"anomalous_token_unknown_jti", "anomalous_token_lifetime", "anomalous_token_audience",
	"stolen_password_signin", "impossible_travel", "tor_signin", "malicious_ip_signin",
	"password_spray", "brute_force", "mfa_attack",
	"external_credential_compromise", "edr_token_theft",
}

var evasiveKinds = map[string]bool{"bearer_token_replay_copied_ua": true, "sso_cookie_theft_copied_ua": true}

// Resources and clients of the generated organisation.
const (
	apiResource     = "https://api.example.com"
	payrollResource = "https://payroll.example.com"
	tokenLifetime   = 30 * time.Minute
	refreshEvery    = 25 * time.Minute
	sessionLifetime = 7 * 24 * time.Hour
)

// GenMaxTokenLifetime is the longest access-token lifetime in the
// generated traffic plus margin: score it with this MaxTokenLifetime.
const GenMaxTokenLifetime = time.Hour

type cl struct {
	client, ua, jkt, device string
	bound                   bool // DPoP-bound tokens
	gen                     int
	token                   string
	tokenAt                 time.Time
	tokens                  []issued // recent tokens (for stale-token attacks)
}

type issued struct {
	id string
	at time.Time
}

type sess struct {
	id      string
	started time.Time
	dbsc    string // the browser's DBSC key, "": not DBSC
	clients map[string]*cl
}

type person struct {
	idx                       int
	id                        string
	home                      string
	homeNet                   *network
	homeSub                   byte
	v6sub                     uint16
	mobile                    *network
	browser, mailUA           string
	laptopDev, phoneDev       string
	office                    bool
	officeCity                string
	wfh                       [5]bool
	corpVPN, commVPN, relay   bool
	dualStack, legacy, mfa    bool
	traveller                 bool
	travelDay                 int
	dest                      string
	vpnDays                   [2]int
	vpnCity                   string
	newBrowserDay             int
	offset                    time.Duration // local time = UTC + offset
	laptop, phone             *sess
	portalKey, mailKey, dbscK string
	victim                    bool
}

type actKind int

const (
	actPhone actKind = iota
	actLaptopStart
	actLaptop
	actAttack
)

type action struct {
	t      time.Time
	kind   actKind
	p      *person
	pl     place
	api    place // where the laptop reaches the API from (split-tunnel VPN)
	attack *plan
}

type plan struct {
	kind string
	n    int
	p    *person
	day  int
}

type gen struct {
	o      GenOptions
	r      *rand.Rand
	w      *world
	people []*person
	write  func(*activity.Activity) error
	// pending: events generated ahead of the action being run (an
	// attack's later steps), written in time order as the day goes on.
	pending evHeap
	labels  []Label
	seq     uint64
	buf     []activity.Activity
	// label being filled by the attack executing now
	cur *Label
}

// Generate writes labelled traffic: activity lines to events (oldest
// first, within seconds) and one label per attack to labels (JSON lines).
func Generate(o GenOptions, events, labels io.Writer) error {
	if o.Users < 20 || o.Days < 1 {
		return errors.New("generate: at least 20 users and one day")
	}
	if o.Start.IsZero() {
		o.Start = time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC) // a Monday
	}
	if o.HistoryDays >= o.Days {
		return errors.New("generate: the history must leave days for attacks")
	}
	kinds := o.Kinds
	if kinds == nil {
		kinds = AttackKinds
	}
	for _, k := range kinds {
		if !slices.Contains(AttackKinds, k) {
			return fmt.Errorf("generate: unknown attack kind %q", k)
		}
	}
	g := &gen{o: o, r: rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15)), w: newWorld()}
	g.write = func(a *activity.Activity) error {
		b, err := activity.Marshal(a)
		if err != nil {
			return err
		}
		b = append(b, '\n')
		_, err = events.Write(b)
		return err
	}
	g.makePeople()
	plans := g.planAttacks(kinds)
	var carry []action
	for d := 0; d < o.Days; d++ {
		acts := carry
		carry = nil
		for _, p := range g.people {
			acts = g.day(acts, p, d)
		}
		for _, pl := range plans {
			if pl.day == d {
				acts = append(acts, action{t: g.attackTime(pl), kind: actAttack, p: pl.p, attack: pl})
			}
		}
		sort.SliceStable(acts, func(i, j int) bool { return acts[i].t.Before(acts[j].t) })
		// A day's late evening in the Americas is the next day's morning
		// in Europe: actions after the next day's earliest ones wait.
		if d < o.Days-1 {
			cut := o.Start.Add(time.Duration(d+1)*24*time.Hour + 5*time.Hour)
			i := sort.Search(len(acts), func(i int) bool { return !acts[i].t.Before(cut) })
			carry = append(carry, acts[i:]...)
			acts = acts[:i]
		}
		for i := range acts {
			if err := g.flush(acts[i].t); err != nil {
				return err
			}
			if err := g.run(&acts[i]); err != nil {
				return err
			}
		}
	}
	if err := g.flush(time.Time{}); err != nil {
		return err
	}
	enc := json.NewEncoder(labels)
	for i := range g.labels {
		if err := enc.Encode(&g.labels[i]); err != nil {
			return err
		}
	}
	return nil
}

// AnonymousList and MaliciousList are the IP list files of the generated
// world (Tor exits; a deny-listed range).
func AnonymousList() string {
	return "# Tor exit nodes of the generated world\n" + newWorld().torPrefix.String() + "\n"
}

// MaliciousList is the deny list of the generated world.
func MaliciousList() string {
	return "# deny-listed range of the generated world\n" + newWorld().evilPrefix.String() + "\n"
}

func (g *gen) makePeople() {
	r := g.r
	for i := 0; i < g.o.Users; i++ {
		home := pick(r, homeCities)
		cc := cities[home].country
		p := &person{idx: i, id: userID(i), home: home, homeNet: pick(r, g.w.home[cc]), homeSub: byte(r.IntN(250)), v6sub: uint16(r.IntN(65000)),
			mobile: g.w.mobile[cc], browser: pick(r, browsers), mailUA: pick(r, mailApps),
			dualStack: r.Float64() < 0.5, legacy: r.Float64() < 0.35, mfa: r.Float64() < 0.8,
			portalKey: randKey(r), mailKey: randKey(r)}
		if r.Float64() < 0.6 {
			p.laptopDev = "dev-" + randHex(r, 12)
		}
		if r.Float64() < 0.7 {
			p.phoneDev = "dev-" + randHex(r, 12)
		}
		if r.Float64() < 0.4 {
			p.dbscK = randKey(r)
		}
		p.offset = time.Duration(math.Round(cities[home].lon/15)) * time.Hour
		if r.Float64() < 0.6 && slices.Contains(g.w.offices, home) {
			p.office = true
			p.officeCity = home
			for d := range p.wfh {
				p.wfh[d] = r.Float64() < 0.3
			}
		}
		p.corpVPN = r.Float64() < 0.3
		if r.Float64() < 0.1 {
			p.commVPN = true
			p.vpnDays = [2]int{r.IntN(g.o.Days), r.IntN(g.o.Days)}
			p.vpnCity = pick(r, []string{"amsterdam", "newyork", "singapore", "london", "stockholm", "toronto"})
		}
		p.relay = p.browser == browsers[2] && r.Float64() < 0.5
		if r.Float64() < 0.08 && g.o.Days > 2 {
			p.traveller = true
			p.travelDay = 1 + r.IntN(g.o.Days-1)
			for p.dest = pick(r, destinations); cities[p.dest].country == cc; p.dest = pick(r, destinations) {
			}
		}
		p.newBrowserDay = -1
		if r.Float64() < 0.02 {
			p.newBrowserDay = 1 + r.IntN(g.o.Days-1)
		}
		g.people = append(g.people, p)
	}
}

func haversineKm(lat1, lon1, lat2, lon2 float64) float64 {
	rad := math.Pi / 180
	dlat, dlon := (lat2-lat1)*rad, (lon2-lon1)*rad
	s := math.Sin(dlat/2)*math.Sin(dlat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dlon/2)*math.Sin(dlon/2)
	return 2 * 6371 * math.Asin(math.Min(1, math.Sqrt(s)))
}

// Places of a person.
func (g *gen) homePlace(p *person) place {
	if p.dualStack && g.r.IntN(2) == 0 {
		return at(p.homeNet, p.homeNet.v6Addr(p.v6sub, uint64(p.idx)+1), p.home, 0.02, g.r)
	}
	return at(p.homeNet, p.homeNet.v4Addr(p.homeSub, byte(2+p.idx%250)), p.home, 0.02, g.r)
}

func (g *gen) mobilePlace(p *person) place {
	n := p.mobile
	// CGNAT: a new address from the carrier's pool; geolocation anywhere
	// within a few hundred kilometres.
	return at(n, n.v4Addr(byte(g.r.IntN(256)), byte(1+g.r.IntN(254))), p.home, 2.5, g.r)
}

func (g *gen) officePlace(p *person) place {
	n := g.w.office
	i := slices.Index(g.w.offices, p.officeCity)
	return at(n, n.v4Addr(byte(10+i), byte(1+g.r.IntN(254))), p.officeCity, 0.01, g.r)
}

func (g *gen) corpVPNPlace(p *person) place {
	n := g.w.corpVPN
	c, sub := "amsterdam", byte(1)
	if cities[p.home].country == "US" {
		c, sub = "ashburn", 2
	}
	return at(n, n.v4Addr(sub, byte(1+g.r.IntN(30))), c, 0, g.r)
}

func (g *gen) commVPNPlace(p *person) place {
	n := g.w.commVPN[p.idx%2]
	i := slices.Index([]string{"amsterdam", "newyork", "singapore", "london", "stockholm", "toronto"}, p.vpnCity)
	return at(n, n.v4Addr(byte(40+i), byte(1+g.r.IntN(254))), p.vpnCity, 0, g.r)
}

func (g *gen) relayPlace(p *person) place {
	n := g.w.relay
	return at(n, n.v4Addr(byte(g.r.IntN(256)), byte(1+g.r.IntN(254))), p.home, 0.8, g.r)
}

func (g *gen) inflightPlace() place {
	n := g.w.inflight
	return at(n, n.v4Addr(byte(g.r.IntN(256)), byte(1+g.r.IntN(254))), "lakeforest", 0, g.r)
}

func (g *gen) hotelPlace(p *person) place {
	cc := cities[p.dest].country
	n := g.w.home[cc][p.idx%2]
	return at(n, n.v4Addr(byte(200+p.idx%50), byte(1+g.r.IntN(254))), p.dest, 0.02, g.r)
}

// day schedules one person's day.
func (g *gen) day(acts []action, p *person, d int) []action {
	r := g.r
	base := g.o.Start.Add(time.Duration(d) * 24 * time.Hour).Add(-p.offset)
	local := func(h float64) time.Time {
		return base.Add(time.Duration(h*3600) * time.Second).Add(time.Duration(r.IntN(300)) * time.Second)
	}
	weekday := d%7 < 5
	abroad := p.traveller && d > p.travelDay
	travelling := p.traveller && d == p.travelDay
	if p.newBrowserDay == d {
		p.browser = pick(r, browsers)
		p.laptop = nil
	}
	// The phone: every 20-40 minutes from 07:00 to 23:00.
	for h := 7.0 + r.Float64(); h < 23; h += 0.33 + r.Float64()*0.33 {
		var pl place
		switch {
		case travelling && h >= 11 && h < 11+g.flightHours(p):
			pl = g.inflightPlace()
		case abroad || (travelling && h >= 11):
			if r.IntN(2) == 0 {
				pl = g.hotelPlace(p)
			} else {
				pl = g.mobilePlace(p) // roaming: the home carrier's addresses
			}
		case h < 8 || h >= 18.5:
			if r.Float64() < 0.8 {
				pl = g.homePlace(p)
			} else {
				pl = g.mobilePlace(p)
			}
		case weekday && p.office && !p.wfh[d%7] && h >= 9 && h < 17.5:
			if r.Float64() < 0.6 {
				pl = g.officePlace(p)
			} else {
				pl = g.mobilePlace(p)
			}
		case h < 9 || h >= 17.5:
			pl = g.mobilePlace(p)
		default:
			if r.Float64() < 0.7 {
				pl = g.homePlace(p)
			} else {
				pl = g.mobilePlace(p)
			}
		}
		acts = append(acts, action{t: local(h), kind: actPhone, p: p, pl: pl})
	}
	// The laptop: working hours on weekdays, some evenings.
	type span struct{ from, to float64 }
	var spans []span
	switch {
	case travelling:
		spans = []span{{7.5, 9}, {11.5, 11 + g.flightHours(p) - 0.5}, {11 + g.flightHours(p) + 1.5, 22}}
	case weekday:
		spans = []span{{9, 17.5}}
		if r.Float64() < 0.3 {
			spans = append(spans, span{20, 21.5})
		}
	default:
		if r.Float64() < 0.3 {
			spans = []span{{19, 21}}
		}
	}
	for _, sp := range spans {
		first := true
		for h := sp.from; h < sp.to; h += 0.08 + r.Float64()*0.1 {
			var pl, api place
			switch {
			case travelling && h >= 11 && h < 11+g.flightHours(p):
				pl = g.inflightPlace()
			case abroad || (travelling && h >= 11):
				pl = g.hotelPlace(p)
			case p.commVPN && (p.vpnDays[0] == d || p.vpnDays[1] == d) && h >= 19:
				pl = g.commVPNPlace(p)
			case weekday && p.office && !p.wfh[d%7] && h < 17.5:
				pl = g.officePlace(p)
			case p.relay:
				pl = g.relayPlace(p)
			default:
				pl = g.homePlace(p)
			}
			api = pl
			if p.corpVPN && pl.net == p.homeNet {
				api = g.corpVPNPlace(p) // split tunnel: the API through the VPN
			}
			k := actLaptop
			if first {
				k, first = actLaptopStart, false
			}
			acts = append(acts, action{t: local(h), kind: k, p: p, pl: pl, api: api})
		}
	}
	return acts
}

func (g *gen) flightHours(p *person) float64 {
	h, d := cities[p.home], cities[p.dest]
	return math.Max(1.5, haversineKm(h.lat, h.lon, d.lat, d.lon)/800)
}

// ev starts an activity of p at pl.
func (g *gen) ev(t time.Time, kind activity.Kind, p *person, pl place) activity.Activity {
	g.seq++
	a := activity.Activity{Time: t, ID: "ev-" + randHex(g.r, 20), Kind: kind, IP: pl.ip, Result: activity.ResultSuccess}
	if p != nil {
		a.UserID = p.id
	}
	if pl.net != nil {
		a.ASN, a.ASOrg = pl.net.asn, pl.net.org
		a.Country, a.City, a.Lat, a.Lon, a.HasCoords = pl.country, pl.city, round4(pl.lat), round4(pl.lon), true
	}
	return a
}

func round4(v float64) float64 { return math.Round(v*1e4) / 1e4 }

func (g *gen) emit(a activity.Activity) error {
	if g.cur != nil {
		g.cur.Events = append(g.cur.Events, a.ID)
		if g.cur.Start.IsZero() || a.Time.Before(g.cur.Start) {
			g.cur.Start = a.Time
		}
	}
	heap.Push(&g.pending, a)
	return nil
}

// flush writes the pending events up to t (all of them for zero t).
func (g *gen) flush(t time.Time) error {
	for g.pending.Len() > 0 && (t.IsZero() || !g.pending[0].Time.After(t)) {
		a := heap.Pop(&g.pending).(activity.Activity)
		if err := g.write(&a); err != nil {
			return err
		}
	}
	return nil
}

// evHeap orders activities by time, then by generation order.
type evHeap []activity.Activity

func (h evHeap) Len() int           { return len(h) }
func (h evHeap) Less(i, j int) bool { return h[i].Time.Before(h[j].Time) }
func (h evHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *evHeap) Push(x any)        { *h = append(*h, x.(activity.Activity)) }
func (h *evHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (g *gen) run(a *action) error {
	p := a.p
	switch a.kind {
	case actPhone:
		at := a.t.Add(5 * time.Second)
		if p.phone == nil {
			s, err := g.signIn(a.t, p, a.pl, p.mailUA, p.phoneDev, "mail", p.mailKey, "")
			if err != nil {
				return err
			}
			p.phone, at = s, a.t.Add(time.Minute)
		}
		return g.clientActivity(at, p, p.phone, "mail", a.pl, a.pl, p.mailUA)
	case actLaptopStart, actLaptop:
		at := a.t.Add(5 * time.Second)
		if p.laptop == nil || a.t.Sub(p.laptop.started) > sessionLifetime {
			s, err := g.signIn(a.t, p, a.pl, p.browser, p.laptopDev, "portal", p.portalKey, p.dbscK)
			if err != nil {
				return err
			}
			p.laptop, at = s, a.t.Add(time.Minute)
		} else if a.kind == actLaptopStart {
			if err := g.ssoSignIn(a.t, p, p.laptop, a.pl, "portal", p.portalKey, p.browser, p.laptopDev); err != nil {
				return err
			}
		}
		if err := g.clientActivity(at, p, p.laptop, "portal", a.pl, a.api, p.browser); err != nil {
			return err
		}
		if p.legacy {
			if a.kind == actLaptopStart && p.laptop.clients["reports"] == nil {
				if err := g.ssoSignIn(at.Add(20*time.Second), p, p.laptop, a.pl, "reports", "", p.browser, p.laptopDev); err != nil {
					return err
				}
			}
			return g.clientActivity(at.Add(30*time.Second), p, p.laptop, "reports", a.pl, a.api, reportsApp)
		}
		return nil
	case actAttack:
		return g.attack(a)
	}
	return nil
}

// signIn: an interactive sign-in (sometimes after a typo) and a new
// session.
func (g *gen) signIn(t time.Time, p *person, pl place, ua, dev, client, key, dbsc string) (*sess, error) {
	r := g.r
	// Typos first, then the sign-in: never an event before its action.
	if r.Float64() < 0.03 {
		for i := 0; i < 1+r.IntN(2); i++ {
			f := g.ev(t.Add(time.Duration(i*15)*time.Second), activity.KindSignIn, p, pl)
			f.ClientID, f.UserAgent, f.Result, f.Reason = client, ua, activity.ResultFailure, "invalid_credentials"
			if err := g.emit(f); err != nil {
				return nil, err
			}
		}
	}
	if p.mfa && r.Float64() < 0.02 {
		f := g.ev(t.Add(35*time.Second), activity.KindSignIn, p, pl)
		f.ClientID, f.UserAgent, f.Result, f.Reason = client, ua, activity.ResultFailure, "invalid_totp"
		if err := g.emit(f); err != nil {
			return nil, err
		}
	}
	t = t.Add(40 * time.Second)
	s := &sess{id: "ses-" + randHex(r, 16), started: t, dbsc: dbsc, clients: map[string]*cl{}}
	a := g.ev(t, activity.KindSignIn, p, pl)
	a.SessionID, a.ClientID, a.UserAgent, a.DeviceID, a.JKT, a.MFA = s.id, client, ua, dev, key, p.mfa
	if err := g.emit(a); err != nil {
		return nil, err
	}
	return s, g.grant(t.Add(2*time.Second), p, s, client, pl, ua, dev, key)
}

// ssoSignIn: /authorize with the SSO cookie, then the code exchange.
func (g *gen) ssoSignIn(t time.Time, p *person, s *sess, pl place, client, key, ua, dev string) error {
	a := g.ev(t, activity.KindSSOSignIn, p, pl)
	a.SessionID, a.ClientID, a.UserAgent, a.DeviceID, a.JKT, a.MFA, a.Proof = s.id, client, ua, dev, key, p.mfa, activity.ProofNone
	if s.dbsc != "" {
		a.Proof, a.BoundJKT = activity.ProofOK, s.dbsc
	}
	if err := g.emit(a); err != nil {
		return err
	}
	cua := ua
	if client == "reports" {
		cua = reportsApp
	}
	return g.grant(t.Add(2*time.Second), p, s, client, pl, cua, dev, key)
}

// grant: a code exchange issuing an access token and refresh token gen 1.
func (g *gen) grant(t time.Time, p *person, s *sess, client string, pl place, ua, dev, key string) error {
	c := &cl{client: client, ua: ua, jkt: key, device: dev, bound: key != ""}
	s.clients[client] = c
	a := g.ev(t, activity.KindToken, p, pl)
	a.SessionID, a.ClientID, a.UserAgent, a.DeviceID, a.Grant, a.MFA = s.id, client, ua, dev, "authorization_code", p.mfa
	a.RefreshGenIssued, a.Resource = 1, apiResource
	a.Proof = activity.ProofNone
	if key != "" {
		a.JKT, a.Proof = key, activity.ProofOK
	}
	c.gen = 1
	c.newToken(g, t)
	a.TokenID = c.token
	return g.emit(a)
}

func (c *cl) newToken(g *gen, t time.Time) {
	c.token, c.tokenAt = "at-"+randHex(g.r, 22), t
	c.tokens = append(c.tokens, issued{c.token, t})
	if len(c.tokens) > 64 {
		c.tokens = c.tokens[1:]
	}
}

// clientActivity: a refresh when the token is due, then uses at the API.
func (g *gen) clientActivity(t time.Time, p *person, s *sess, client string, pl, api place, ua string) error {
	c := s.clients[client]
	if c == nil {
		return nil
	}
	if t.Sub(c.tokenAt) >= refreshEvery {
		a := g.ev(t, activity.KindRefresh, p, pl)
		a.SessionID, a.ClientID, a.UserAgent, a.DeviceID, a.Grant, a.MFA = s.id, client, ua, c.device, "refresh_token", p.mfa
		a.RefreshGenPresented, a.RefreshGenIssued, a.Resource = c.gen, c.gen+1, apiResource
		a.Proof = activity.ProofNone
		if c.bound {
			a.JKT, a.BoundJKT, a.Proof = c.jkt, c.jkt, activity.ProofOK
		}
		c.gen++
		c.newToken(g, t)
		a.TokenID = c.token
		if err := g.emit(a); err != nil {
			return err
		}
	}
	u := g.ev(t.Add(time.Second), activity.KindTokenUse, p, api)
	u.SessionID, u.ClientID, u.UserAgent, u.DeviceID, u.TokenID, u.Resource = s.id, client, ua, c.device, c.token, apiResource
	u.Count = 1 + g.r.IntN(20)
	u.Proof = activity.ProofNone
	if c.bound {
		u.JKT, u.BoundJKT, u.Proof = c.jkt, c.jkt, activity.ProofOK
	}
	return g.emit(u)
}
