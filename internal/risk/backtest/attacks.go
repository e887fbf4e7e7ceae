package backtest

import (
	"fmt"
	"time"

	"github.com/ward-idp/ward/internal/activity"
)

const (
	risc = "https://schemas.openid.net/secevent/risc/event-type/"
)

// needs says what a victim must have for an attack kind.
func needs(kind string) (laptop, legacy, dbsc, noDBSC, mfa bool) {
	switch kind {
	case "bound_access_wrong_key", "bound_access_no_proof", "authorization_code_reuse", "anomalous_token_unknown_jti":
		return true, false, false, false, false
	case "bearer_token_replay", "bearer_token_replay_copied_ua", "refresh_token_reuse", "refresh_token_race",
		"anomalous_token_lifetime", "anomalous_token_audience":
		return true, true, false, false, false
	case "sso_cookie_theft", "sso_cookie_theft_copied_ua":
		return true, false, false, true, false
	case "sso_cookie_theft_dbsc":
		return true, false, true, false, false
	case "mfa_attack":
		return false, false, false, false, true
	}
	return false, false, false, false, false
}

// planAttacks picks, for each kind, its victims and days (after the
// history, on weekdays when the victim's laptop must be in use).
func (g *gen) planAttacks(kinds []string) []*plan {
	var plans []*plan
	for _, k := range kinds {
		laptop, legacy, dbsc, noDBSC, mfa := needs(k)
		for n := 0; n < g.o.Attacks; n++ {
			var p *person
			for try := 0; try < 10*len(g.people) && p == nil; try++ {
				c := pick(g.r, g.people)
				if c.victim || c.traveller || (legacy && !c.legacy) || (dbsc && c.dbscK == "") || (noDBSC && c.dbscK != "") || (mfa && !c.mfa) {
					continue
				}
				p = c
			}
			if p == nil {
				continue
			}
			var day int
			for try := 0; try < 100; try++ {
				day = g.o.HistoryDays + g.r.IntN(g.o.Days-g.o.HistoryDays)
				if !laptop || day%7 < 5 {
					break
				}
			}
			if laptop && day%7 >= 5 {
				continue
			}
			p.victim = true
			plans = append(plans, &plan{kind: k, n: n, p: p, day: day})
		}
	}
	return plans
}

// attackTime: 10:00-16:00 on the victim's clock, while its laptop is in use.
func (g *gen) attackTime(pl *plan) time.Time {
	base := g.o.Start.Add(time.Duration(pl.day) * 24 * time.Hour).Add(-pl.p.offset)
	return base.Add(10*time.Hour + time.Duration(g.r.IntN(6*3600))*time.Second)
}

// attacker is the attacker's context: a place, a program, a key.
type attacker struct {
	pl  place
	ua  string
	key string
}

// newAttacker: a data centre or a residential line elsewhere (sometimes
// in the victim's own country, another provider), a tool or a browser.
func (g *gen) newAttacker(p *person, far bool) attacker {
	r := g.r
	var pl place
	cc := cities[p.home].country
	switch x := r.IntN(3); {
	case x == 0 || far:
		h := pick(r, g.w.hosting[:2])
		city := pick(r, g.w.hostingAt[h])
		if far {
			for cities[city].country == cc || haversineKm(cities[city].lat, cities[city].lon, cities[p.home].lat, cities[p.home].lon) < 1500 {
				h = pick(r, g.w.hosting)
				city = pick(r, g.w.hostingAt[h])
			}
		}
		pl = at(h, h.v4Addr(byte(r.IntN(200)), byte(1+r.IntN(254))), city, 0, r)
	case x == 1:
		// a residential proxy abroad
		var city string
		for city = pick(r, destinations); cities[city].country == cc; city = pick(r, destinations) {
		}
		n := g.w.home[cities[city].country][r.IntN(2)]
		pl = at(n, n.v4Addr(byte(100+r.IntN(100)), byte(1+r.IntN(254))), city, 0.05, r)
	default:
		// a residential line in the victim's country, another provider
		n := g.w.home[cc][0]
		if n == p.homeNet {
			n = g.w.home[cc][1]
		}
		pl = at(n, n.v4Addr(byte(100+r.IntN(100)), byte(1+r.IntN(254))), p.home, 1.0, r)
	}
	ua := pick(r, attackerTools)
	if r.IntN(2) == 0 {
		ua = pick(r, attackerBrowsers)
	}
	return attacker{pl: pl, ua: ua, key: randKey(r)}
}

