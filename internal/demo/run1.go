package demo

import (
	"context"
	"fmt"
	"net/url"
	"strings"
)

// run1 plays the theft with Ward's defences off: the document app's
// tokens are plain bearer tokens, no Conditional Access policy, no
// detection, no CAE; the app checks tokens itself as most apps do.
func (r *recorder) run1(ctx context.Context, o Options) error {
	dir, err := tempDir(o, 1)
	if err != nil {
		return err
	}
	r.p.Section("Run 1: Ward's defences off",
		"The document app's tokens are bearer tokens (not bound to any key), "+
			"there are no Conditional Access policies, no risk detection and no Continuous Access Evaluation: an identity provider as most are configured.")
	s, err := start(ctx, dir, nil, defences{on: false})
	if err != nil {
		return err
	}
	defer s.Close()
	front, err := bearerFront(s.t.Issuer, proxyTo(s.docs.URL))
	if err != nil {
		return err
	}
	defer front.Close()
	if err := s.signInAdmin(ctx); err != nil {
		return err
	}
	sum := RunSummary{Run: 1, Defences: false, Documents: len(documents)}
	defer func() { r.rep.Runs = append(r.rep.Runs, sum) }()

	// 1. Alice signs in with a password and a second factor.
	alice := &account{name: s.t.User, password: s.t.UserPassword, totpSecret: s.t.UserTOTP}
	laptop := newBrowser(s.t.Issuer, victimIP, victimUA)
	p, tk, err := codeExchangeAuth(ctx, laptop, s.t.Issuer, s.t.DocsClient, s.t.DocsSecret, s.t.DocsRedirectURI, "openid profile offline_access", alice, nil, victimIP, nil)
	if err != nil {
		return err
	}
	if tk == nil || tk.AccessToken == "" {
		r.expect(false, Step{ID: "1.1", Run: 1, Actor: "alice", Title: "signs in to the document app", Detail: pageRefusal(p)}, OutcomeOK, "tokens")
		return nil
	}
	got, total, _, err := readDocs(ctx, newAPI(victimIP, tk.AccessToken, nil), front.URL)
	if err != nil {
		return err
	}
	r.expect(got == total && tk.TokenType == "Bearer" && cnfJKT(tk.AccessToken) == "", Step{ID: "1.1", Run: 1, Actor: "alice",
		Title:  "signs in (" + strings.Join(p.Steps, " + ") + ") and opens the documents",
		Detail: fmt.Sprintf("token type %s, bound to no key; %d of %d documents read from %s", tk.TokenType, got, total, victimIP)},
		OutcomeOK, "a bearer token that reads every document")

	// 2. Malware copies the tokens and the cookie.
	stolenCookies := laptop.cookies()
	r.step(Step{ID: "1.2", Run: 1, Actor: "malware", Outcome: OutcomeInfo, Title: "copies the refresh token, an access token and the SSO cookie and sends them out",
		Detail: fmt.Sprintf("%d cookie(s) of Ward's origin copied from the browser's jar, and the document app's client secret from its configuration file", len(stolenCookies))})

	// 3. The attacker replays them from another network.
	r.p.Section("Run 1: the attacker replays the stolen tokens from "+attackerIP, "")
	got, total, _, err = readDocs(ctx, newAPI(attackerIP, tk.AccessToken, nil), front.URL)
	if err != nil {
		return err
	}
	sum.Replays++
	sum.StolenDocs = got
	r.expect(got == total, Step{ID: "1.3", Run: 1, Actor: "attacker", Title: "replays the access token at the document app",
		Detail: fmt.Sprintf("downloaded %d of %d documents: %s", got, total, strings.Join(documentNames(), ", "))}, OutcomeStolen,
		"every document downloaded")

	rt, err := tokenRequest(ctx, tokenClient(attackerIP, nil), s.t.Issuer, url.Values{"grant_type": {"refresh_token"},
		"refresh_token": {tk.RefreshToken}}, s.t.DocsClient, s.t.DocsSecret)
	if err != nil {
		return err
	}
	sum.Replays++
	r.expect(rt.Status == 200 && rt.AccessToken != "", Step{ID: "1.4", Run: 1, Actor: "attacker", Title: "replays the refresh token: new tokens whenever they like",
		Detail: fmt.Sprintf("token endpoint: HTTP %d, a fresh access token and refresh token", rt.Status)}, OutcomeStolen, "new tokens")

	thief := newBrowser(s.t.Issuer, attackerIP, attackerUA)
	thief.setCookies(stolenCookies)
	cp, ctk, err := codeExchangeAuth(ctx, thief, s.t.Issuer, s.t.DocsClient, s.t.DocsSecret, s.t.DocsRedirectURI, "openid profile offline_access", nil, nil, attackerIP, nil)
	if err != nil {
		return err
	}
	sum.Replays++
	ok := ctk != nil && ctk.AccessToken != "" && len(cp.Steps) == 0
	d := "signed in as alice without a password or a second factor: a new session's tokens"
	if !ok {
		d = pageRefusal(cp)
	}
	r.expect(ok, Step{ID: "1.5", Run: 1, Actor: "attacker", Title: "puts the SSO cookie in their own browser and signs in", Detail: d},
		OutcomeStolen, "a sign-in without credentials")

	ur, err := s.risk(ctx)
	if err != nil {
		return err
	}
	sum.UserRisk = ur.Level
	r.expect(len(ur.Detections) == 0, Step{ID: "1.6", Run: 1, Actor: "ward", Title: "sees nothing: alice's risk is " + orNone(ur.Level) + ", no detection, no revocation",
		Detail: "the identity provider issued and accepted every token as it was asked to"}, OutcomeInfo, "no detection with risk detection off")
	return nil
}
