package detect

import (
	"fmt"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/risk/assess"
)

// MITRE ATT&CK techniques the detections name.
const (
	techAppAccessToken  = "T1550.001" // Use Alternate Authentication Material: Application Access Token
	techWebSession      = "T1550.004" // Use Alternate Authentication Material: Web Session Cookie
	techStealToken      = "T1528"     // Steal Application Access Token
	techStealCookie     = "T1539"     // Steal Web Session Cookie
	techAiTM            = "T1557"     // Adversary-in-the-Middle
	techCloudAccounts   = "T1078.004" // Valid Accounts: Cloud Accounts
	techForgeCreds      = "T1606"     // Forge Web Credentials
	techMultiHopProxy   = "T1090.003" // Proxy: Multi-hop Proxy
	techPasswordSpray   = "T1110.003" // Brute Force: Password Spraying
	techPasswordGuess   = "T1110.001" // Brute Force: Password Guessing
	techMFAReqGenerator = "T1621"     // Multi-Factor Authentication Request Generation
)

func det(typ, sev string, conf float64, tech, detail string, evidence ...string) assess.Detection {
	return assess.Detection{Type: typ, Severity: sev, Confidence: conf, Technique: tech, Detail: detail, Evidence: evidence}
}

// proofDetection: a bound credential (refresh token, access token, code
// bound with dpop_jkt) presented with another key's proof, or with none.
func proofDetection(a *activity.Activity) (assess.Detection, bool) {
	what := "access token"
	switch a.Kind {
	case activity.KindRefresh:
		what = "refresh token"
	case activity.KindToken:
		what = "bound credential"
	}
	where := "at the token endpoint"
	if a.Kind == activity.KindTokenUse {
		where = "at " + clip(a.Resource, 128)
		if a.Resource == "" {
			where = "at a resource"
		}
	}
	switch {
	case a.Proof == activity.ProofWrongKey && a.Kind == activity.KindToken:
		// A code (or device code) the client committed to one key
		// (dpop_jkt), redeemed with another: intercepted, but Ward
		// refused it and the thief holds nothing. Medium: several
		// together make the user's risk high, one alone does not sign
		// the user out everywhere (which anyone who can read codes could
		// otherwise do at will).
		return det(TypeTokenReplayWrongKey, Medium, 0.8, techAppAccessToken,
			fmt.Sprintf("%s bound to one key presented %s with a proof by another key", what, where), a.ID), true
	case a.Proof == activity.ProofMissing && a.BoundJKT != "" && a.Kind == activity.KindToken:
		return det(TypeTokenReplayNoProof, Medium, 0.7, techAppAccessToken,
			fmt.Sprintf("%s bound to a key presented %s without its proof", what, where), a.ID), true
	case a.Proof == activity.ProofWrongKey:
		return det(TypeTokenReplayWrongKey, High, 0.95, techAppAccessToken,
			fmt.Sprintf("%s bound to one key presented %s with a proof by another key", what, where), a.ID), true
	case a.Proof == activity.ProofMissing && a.BoundJKT != "":
		return det(TypeTokenReplayNoProof, High, 0.8, techAppAccessToken,
			fmt.Sprintf("%s bound to a key presented %s without its proof", what, where), a.ID), true
	}
	return assess.Detection{}, false
}

// reuseReason: Ward refused a rotated refresh token or a used code.
func reuseReason(a *activity.Activity) (assess.Detection, bool) {
	switch a.Reason {
	case "refresh_reuse", "refresh_reused":
		return det(TypeRefreshReuse, High, 0.95, techStealToken,
			fmt.Sprintf("a rotated refresh token (generation %d) presented again; Ward revoked the session", a.RefreshGenPresented), a.ID), true
	case "code_reuse", "code_reused":
		return det(TypeCodeReuse, High, 0.9, techAiTM, "an authorization code presented a second time; Ward revoked what it issued", a.ID), true
	}
	return assess.Detection{}, false
}