func (g *gen) attack(a *action) error {
	pl, p, t, r := a.attack, a.p, a.t, g.r
	lab := &Label{Attack: fmt.Sprintf("%s-%d", pl.kind, pl.n), Kind: pl.kind, Evasive: evasiveKinds[pl.kind], User: p.id}
	g.cur = lab
	defer func() {
		g.cur = nil
		if len(lab.Events) > 0 {
			g.labels = append(g.labels, *lab)
		}
	}()
	laptop, legacy, _, _, _ := needs(pl.kind)
	if laptop && p.laptop == nil {
		return nil
	}
	var s *sess
	var c *cl
	if laptop {
		s = p.laptop
		c = s.clients["portal"]
		if legacy {
			c = s.clients["reports"]
		}
		if c == nil {
			return nil
		}
		lab.Session = s.id
	}
	x := g.newAttacker(p, pl.kind == "impossible_travel")
	tokenUse := func(t time.Time, tok string, res string) activity.Activity {
		u := g.ev(t, activity.KindTokenUse, p, x.pl)
		u.SessionID, u.ClientID, u.UserAgent, u.TokenID, u.Resource, u.Proof = s.id, c.client, x.ua, tok, res, activity.ProofNone
		u.Count = 1 + r.IntN(5)
		return u
	}
	switch pl.kind {
	case "bound_refresh_wrong_key":
		s, c = p.phone, p.phone.clients["mail"]
		lab.Session = s.id
		for i := 0; i < 1+r.IntN(3); i++ {
			e := g.ev(t.Add(time.Duration(i)*40*time.Second), activity.KindRefresh, p, x.pl)
			e.SessionID, e.ClientID, e.UserAgent, e.Grant, e.RefreshGenPresented = s.id, c.client, x.ua, "refresh_token", c.gen
			e.JKT, e.BoundJKT, e.Proof, e.Result, e.Reason, e.DeviceID = x.key, c.jkt, activity.ProofWrongKey, activity.ResultFailure, "refresh_key_mismatch", c.device
			if err := g.emit(e); err != nil {
				return err
			}
		}
	case "bound_access_wrong_key", "bound_access_no_proof":
		for i := 0; i < 2+r.IntN(3); i++ {
			e := tokenUse(t.Add(time.Duration(i)*3*time.Minute), c.token, apiResource)
			e.BoundJKT, e.Result = c.jkt, activity.ResultFailure
			if pl.kind == "bound_access_wrong_key" {
				e.JKT, e.Proof, e.Reason = x.key, activity.ProofWrongKey, "dpop_jkt_mismatch"
			} else {
				e.Proof, e.Reason = activity.ProofMissing, "dpop_proof_missing"
			}
			if err := g.emit(e); err != nil {
				return err
			}
		}
	case "bearer_token_replay", "bearer_token_replay_copied_ua":
		if pl.kind == "bearer_token_replay_copied_ua" {
			x = g.newAttacker(p, true)
			x.ua = c.ua
		}
		for i := 0; i < 3+r.IntN(6); i++ {
			if err := g.emit(tokenUse(t.Add(time.Duration(i)*3*time.Minute), c.token, apiResource)); err != nil {
				return err
			}
		}
	case "refresh_token_reuse":
		e := g.ev(t, activity.KindRefresh, p, x.pl)
		e.SessionID, e.ClientID, e.UserAgent, e.Grant, e.RefreshGenPresented = s.id, c.client, x.ua, "refresh_token", max(1, c.gen-1-r.IntN(2))
		e.Proof, e.Result, e.Reason = activity.ProofNone, activity.ResultFailure, "refresh_reuse"
		p.laptop = nil // Ward revoked the session
		return g.emit(e)
	case "refresh_token_race":
		e := g.ev(t, activity.KindRefresh, p, x.pl)
		e.SessionID, e.ClientID, e.UserAgent, e.Grant, e.RefreshGenPresented, e.RefreshGenIssued = s.id, c.client, x.ua, "refresh_token", c.gen, c.gen+1
		e.Proof = activity.ProofNone
		e.TokenID = "at-" + randHex(r, 22)
		if err := g.emit(e); err != nil {
			return err
		}
		if err := g.emit(tokenUse(t.Add(time.Minute), e.TokenID, apiResource)); err != nil {
			return err
		}
		// The victim's client presents its token, now rotated: Ward
		// sees the reuse and revokes the session.
		v := g.ev(t.Add(time.Duration(2+r.IntN(20))*time.Minute), activity.KindRefresh, p, g.homePlace(p))
		v.SessionID, v.ClientID, v.UserAgent, v.Grant, v.RefreshGenPresented = s.id, c.client, c.ua, "refresh_token", c.gen
		v.Proof, v.Result, v.Reason = activity.ProofNone, activity.ResultFailure, "refresh_reuse"
		p.laptop = nil
		return g.emit(v)
	case "authorization_code_reuse":
		e := g.ev(t, activity.KindToken, p, x.pl)
		e.SessionID, e.ClientID, e.UserAgent, e.Grant, e.Proof = s.id, c.client, x.ua, "authorization_code", activity.ProofNone
		e.Result, e.Reason = activity.ResultFailure, "code_reuse"
		p.laptop = nil
		return g.emit(e)
	case "sso_cookie_theft", "sso_cookie_theft_copied_ua":
		if pl.kind == "sso_cookie_theft_copied_ua" {
			x.ua = p.browser
		} else {
			x.ua = pick(r, attackerBrowsers)
		}
		e := g.ev(t, activity.KindSSOSignIn, p, x.pl)
		e.SessionID, e.ClientID, e.UserAgent, e.JKT, e.MFA, e.Proof = s.id, "portal", x.ua, x.key, p.mfa, activity.ProofNone
		if err := g.emit(e); err != nil {
			return err
		}
		gr := g.ev(t.Add(2*time.Second), activity.KindToken, p, x.pl)
		gr.SessionID, gr.ClientID, gr.UserAgent, gr.Grant, gr.MFA = s.id, "portal", x.ua, "authorization_code", p.mfa
		gr.JKT, gr.Proof, gr.RefreshGenIssued, gr.Resource, gr.TokenID = x.key, activity.ProofOK, 1, apiResource, "at-"+randHex(r, 22)
		if err := g.emit(gr); err != nil {
			return err
		}
		for i := 0; i < 3; i++ {
			u := tokenUse(t.Add(time.Duration(1+i*5)*time.Minute), gr.TokenID, apiResource)
			u.ClientID, u.JKT, u.BoundJKT, u.Proof = "portal", x.key, x.key, activity.ProofOK
			if err := g.emit(u); err != nil {
				return err
			}
		}
	case "sso_cookie_theft_dbsc":
		e := g.ev(t, activity.KindSSOSignIn, p, x.pl)
		e.SessionID, e.ClientID, e.UserAgent, e.JKT, e.BoundJKT = s.id, "portal", pick(r, attackerBrowsers), x.key, s.dbsc
		e.Proof, e.Result, e.Reason = activity.ProofMissing, activity.ResultFailure, "dbsc_proof_required"
		if r.IntN(2) == 0 {
			e.Proof, e.Reason = activity.ProofWrongKey, "dbsc_key_mismatch"
		}
		return g.emit(e)
	case "anomalous_token_unknown_jti":
		u := tokenUse(t, "at-"+randHex(r, 22), apiResource)
		u.Result = activity.ResultSuccess
		return g.emit(u)
	case "anomalous_token_lifetime":
		old := c.tokens[0]
		if t.Sub(old.at) < 2*time.Hour {
			lab.Events = nil
			return nil
		}
		u := tokenUse(t, old.id, apiResource)
		u.UserAgent = c.ua
		return g.emit(u)
	case "anomalous_token_audience":
		u := tokenUse(t, c.token, payrollResource)
		u.UserAgent, u.IP, u.ASN, u.ASOrg, u.Country, u.City, u.Lat, u.Lon = c.ua, "", 0, "", "", "", 0, 0
		u.HasCoords = false
		return g.emit(u)
	case "stolen_password_signin", "impossible_travel", "tor_signin", "malicious_ip_signin":
		switch pl.kind {
		case "tor_signin":
			h := g.w.hosting[2]
			x.pl = at(h, h.v4Addr(250, byte(1+r.IntN(254))), "moscow", 0, r)
		case "malicious_ip_signin":
			h := g.w.hosting[3]
			x.pl = at(h, h.v4Addr(251, byte(1+r.IntN(254))), "lagos", 0, r)
		}
		x.ua = pick(r, attackerBrowsers)
		sid := "ses-" + randHex(r, 16)
		lab.Session = sid
		e := g.ev(t, activity.KindSignIn, p, x.pl)
		e.SessionID, e.ClientID, e.UserAgent, e.JKT = sid, "portal", x.ua, x.key
		if err := g.emit(e); err != nil {
			return err
		}
		gr := g.ev(t.Add(2*time.Second), activity.KindToken, p, x.pl)
		gr.SessionID, gr.ClientID, gr.UserAgent, gr.Grant = sid, "portal", x.ua, "authorization_code"
		gr.JKT, gr.Proof, gr.RefreshGenIssued, gr.Resource, gr.TokenID = x.key, activity.ProofOK, 1, apiResource, "at-"+randHex(r, 22)
		return g.emit(gr)
	case "password_spray":
		lab.User = ""
		src := g.newAttacker(p, false).pl
		n := 0
		for i := 0; i < 25; i++ {
			e := g.ev(t.Add(time.Duration(n)*time.Second), activity.KindSignIn, nil, src)
			n += 15 + r.IntN(25)
			e.ClientID, e.UserAgent, e.Result = "portal", x.ua, activity.ResultFailure
			if i%5 == 4 {
				e.Reason = "unknown_user"
			} else {
				e.UserID, e.Reason = pick(r, g.people).id, "invalid_credentials"
			}
			if err := g.emit(e); err != nil {
				return err
			}
		}
	case "brute_force":
		for i := 0; i < 12; i++ {
			if i%4 == 0 {
				x = g.newAttacker(p, false)
			}
			e := g.ev(t.Add(time.Duration(i*30)*time.Second), activity.KindSignIn, p, x.pl)
			e.ClientID, e.UserAgent, e.Result, e.Reason = "portal", x.ua, activity.ResultFailure, "invalid_credentials"
			if err := g.emit(e); err != nil {
				return err
			}
		}
	case "mfa_attack":
		for i := 0; i < 6; i++ {
			e := g.ev(t.Add(time.Duration(i*40)*time.Second), activity.KindSignIn, p, x.pl)
			e.ClientID, e.UserAgent, e.Result, e.Reason = "portal", x.ua, activity.ResultFailure, "invalid_totp"
			if err := g.emit(e); err != nil {
				return err
			}
		}
	case "external_credential_compromise", "edr_token_theft":
		e := g.ev(t, activity.KindSignal, p, place{})
		e.Signal = risc + "credential-compromise"
		if pl.kind == "edr_token_theft" {
			e.Signal = "https://edr.example/secevent/token-theft"
			if p.laptop != nil {
				e.SessionID, lab.Session = p.laptop.id, p.laptop.id
			}
		}
		return g.emit(e)
	}
	return nil
}
