package detect

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/risk/assess"
)

// rules is a Config with its lookups prepared.
type rules struct {
	cfg       Config
	exemptASN map[uint32]bool
	corpASN   map[uint32]bool
}

func compile(cfg Config) *rules {
	r := &rules{cfg: withDefaults(cfg), exemptASN: map[uint32]bool{}, corpASN: map[uint32]bool{}}
	for _, a := range r.cfg.ExemptASNs {
		r.exemptASN[a] = true
	}
	for _, a := range r.cfg.CorporateASNs {
		r.corpASN[a] = true
	}
	return r
}

// withDefaults fills cfg's zero (or negative) fields from DefaultConfig.
func withDefaults(c Config) Config {
	d := DefaultConfig()
	setInt := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setDur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	setInt(&c.MaxSessions, d.MaxSessions)
	setInt(&c.MaxUsers, d.MaxUsers)
	setInt(&c.MaxTokens, d.MaxTokens)
	setInt(&c.MaxSources, d.MaxSources)
	setInt(&c.SeenIDs, d.SeenIDs)
	setDur(&c.SessionIdle, d.SessionIdle)
	setDur(&c.ProfileRetention, d.ProfileRetention)
	setDur(&c.FamiliarAfter, d.FamiliarAfter)
	setDur(&c.ConcurrentWindow, d.ConcurrentWindow)
	setDur(&c.RefreshGrace, d.RefreshGrace)
	setDur(&c.MaxTokenLifetime, d.MaxTokenLifetime)
	setDur(&c.ClockSkew, d.ClockSkew)
	setDur(&c.Suppress, d.Suppress)
	setInt(&c.MinHistory, d.MinHistory)
	setInt(&c.OrgNetworkUsers, d.OrgNetworkUsers)
	setInt(&c.MaxNetworks, d.MaxNetworks)
	if c.MaxSpeedKmh <= 0 {
		c.MaxSpeedKmh = d.MaxSpeedKmh
	}
	if c.MinTravelKm <= 0 {
		c.MinTravelKm = d.MinTravelKm
	}
	setInt(&c.SprayUsers, d.SprayUsers)
	setDur(&c.SprayWindow, d.SprayWindow)
	setInt(&c.BruteForceFailures, d.BruteForceFailures)
	setDur(&c.BruteForceWindow, d.BruteForceWindow)
	setInt(&c.MFAFailures, d.MFAFailures)
	if c.Signals == nil {
		c.Signals = d.Signals
	}
	return c
}

// session is what an Engine keeps of one SSO session (or, for tokens
// without one, of one client).
type session struct {
	user string
	// browsers: the contexts of the browser that holds the SSO cookie (the
	// sign-in that created the session, its successful SSO sign-ins).
	browsers [maxBrowsers]use
	clients  []clientState
	supp     suppressor
}

const (
	maxBrowsers      = 3
	maxClientUses    = 4
	maxClientsPerSes = 8
	maxSourceFails   = 64
	maxEvidence      = 20
)

// clientState is one client's use of a session: its recent contexts and
// the refresh-token generation it holds.
type clientState struct {
	client string
	uses   [maxClientUses]use
	// families: the refresh-token chains of this client in the session
	// (one per code or device-code grant), each by its latest generation.
	families [maxFamilies]family
}

// family is one refresh-token chain: the latest generation issued, when,
// to which context, by which activity.
type family struct {
	gen int
	at  int64
	c   netctx
	id  string
}

const maxFamilies = 4

// token is an access token Ward issued, as its grant recorded it.
type token struct {
	issued                int64
	user, session, client string
	bound                 uint64
	resources             string // space-separated audiences requested; "": unknown
	id                    string
	flagged               bool
}

// source is one source address's recent failed sign-ins.
type source struct {
	fails []srcFail
	// sprayUntil: the source was found spraying; a success from it
	// before then is a sprayed account taken over.
	sprayUntil int64
	sprayIDs   []string
	supp       suppressor
}

type srcFail struct {
	user string // "": an unknown name (each counts as another account)
	t    int64
	id   string
}

// Engine keeps the bounded state (per session, token, user and source)
// the stateful detectors need and runs every detector over each activity.
// It is safe for concurrent use (one lock: its work per activity is a few
// microseconds).
type Engine struct {
	mu    sync.Mutex
	r     *rules
	stats Stats

	// seen: the hashes of the activity ids observed lately (a ring of
	// Config.SeenIDs); 64-bit FNV, so a collision is one in ~10^10 at
	// the default size.
	seen     idSet
	seenRing []uint64
	seenNext int

	sessions *lru[string, session]
	users    *lru[string, profile]
	tokens   *lru[string, token]
	sources  *lru[string, source]
	networks *lru[uint64, netUsers]

	started    bool
	now        int64
	blindUntil int64 // unknown token ids are judged only after this
}