// refreshGeneration: a refresh token older than the latest one issued in
// its chain (this client's grant in this session), beyond the grace of a
// retry from the same network and program. A client may hold several
// chains (one per grant): a generation that is the latest of one of them
// is that chain's rotation. Learns the generations Ward issued.
func refreshGeneration(cfg *Config, cs *clientState, a *activity.Activity, c *netctx, t int64) (d assess.Detection, hit bool) {
	p := a.RefreshGenPresented
	var cur *family
	if p > 0 {
		cur = cs.head(p)
	}
	if a.Kind == activity.KindRefresh && p > 0 && cur == nil && a.Reason != "refresh_reuse" && a.Reason != "refresh_reused" {
		if f := cs.rotatedFrom(p); f != nil {
			retry := time.Duration(t-f.at) <= cfg.RefreshGrace && t >= f.at && c.sameNetwork(&f.c) && c.ua == f.c.ua
			if !retry {
				d, hit = det(TypeRefreshReuse, High, 0.9, techStealToken,
					fmt.Sprintf("refresh token generation %d presented after generation %d was issued in its chain", p, f.gen), f.id, a.ID), true
			}
		}
	}
	if a.Result == activity.ResultFailure || a.RefreshGenIssued <= 0 {
		return d, hit
	}
	switch {
	case cur != nil:
		*cur = family{gen: a.RefreshGenIssued, at: t, c: *c, id: a.ID}
	case a.Kind != activity.KindRefresh || p == 0:
		// a new grant: a new chain, in the least recently used slot
		slot := 0
		for i := range cs.families {
			if cs.families[i].gen == 0 {
				slot = i
				break
			}
			if cs.families[i].at < cs.families[slot].at {
				slot = i
			}
		}
		cs.families[slot] = family{gen: a.RefreshGenIssued, at: t, c: *c, id: a.ID}
	}
	return d, hit
}

// head returns the chain whose latest generation is gen.
func (cs *clientState) head(gen int) *family {
	for i := range cs.families {
		if cs.families[i].gen == gen {
			return &cs.families[i]
		}
	}
	return nil
}

// rotatedFrom returns the chain gen was rotated out of: the one with the
// smallest latest generation above gen.
func (cs *clientState) rotatedFrom(gen int) *family {
	var f *family
	for i := range cs.families {
		if g := cs.families[i].gen; g > gen && (f == nil || g < f.gen) {
			f = &cs.families[i]
		}
	}
	return f
}

// concurrentUse: one client's use of a session (its refresh token, its
// access tokens; an unbound credential: a bound one is judged by its
// proof) from a context that cannot be the same client:
//
//   - another client on another network: a user agent (digits ignored)
//     and a network this client never used in this session, and not a
//     device it used — a copied token in another program elsewhere;
//   - the same user agent alternating between two networks too far apart
//     for the time between them (X, then Y, then X again within
//     ConcurrentWindow), one of them new to the user: the client and a
//     copy of it at once. Networks the user always uses, the
//     organisation's and exempt (mobile, in-flight) ones are tolerated,
//     and so is one switch (a VPN turned on, a flight landing).
func concurrentUse(cfg *Config, prof *profile, cs *clientState, a *activity.Activity, c *netctx, t int64, org *Engine) (assess.Detection, bool) {
	knownUA, knownNet, knownDev, knownKey, haveKeys, seen := c.ua == 0, false, false, c.jkt == 0, false, false
	for i := range cs.uses {
		u := &cs.uses[i]
		if !u.set {
			continue
		}
		seen = true
		knownUA = knownUA || u.c.ua == c.ua
		knownNet = knownNet || u.c.sameNetwork(c)
		knownDev = knownDev || (c.dev != 0 && u.c.dev == c.dev)
		knownKey = knownKey || u.c.jkt == c.jkt
		haveKeys = haveKeys || u.c.jkt != 0
	}
	if !seen || knownNet || knownDev || c.corp {
		return concurrentAlternation(cfg, prof, cs, a, c, t, knownNet, org)
	}
	// proven: a valid proof by the key the credential is bound to; the
	// same key as before is the same client wherever it is.
	proven := a.Proof == activity.ProofOK && a.BoundJKT != ""
	typ, what := TypeSessionConcurrentUse, "session"
	if a.Kind == activity.KindTokenUse {
		typ, what = TypeTokenConcurrentUse, "access token"
	}
	prev := latestUse(cs)
	switch {
	case !knownUA && !(proven && knownKey):
		return det(typ, High, 0.85, techAppAccessToken,
			fmt.Sprintf("%s of client %s used by another program (user agent) from another network (AS%d, was AS%d)", what, clip(a.ClientID, 64), c.asn, prev.c.asn),
			prev.lastID, a.ID), true
	case haveKeys && !knownKey && !familiarNet(cfg, prof, c, t):
		// The client's tokens in this session had a key; a grant with
		// another key from a network new to the session and the user is
		// the session's cookie or a code used by someone else's client.
		return det(typ, Medium, 0.7, techWebSession,
			fmt.Sprintf("%s of client %s asked tokens for a new key from a network new to the user (AS%d)", what, clip(a.ClientID, 64), c.asn),
			prev.lastID, a.ID), true
	}
	return assess.Detection{}, false
}

// concurrentAlternation: the same client alternating X, Y, X between two
// networks too far apart for the time between them, within
// ConcurrentWindow, one of them new to the user, neither the
// organisation's (configured, or used by many users: Config.OrgNetworkUsers)
// nor exempt. Unbound credentials only: a proof by the
// bound key is the client itself.
func concurrentAlternation(cfg *Config, prof *profile, cs *clientState, a *activity.Activity, c *netctx, t int64, knownNet bool, org *Engine) (assess.Detection, bool) {
	if !knownNet || c.exempt || c.corp || (a.Proof == activity.ProofOK && a.BoundJKT != "") || org.orgNetwork(c) {
		return assess.Detection{}, false
	}
	typ, what := TypeSessionConcurrentUse, "session"
	if a.Kind == activity.KindTokenUse {
		typ, what = TypeTokenConcurrentUse, "access token"
	}
	window := int64(cfg.ConcurrentWindow)
	for i := range cs.uses {
		x := &cs.uses[i]
		if !x.set || !x.c.sameNetwork(c) || t-x.last > window {
			continue
		}
		for j := range cs.uses {
			y := &cs.uses[j]
			if !y.set || y.c.sameNetwork(c) || y.c.exempt || y.c.corp || y.last < x.first || t-y.last > window ||
				prof.mobileLike(y.c.asn) || prof.mobileLike(c.asn) || org.orgNetwork(&y.c) {
				continue
			}
			if familiarNet(cfg, prof, &y.c, t) && familiarNet(cfg, prof, c, t) {
				continue
			}
			if fast, km := tooFast(c, t, &y.c, y.last, cfg); fast {
				return det(typ, Medium, 0.7, techAppAccessToken,
					fmt.Sprintf("%s of client %s used alternately from two networks %s apart within %s", what, clip(a.ClientID, 64), kmText(km), cfg.ConcurrentWindow),
					y.id, y.lastID, a.ID), true
			}
		}
	}
	return assess.Detection{}, false
}

func latestUse(cs *clientState) *use {
	var l *use
	for i := range cs.uses {
		if u := &cs.uses[i]; u.set && (l == nil || u.last > l.last) {
			l = u
		}
	}
	return l
}

func kmText(km float64) string {
	if km < 0 {
		return "countries"
	}
	return fmt.Sprintf("%.0f km", km)
}