// New returns an Engine with cfg (zero fields take DefaultConfig's).
func New(cfg Config) *Engine {
	r := compile(cfg)
	e := &Engine{r: r, seen: newIDSet(r.cfg.SeenIDs), seenRing: make([]uint64, r.cfg.SeenIDs)}
	e.stats.Findings = map[string]uint64{}
	c := &r.cfg
	e.sessions = newLRU[string, session](c.MaxSessions, c.SessionIdle, &e.stats.Evicted, &e.stats.Expired)
	e.users = newLRU[string, profile](c.MaxUsers, c.ProfileRetention, &e.stats.Evicted, &e.stats.Expired)
	// A token is kept for twice its longest lifetime after its last use,
	// so that a use past its lifetime is named as such, not as unknown.
	e.tokens = newLRU[string, token](c.MaxTokens, 2*(c.MaxTokenLifetime+c.ClockSkew), &e.stats.Evicted, &e.stats.Expired)
	e.sources = newLRU[string, source](c.MaxSources, max(c.SprayWindow, c.BruteForceWindow), &e.stats.Evicted, &e.stats.Expired)
	e.networks = newLRU[uint64, netUsers](c.MaxNetworks, c.ProfileRetention, &e.stats.Evicted, &e.stats.Expired)
	// A token dropped before its lifetime ended may still be used: until
	// then, an unknown token id proves nothing.
	e.tokens.onEvict = func(_ string, t *token, _ int64, full bool) {
		if full {
			e.blindUntil = max(e.blindUntil, t.issued+int64(c.MaxTokenLifetime+c.ClockSkew))
		}
	}
	return e
}

// Config returns the configuration in effect (defaults filled in).
func (e *Engine) Config() Config { return e.r.cfg }

// Observe judges a and learns from it. An activity whose ID it has already
// observed (within Config.SeenIDs) yields nothing and is not learned twice,
// so at-least-once redelivery is harmless. Activities should come in time
// order; out of order by seconds does not break it.
func (e *Engine) Observe(a activity.Activity) []Finding {
	return e.observe(&a, true)
}

// ObserveJudged is Observe for a sign-in that was already judged before
// its code was issued (JudgeSignIn): it learns a and runs every detector
// except the sign-in family, so the sign-in's findings are not recorded
// twice.
func (e *Engine) ObserveJudged(a activity.Activity) []Finding {
	return e.observe(&a, false)
}

// Stats returns a copy of the counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.Findings = make(map[string]uint64, len(e.stats.Findings))
	for k, v := range e.stats.Findings {
		s.Findings[k] = v
	}
	s.Sessions, s.Users, s.Tokens, s.Sources = e.sessions.len(), e.users.len(), e.tokens.len(), e.sources.len()
	return s
}

// remember records id as observed and reports whether it was new.
func (e *Engine) remember(id string) bool {
	h := strHash(id)
	if e.seen.has(h) {
		return false
	}
	if old := e.seenRing[e.seenNext]; old != 0 {
		e.seen.remove(old)
	}
	e.seenRing[e.seenNext] = h
	e.seenNext = (e.seenNext + 1) % len(e.seenRing)
	e.seen.add(h)
	return true
}

// pending is a detection with its subject scope, before suppression.
type pending struct {
	assess.Detection
	scope scope
}

type scope int

const (
	scopeSession scope = iota // suppressed per session
	scopeUser                 // per user
	scopeSource               // per source address
	scopeNone                 // never suppressed (each is a distinct fact)
)