// anomalousToken: a token use at a resource that does not match what Ward
// issued: an id Ward never issued (once the engine has watched long enough
// to have seen every live token's grant), a use after the longest
// lifetime Ward gives, another user, session, client or key than the
// grant's, or an audience the grant did not request.
func (e *Engine) anomalousToken(a *activity.Activity, t int64) (assess.Detection, bool) {
	if a.TokenID == "" || a.Result == activity.ResultFailure {
		return assess.Detection{}, false
	}
	cfg := &e.r.cfg
	te := e.tokens.get(a.TokenID, t)
	if te == nil {
		if t > e.blindUntil {
			return det(TypeAnomalousToken, High, 0.85, techForgeCreds, "a token Ward never issued was accepted by "+resourceName(a), a.ID), true
		}
		return assess.Detection{}, false
	}
	tk := &te.v
	if tk.flagged {
		return assess.Detection{}, false
	}
	var why string
	switch {
	case t > tk.issued+int64(cfg.MaxTokenLifetime+cfg.ClockSkew):
		why = fmt.Sprintf("used %s after its issuance, longer than any lifetime Ward gives (%s)", time.Duration(t-tk.issued).Round(time.Second), cfg.MaxTokenLifetime)
	case a.UserID != "" && tk.user != "" && a.UserID != tk.user:
		why = "its subject is not the user it was issued to"
	case a.SessionID != "" && tk.session != "" && a.SessionID != tk.session:
		why = "its session is not the one it was issued in"
	case a.ClientID != "" && tk.client != "" && a.ClientID != tk.client:
		why = "its client is not the one it was issued to"
	case a.BoundJKT != "" && tk.bound != 0 && strHash(a.BoundJKT) != tk.bound:
		why = "it is bound to another key than the one it was issued for"
	case a.Resource != "" && tk.resources != "" && !hasWord(tk.resources, a.Resource):
		why = "its audience " + clip(a.Resource, 128) + " was never requested"
	default:
		return assess.Detection{}, false
	}
	return det(TypeAnomalousToken, High, 0.85, techForgeCreds, "a token not as Ward issued it at "+resourceName(a)+": "+why, tk.id, a.ID), true
}

func resourceName(a *activity.Activity) string {
	if a.Resource == "" {
		return "a resource"
	}
	return clip(a.Resource, 128)
}

func hasWord(list, w string) bool {
	for f := range strings.FieldsSeq(list) {
		if f == w {
			return true
		}
	}
	return false
}

// listDetections: an address on the operator's anonymous or malicious
// list.
func listDetections(a *activity.Activity, c *netctx) []assess.Detection {
	var ds []assess.Detection
	if c.bad {
		ds = append(ds, det(TypeMaliciousIP, High, 0.8, techCloudAccounts, fmt.Sprintf("%s from an address on the malicious-address list", kindText(a.Kind)), a.ID))
	}
	if c.anon {
		ds = append(ds, det(TypeAnonymousIP, Medium, 0.7, techMultiHopProxy, fmt.Sprintf("%s from an anonymising network (Tor exit or anonymiser on the list)", kindText(a.Kind)), a.ID))
	}
	return ds
}

func kindText(k activity.Kind) string {
	switch k {
	case activity.KindSignIn:
		return "sign-in"
	case activity.KindSSOSignIn:
		return "SSO-cookie sign-in"
	case activity.KindRefresh:
		return "refresh"
	case activity.KindToken:
		return "token grant"
	case activity.KindTokenUse:
		return "token use"
	}
	return string(k)
}

// judgeSignIn is the sign-in family over a user's history (prof) and,
// for an SSO sign-in, the session's browser contexts (ses).
func judgeSignIn(r *rules, prof *profile, ses *session, a *activity.Activity, c *netctx, t int64) []assess.Detection {
	cfg := &r.cfg
	if a.Kind == activity.KindSignIn && a.Result == activity.ResultFailure {
		return nil
	}
	ds := listDetections(a, c)
	if a.Kind == activity.KindSSOSignIn {
		switch {
		case a.Proof == activity.ProofWrongKey:
			ds = append(ds, det(TypeCookieReplayBound, High, 0.95, techStealCookie, "SSO cookie of a DBSC session presented with another browser key's proof", a.ID))
		case a.Proof == activity.ProofMissing && a.BoundJKT != "":
			ds = append(ds, det(TypeCookieReplayBound, Medium, 0.7, techStealCookie, "SSO cookie of a DBSC session presented without its browser key's proof", a.ID))
		}
		if ses != nil {
			if d, hit := ssoAnomaly(cfg, prof, ses, a, c, t); hit {
				ds = append(ds, d)
			}
		}
	}
	if prof == nil || c.corp {
		return ds
	}
	newNet := c.asn != 0 && !familiarNet(cfg, prof, c, t)
	newUA := c.ua != 0 && !prof.uas.has(c.ua, t, cfg)
	knownDev := c.dev != 0 && prof.devs.has(c.dev, t, cfg)
	if !newNet || !newUA || knownDev {
		return ds
	}
	// Impossible travel: from the user's last located activity, faster
	// than an airliner, to a new network with a browser or app the user
	// never used (the user's own browser moved by a VPN or a relay is not
	// travel), neither network being one that says nothing of a place.
	if l := &prof.last; l.set && c.coords && !c.exempt && !l.c.exempt && !l.c.sameNetwork(c) && !prof.mobileLike(l.c.asn) {
		if fast, km := tooFast(c, t, &l.c, l.last, cfg); fast && km > 0 {
			dt := time.Duration(t - l.last)
			if dt < 0 {
				dt = -dt
			}
			return append(ds, det(TypeImpossibleTravel, Medium, 0.75, techCloudAccounts,
				fmt.Sprintf("%s %.0f km from the last activity %s earlier (%s to %s), from a new network and a new browser", kindText(a.Kind), km, dt.Round(time.Minute), countryText(l.c.country), countryText(c.country)),
				l.lastID, a.ID))
		}
	}
	// Unfamiliar sign-in properties: a network and a browser or app the
	// user never used, not from a device of the user's.
	if prof.signIns >= cfg.MinHistory {
		conf := 0.6
		if a.MFA {
			conf = 0.5
		}
		newCountry := c.country != [2]byte{} && !prof.countries.has(c.country, t, cfg)
		detail := fmt.Sprintf("%s from a network (AS%d) and a user agent the user never used", kindText(a.Kind), c.asn)
		if newCountry {
			detail += ", in a new country (" + countryText(c.country) + ")"
			conf += 0.1
		}
		ds = append(ds, det(TypeUnfamiliarSignIn, Medium, conf, techCloudAccounts, detail, a.ID))
	}
	return ds
}

func countryText(c [2]byte) string {
	if c == [2]byte{} {
		return "unknown country"
	}
	return string(c[:])
}

// ssoAnomaly: the SSO cookie presented by another browser (user agent or
// device) from another network than every context the session's browser
// was seen in, and not from a device of the user's.
func ssoAnomaly(cfg *Config, prof *profile, ses *session, a *activity.Activity, c *netctx, t int64) (assess.Detection, bool) {
	var ref *use
	netDiff, clientDiff := true, true
	for i := range ses.browsers {
		b := &ses.browsers[i]
		if !b.set {
			continue
		}
		if ref == nil {
			ref = b
		}
		if b.c.sameNetwork(c) {
			netDiff = false
		}
		if !c.otherClient(&b.c) {
			clientDiff = false
		}
	}
	if ref == nil || !netDiff || c.corp {
		return assess.Detection{}, false
	}
	if c.dev != 0 && prof != nil && prof.devs.has(c.dev, t, cfg) {
		return assess.Detection{}, false
	}
	if clientDiff {
		return det(TypeSSOCookieAnomaly, High, 0.85, techStealCookie,
			fmt.Sprintf("the session's SSO cookie presented by another browser from another network (AS%d, the session began on AS%d)", c.asn, ref.c.asn),
			ref.id, a.ID), true
	}
	// The same user agent (copied, or the same browser roaming): the
	// client asks for tokens bound to a key it never had in this session,
	// from a network new to the user.
	if c.jkt == 0 || a.ClientID == "" || familiarNet(cfg, prof, c, t) {
		return assess.Detection{}, false
	}
	cs := ses.findClient(a.ClientID)
	if cs == nil {
		return assess.Detection{}, false
	}
	haveKeys, knownKey := false, false
	var last *use
	for i := range cs.uses {
		u := &cs.uses[i]
		if !u.set || u.c.jkt == 0 {
			continue
		}
		haveKeys = true
		knownKey = knownKey || u.c.jkt == c.jkt
		if last == nil || u.last > last.last {
			last = u
		}
	}
	if !haveKeys || knownKey {
		return assess.Detection{}, false
	}
	return det(TypeSSOCookieAnomaly, Medium, 0.7, techStealCookie,
		fmt.Sprintf("the session's SSO cookie presented from a network new to the user (AS%d) for a new key of client %s", c.asn, clip(a.ClientID, 64)),
		last.lastID, a.ID), true
}