func (e *Engine) observe(a *activity.Activity, signIn bool) []Finding {
	if a.ID == "" || a.Time.IsZero() {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.remember(a.ID) {
		e.stats.Duplicates++
		return nil
	}
	e.stats.Observed++
	r := e.r
	cfg := &r.cfg
	t := a.Time.UnixNano()
	if !e.started {
		e.started = true
		e.blindUntil = t + int64(cfg.MaxTokenLifetime+cfg.ClockSkew)
	}
	if t > e.now {
		e.now = t
		e.sessions.expire(t)
		e.users.expire(t)
		e.tokens.expire(t)
		e.sources.expire(t)
	}
	c := contextOf(a, r)
	ok := a.Result != activity.ResultFailure

	var prof *profile
	if a.UserID != "" {
		pe, _ := e.users.add(a.UserID, t)
		prof = &pe.v
	}
	var ses *session
	if key := sessionKey(a); key != "" {
		se, _ := e.sessions.add(key, t)
		ses = &se.v
		if ses.user == "" {
			ses.user = a.UserID
		}
	}

	var found []pending
	add := func(s scope, d assess.Detection) { found = append(found, pending{d, s}) }

	switch a.Kind {
	case activity.KindSignIn, activity.KindSSOSignIn:
		if a.Result == activity.ResultFailure && a.Kind == activity.KindSignIn {
			for _, d := range e.failedSignIn(a, &c, prof, t) {
				add(d.scope, d.Detection)
			}
			break
		}
		if signIn {
			for _, d := range judgeSignIn(r, prof, ses, a, &c, t) {
				s := scopeUser
				if a.Kind == activity.KindSSOSignIn {
					s = scopeSession
				}
				add(s, d)
			}
		}
		// Not part of the sign-in family (it needs the sources' state):
		// judged here whether or not the sign-in was judged before.
		if src := e.sources.peek(sourceKey(a.IP)); src != nil && ok && a.Kind == activity.KindSignIn && t < src.v.sprayUntil {
			add(scopeUser, sprayTakeover(a, src.v.sprayIDs))
		}
	case activity.KindRefresh, activity.KindToken, activity.KindTokenUse:
		if d, hit := proofDetection(a); hit {
			add(scopeSession, d)
		}
		if d, hit := reuseReason(a); hit {
			// The refresh that rotated the token presented again is
			// evidence too: one of the two was not the client.
			if cs := sessionClient(ses, a); cs != nil && a.Kind == activity.KindRefresh {
				if f := cs.rotatedFrom(a.RefreshGenPresented); f != nil {
					d.Evidence = append([]string{f.id}, d.Evidence...)
				}
			}
			add(scopeSession, d)
		}
		if c.anon || c.bad {
			for _, d := range listDetections(a, &c) {
				add(scopeUser, d)
			}
		}
		if a.Kind == activity.KindTokenUse {
			if d, hit := e.anomalousToken(a, t); hit {
				add(scopeSession, d)
			}
		}
		if ses != nil && a.ClientID != "" {
			cs := ses.client(a.ClientID)
			if d, hit := refreshGeneration(cfg, cs, a, &c, t); hit {
				add(scopeSession, d)
			}
			if ok {
				if d, hit := concurrentUse(cfg, prof, cs, a, &c, t, e); hit {
					add(scopeSession, d)
				}
			}
		}
	case activity.KindSignal:
		if d, hit := signalDetection(cfg, a); hit {
			add(scopeNone, d)
		}
	}

	flagged := false
	var out []Finding
	for _, p := range found {
		flagged = true
		var supp *suppressor
		switch p.scope {
		case scopeSession:
			if ses != nil {
				supp = &ses.supp
			} else if prof != nil {
				supp = &prof.supp
			}
		case scopeUser:
			if prof != nil {
				supp = &prof.supp
			}
		case scopeSource:
			// the source's own suppressor already decided
		}
		if supp != nil && !supp.allow(p.Type, t, cfg.Suppress) {
			e.stats.Suppressed++
			continue
		}
		out = append(out, finding(a, p.Detection))
		e.stats.Findings[p.Type]++
	}
	e.learn(a, &c, prof, ses, ok, flagged, t)
	return out
}

func sessionClient(ses *session, a *activity.Activity) *clientState {
	if ses == nil || a.ClientID == "" {
		return nil
	}
	return ses.findClient(a.ClientID)
}

// netUsers counts the distinct users of one /24 or /48 (up to the
// threshold that makes it the organisation's).
type netUsers struct {
	users []uint64
}

func (n *netUsers) see(user uint64, threshold int) {
	if len(n.users) >= threshold {
		return
	}
	for _, u := range n.users {
		if u == user {
			return
		}
	}
	n.users = append(n.users, user)
}

// orgNetwork: many users work from this /24 or /48.
func (e *Engine) orgNetwork(c *netctx) bool {
	if c.prefix == 0 {
		return false
	}
	n := e.networks.peek(c.prefix)
	return n != nil && len(n.v.users) >= e.r.cfg.OrgNetworkUsers
}

// sessionKey is the session an activity belongs to, or, for a client's
// own tokens, the client.
func sessionKey(a *activity.Activity) string {
	switch {
	case a.SessionID != "":
		return a.SessionID
	case a.ClientID != "" && a.UserID == "" && (a.Kind == activity.KindToken || a.Kind == activity.KindTokenUse || a.Kind == activity.KindRefresh):
		return "client\x00" + a.ClientID
	}
	return ""
}

// findClient returns the state of one client in the session, or nil.
func (s *session) findClient(id string) *clientState {
	for i := range s.clients {
		if s.clients[i].client == id {
			return &s.clients[i]
		}
	}
	return nil
}

// client returns the state of one client in the session (the least
// recently used one is replaced when the session has too many).
func (s *session) client(id string) *clientState {
	for i := range s.clients {
		if s.clients[i].client == id {
			return &s.clients[i]
		}
	}
	if len(s.clients) < maxClientsPerSes {
		s.clients = append(s.clients, clientState{client: id})
		return &s.clients[len(s.clients)-1]
	}
	oldest, at := 0, int64(1<<63-1)
	for i := range s.clients {
		if l := s.clients[i].lastUse(); l < at {
			oldest, at = i, l
		}
	}
	s.clients[oldest] = clientState{client: id}
	return &s.clients[oldest]
}

func (cs *clientState) lastUse() int64 {
	var l int64
	for _, u := range cs.uses {
		if u.set && u.last > l {
			l = u.last
		}
	}
	return l
}

// learn updates the state with what a shows. Facts (refresh generations,
// issued tokens, failures) are always recorded; familiarity (networks,
// browsers, devices, contexts) only from successful activity no detector
// flagged, so an attacker's context never becomes familiar.
func (e *Engine) learn(a *activity.Activity, c *netctx, prof *profile, ses *session, ok, flagged bool, t int64) {
	if !ok {
		return
	}
	switch a.Kind {
	case activity.KindToken, activity.KindRefresh:
		if a.TokenID != "" {
			te, _ := e.tokens.add(a.TokenID, t)
			tk := &te.v
			*tk = token{issued: t, user: a.UserID, session: a.SessionID, client: a.ClientID, resources: a.Resource, id: a.ID, flagged: flagged}
			if a.JKT != "" && a.Proof != activity.ProofWrongKey && a.Proof != activity.ProofMissing {
				tk.bound = strHash(a.JKT)
			}
		}
	}
	if flagged {
		return
	}
	if prof != nil {
		switch a.Kind {
		case activity.KindSignIn, activity.KindSSOSignIn, activity.KindToken, activity.KindRefresh:
			prof.learn(a, c)
		case activity.KindTokenUse:
			// A resource sees the network the client reaches it from
			// (a split-tunnel VPN's egress); its user agent may be a
			// server's, so only the network is learned.
			prof.asns.see(c.asn, t, maxFamASN)
			prof.seePrefix(c.asn, c.prefix)
		}
	}
	if a.UserID != "" && c.prefix != 0 {
		ne, _ := e.networks.add(c.prefix, t)
		ne.v.see(strHash(a.UserID), e.r.cfg.OrgNetworkUsers)
	}
	if ses == nil {
		return
	}
	switch a.Kind {
	case activity.KindSignIn, activity.KindSSOSignIn:
		ses.seeBrowser(a, c, t)
	case activity.KindRefresh, activity.KindToken, activity.KindTokenUse:
		if a.ClientID != "" {
			ses.client(a.ClientID).see(a, c, t)
		}
	}
}

// seeBrowser records a context of the session's browser: the same network
// and browser updates its entry, another replaces the least recent one
// (the origin, entry 0, is kept).
func (s *session) seeBrowser(a *activity.Activity, c *netctx, t int64) {
	if !s.browsers[0].set {
		s.browsers[0] = use{c: *c, first: t, last: t, id: a.ID, lastID: a.ID, set: true}
		return
	}
	slot := -1
	for i := range s.browsers {
		b := &s.browsers[i]
		if b.set && b.c.sameNetwork(c) && b.c.ua == c.ua {
			b.last, b.lastID = maxInt64(b.last, t), a.ID
			return
		}
		if !b.set && slot < 0 {
			slot = i
		}
	}
	if slot < 0 {
		slot = 1
		for i := 2; i < maxBrowsers; i++ {
			if s.browsers[i].last < s.browsers[slot].last {
				slot = i
			}
		}
	}
	s.browsers[slot] = use{c: *c, first: t, last: t, id: a.ID, lastID: a.ID, set: true}
}

// see records a context of the client's use of the session.
func (cs *clientState) see(a *activity.Activity, c *netctx, t int64) {
	slot := -1
	for i := range cs.uses {
		u := &cs.uses[i]
		if u.set && u.c.sameNetwork(c) && u.c.ua == c.ua && u.c.dev == c.dev {
			if t > u.last {
				u.last, u.lastID = t, a.ID
			}
			u.c.prefix, u.c.coords, u.c.lat, u.c.lon = c.prefix, c.coords, c.lat, c.lon
			return
		}
		if !u.set && slot < 0 {
			slot = i
		}
	}
	if slot < 0 {
		slot = 0
		for i := range cs.uses {
			if cs.uses[i].last < cs.uses[slot].last {
				slot = i
			}
		}
	}
	cs.uses[slot] = use{c: *c, first: t, last: t, id: a.ID, lastID: a.ID, set: true}
}

// finding completes a detection with its id, time and subject.
func finding(a *activity.Activity, d assess.Detection) Finding {
	if len(d.Evidence) > maxEvidence {
		d.Evidence = d.Evidence[len(d.Evidence)-maxEvidence:]
	}
	d.Evidence = dedupe(d.Evidence)
	if d.ID == "" {
		d.ID = detectionID(d.Type, d.Evidence)
	}
	return Finding{Detection: d, Time: a.Time, UserID: a.UserID, SessionID: a.SessionID, ClientID: a.ClientID, DeviceID: a.DeviceID, IP: a.IP}
}

// detectionID is stable: the same type over the same evidence.
func detectionID(typ string, evidence []string) string {
	h := sha256.New()
	h.Write([]byte(typ))
	for _, id := range evidence {
		h.Write([]byte{0})
		h.Write([]byte(id))
	}
	return "det:" + hex.EncodeToString(h.Sum(nil)[:16])
}

func dedupe(ids []string) []string {
	out := ids[:0:0]
	for _, id := range ids {
		if id == "" {
			continue
		}
		dup := false
		for _, o := range out {
			if o == id {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, id)
		}
	}
	return out
}

// JudgeSignIn is the sign-in family (unfamiliar properties, impossible
// travel, anonymous or malicious address, an SSO cookie unlike its
// session's origin or without its browser's key) as a pure function.
// history is the user's recent activity, oldest first (the caller loads
// it, bounded, from the audit log); a is the sign-in about to happen (Kind
// signin or sso_signin; a.ID the attempt's id). Engine.Observe runs the
// same code over its own history, so a sign-in is judged alike online, at
// sign-in time and in a backtest.
//
// It compiles cfg on every call; a caller judging many sign-ins with one
// configuration compiles it once with NewJudge.
func JudgeSignIn(cfg Config, history []activity.Activity, a activity.Activity) []assess.Detection {
	return NewJudge(cfg).JudgeSignIn(history, a)
}

// Judge is the sign-in family over a configuration compiled once (the
// defaults filled in, the ASN sets built). It is immutable, so safe for
// concurrent use; the IP lists it holds follow their files (IPList.Reload).
type Judge struct{ r *rules }

// NewJudge compiles cfg for JudgeSignIn.
func NewJudge(cfg Config) *Judge { return &Judge{r: compile(cfg)} }

// Config is the configuration the judge was compiled from, its defaults
// filled in.
func (j *Judge) Config() Config { return j.r.cfg }

// JudgeSignIn is the package's JudgeSignIn with the judge's configuration.
func (j *Judge) JudgeSignIn(history []activity.Activity, a activity.Activity) []assess.Detection {
	if a.Kind != activity.KindSignIn && a.Kind != activity.KindSSOSignIn {
		return nil
	}
	r := j.r
	var prof profile
	var ses *session
	if a.SessionID != "" {
		ses = &session{user: a.UserID}
	}
	for i := range history {
		h := &history[i]
		if h.Result == activity.ResultFailure || (a.UserID != "" && h.UserID != a.UserID) {
			continue
		}
		hc := contextOf(h, r)
		switch h.Kind {
		case activity.KindSignIn, activity.KindSSOSignIn, activity.KindToken, activity.KindRefresh:
			prof.learn(h, &hc)
		case activity.KindTokenUse:
			prof.asns.see(hc.asn, h.Time.UnixNano(), maxFamASN)
			prof.seePrefix(hc.asn, hc.prefix)
		}
		if ses != nil && h.SessionID == a.SessionID {
			switch h.Kind {
			case activity.KindSignIn, activity.KindSSOSignIn:
				ses.seeBrowser(h, &hc, h.Time.UnixNano())
			case activity.KindRefresh, activity.KindToken, activity.KindTokenUse:
				if h.ClientID != "" {
					ses.client(h.ClientID).see(h, &hc, h.Time.UnixNano())
				}
			}
		}
	}
	c := contextOf(&a, r)
	ds := judgeSignIn(r, &prof, ses, &a, &c, a.Time.UnixNano())
	for i := range ds {
		f := finding(&a, ds[i])
		ds[i] = f.Detection
	}
	return ds
}

// idList joins ids for a detail.
func idList(ids []string) string { return strings.Join(ids, " ") }