// failedSignIn counts a failed sign-in: password spray by source, brute
// force and second-factor failures by user.
func (e *Engine) failedSignIn(a *activity.Activity, c *netctx, prof *profile, t int64) []pending {
	cfg := &e.r.cfg
	var out []pending
	switch a.Reason {
	case "invalid_credentials", "unknown_user", "locked", "disabled":
		if key := sourceKey(a.IP); key != "" {
			se, _ := e.sources.add(key, t)
			if d, hit := spray(cfg, &se.v, a, t); hit {
				out = append(out, pending{d, scopeSource})
			}
		}
		if prof != nil && a.Reason != "unknown_user" {
			prof.pwFails = window(append(prof.pwFails, stamp{t, a.ID}), t, cfg.BruteForceWindow, maxSourceFails)
			if len(prof.pwFails) >= cfg.BruteForceFailures {
				out = append(out, pending{det(TypeBruteForce, Medium, 0.7, techPasswordGuess,
					fmt.Sprintf("%d failed passwords for the account within %s", len(prof.pwFails), cfg.BruteForceWindow), stampIDs(prof.pwFails)...), scopeUser})
			}
		}
	case "invalid_totp", "totp_replay":
		if prof != nil {
			prof.mfaFails = window(append(prof.mfaFails, stamp{t, a.ID}), t, cfg.BruteForceWindow, maxSourceFails)
			if len(prof.mfaFails) >= cfg.MFAFailures {
				out = append(out, pending{det(TypeMFAFatigue, Medium, 0.7, techMFAReqGenerator,
					fmt.Sprintf("%d failed second factors after a correct password within %s: the password is known to someone", len(prof.mfaFails), cfg.BruteForceWindow), stampIDs(prof.mfaFails)...), scopeUser})
			}
		}
	}
	return out
}

// window keeps the stamps within w of t (and at most n of them).
func window(s []stamp, t int64, w time.Duration, n int) []stamp {
	i := 0
	for i < len(s) && t-s[i].t > int64(w) {
		i++
	}
	if len(s)-i > n {
		i = len(s) - n
	}
	if i > 0 {
		s = append(s[:0], s[i:]...)
	}
	return s
}

func stampIDs(s []stamp) []string {
	if len(s) > maxEvidence {
		s = s[len(s)-maxEvidence:]
	}
	ids := make([]string, len(s))
	for i := range s {
		ids[i] = s[i].id
	}
	return ids
}

// spray: SprayUsers distinct accounts (each unknown name counting as one)
// failing from one source within SprayWindow.
func spray(cfg *Config, s *source, a *activity.Activity, t int64) (assess.Detection, bool) {
	i := 0
	for i < len(s.fails) && t-s.fails[i].t > int64(cfg.SprayWindow) {
		i++
	}
	s.fails = s.fails[i:]
	found := false
	if a.UserID != "" {
		for j := range s.fails {
			if s.fails[j].user == a.UserID {
				s.fails[j].t, s.fails[j].id, found = t, a.ID, true
				break
			}
		}
	}
	if !found {
		if len(s.fails) >= maxSourceFails {
			s.fails = s.fails[1:]
		}
		s.fails = append(s.fails, srcFail{user: a.UserID, t: t, id: a.ID})
	}
	if len(s.fails) < cfg.SprayUsers {
		return assess.Detection{}, false
	}
	ids := make([]string, 0, maxEvidence)
	for j := max(0, len(s.fails)-maxEvidence); j < len(s.fails); j++ {
		ids = append(ids, s.fails[j].id)
	}
	s.sprayUntil, s.sprayIDs = t+int64(cfg.SprayWindow), ids
	if !s.supp.allow(TypePasswordSpray, t, cfg.Suppress) {
		return assess.Detection{}, false
	}
	return det(TypePasswordSpray, Medium, 0.8, techPasswordSpray,
		fmt.Sprintf("%d accounts (unknown names included) failed to sign in from one source within %s", len(s.fails), cfg.SprayWindow), ids...), true
}

// sprayTakeover: a successful sign-in from a source found spraying.
func sprayTakeover(a *activity.Activity, sprayIDs []string) assess.Detection {
	ev := append(append([]string(nil), sprayIDs[max(0, len(sprayIDs)-maxEvidence+1):]...), a.ID)
	return det(TypePasswordSpray, High, 0.85, techPasswordSpray, "a successful sign-in from a source that was spraying passwords", ev...)
}

// Signal URIs Ward maps by default.
const (
	caep = "https://schemas.openid.net/secevent/caep/event-type/"
	risc = "https://schemas.openid.net/secevent/risc/event-type/"
)

// DefaultSignals maps the CAEP and RISC event types that say an account or
// session may be in someone else's hands, and an EDR's token-theft signal
// (any transmitter's event type ending in /token-theft or
// /token-theft-attempt), to detections. Others (a password change, a
// device's compliance) are facts, not detections, and stay unmapped.
func DefaultSignals() map[string]SignalRule {
	return map[string]SignalRule{
		caep + "session-revoked":                    {Type: "external_session_revoked", Severity: Low, Confidence: 0.5, Technique: techWebSession},
		caep + "risk-level-change":                  {Type: "external_risk_level_change", Severity: Medium, Confidence: 0.6, Technique: techCloudAccounts},
		risc + "credential-compromise":              {Type: "external_credential_compromise", Severity: High, Confidence: 0.9, Technique: techCloudAccounts},
		risc + "account-disabled":                   {Type: "external_account_disabled", Severity: Medium, Confidence: 0.7, Technique: techCloudAccounts},
		risc + "account-credential-change-required": {Type: "external_credential_change_required", Severity: Medium, Confidence: 0.6, Technique: techCloudAccounts},
		risc + "sessions-revoked":                   {Type: "external_sessions_revoked", Severity: Low, Confidence: 0.5, Technique: techWebSession},
		"token-theft":                               {Type: "external_token_theft", Severity: High, Confidence: 0.9, Technique: techStealToken},
		"token-theft-attempt":                       {Type: "external_token_theft", Severity: High, Confidence: 0.9, Technique: techStealToken},
	}
}

// signalDetection maps an external signal by its full event type, else by
// its last path segment (an EDR's own URI ending in /token-theft).
func signalDetection(cfg *Config, a *activity.Activity) (assess.Detection, bool) {
	if a.Signal == "" {
		return assess.Detection{}, false
	}
	rule, ok := cfg.Signals[a.Signal]
	if !ok {
		seg := a.Signal
		if i := strings.LastIndexAny(seg, "/:#"); i >= 0 {
			seg = seg[i+1:]
		}
		if seg != a.Signal {
			rule, ok = cfg.Signals[seg]
		}
	}
	if !ok || rule.Type == "" {
		return assess.Detection{}, false
	}
	return det(rule.Type, rule.Severity, rule.Confidence, rule.Technique,
		"external signal "+clip(a.Signal, 200), a.ID), true
}
