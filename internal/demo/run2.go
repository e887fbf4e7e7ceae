package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/ward-idp/ward/agent"
	"github.com/ward-idp/ward/agent/keystore"
	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/rs"
)

// policiesYAML are the example policies of examples/policies with
// Contoso's network being the victim's address: token protection and
// strict location for the document app, refreshes only from trusted
// networks, MFA on sign-in risk, a password change at high user risk.
const policiesYAML = `locations:
  - id: corp
    name: Contoso network
    trusted: true
    ip_ranges: [%s/32]
policies:
  - id: docs-token-protection
    name: Documents require token protection
    state: enabled
    assignments:
      users: {include: [all]}
      applications: {include: [%[2]s]}
    grant: {controls: [token_protection]}
  - id: mfa-on-sign-in-risk
    name: MFA on medium or high sign-in risk
    state: enabled
    assignments:
      users: {include: [all]}
      applications: {include: [all]}
    conditions:
      sign_in_risk: [medium, high]
    grant: {controls: [mfa]}
    session: {sign_in_frequency: every_time}
  - id: high-user-risk-password-change
    name: High user risk requires a password change
    state: enabled
    assignments:
      users: {include: [all]}
      applications: {include: [all]}
    conditions:
      user_risk: [high]
    grant: {operator: all, controls: [mfa, password_change]}
  - id: refresh-trusted-networks-only
    name: Block refresh outside trusted networks
    state: enabled
    assignments:
      users: {include: [all]}
      applications: {include: [all]}
    conditions:
      flows: [refresh]
      locations: {include: [all], exclude: [trusted]}
    grant: {block: true}
  - id: docs-strict-location
    name: Documents tokens only from trusted networks
    state: enabled
    assignments:
      users: {include: [all]}
      applications: {include: [%[2]s]}
    session: {strict_location: true}
`

const caeClaims = `{"access_token":{"xms_cc":{"values":["cp1"]}}}`

// run2 plays the same theft with Ward's defences on.
func (r *recorder) run2(ctx context.Context, target *Target, o Options) error {
	dir, err := tempDir(o, 2)
	if err != nil {
		return err
	}
	r.p.Section("Run 2: Ward's defences on",
		"The same story. Now the document app's tokens are DPoP-bound to the key of alice's registered laptop (token protection), "+
			"Conditional Access policies require it and keep tokens to Contoso's network (strict location), the detectors watch every token use, "+
			"and ward gateway in front of the app follows Ward's Continuous Access Evaluation stream (SSF push).")
	s, err := start(ctx, dir, target, defences{on: true})
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.signInAdmin(ctx); err != nil {
		return err
	}
	sum := RunSummary{Run: 2, Defences: true, Documents: len(documents)}
	defer func() { r.rep.Runs = append(r.rep.Runs, sum) }()
	if err := r.setupDefences(ctx, s); err != nil {
		return err
	}
	v, err := r.victimSignsIn(ctx, s, dir)
	if err != nil {
		return err
	}
	defer v.close()
	stolen := r.malwareCopies(s, v)
	if err := r.replays(ctx, s, v, stolen, &sum); err != nil {
		return err
	}
	if err := r.response(ctx, s, &sum); err != nil {
		return err
	}
	if err := r.signsInAgain(ctx, s, v, &sum); err != nil {
		return err
	}
	r.p.Section("Other theft routes", "A proxy on the path, the servers' logs, the cookies of a DBSC browser, a stolen laptop.")
	if err := r.proxyOnPath(ctx, s, v); err != nil {
		return err
	}
	r.logsHoldNothing(ctx, s, v, stolen, &sum)
	if err := r.cookieAndDBSC(ctx, s, v); err != nil {
		return err
	}
	if err := r.stolenLaptop(ctx, s, v); err != nil {
		return err
	}
	if o.Console {
		r.console(ctx, s, v, &sum)
		if o.Hold != nil && s.w != nil {
			// The embedded Ward goes when the demo ends: keep it for
			// the console, with the administrator's throwaway account.
			o.Hold(ctx, fmt.Sprintf("Ward keeps running for the console at %s/console/: sign in as %s, password %s, TOTP secret %s (this run's throwaway account)",
				s.t.Issuer, s.t.Admin, s.t.AdminPassword, s.t.AdminTOTP))
		}
	}
	if t := s.t; t.remote {
		// Leave the running server's user as the target file says.
		body, _ := json.Marshal(map[string]string{"password": t.UserPassword})
		res, err := s.admin.do(ctx, http.MethodPatch, s.adminURL("/users/"+url.PathEscape(s.userID)), strings.NewReader(string(body)), "application/json")
		if err != nil {
			return err
		}
		r.expect(res.Status == http.StatusOK, Step{ID: "3.7", Run: 2, Actor: "secops", Title: "sets alice's password back to the one in the target file (admin API)",
			Detail: fmt.Sprintf("HTTP %d", res.Status)}, OutcomeInfo, "200")
	}
	return nil
}

// setupDefences applies the policies (when the target says so), starts
// the gateway and registers its CAE stream with Ward.
func (r *recorder) setupDefences(ctx context.Context, s *stack) error {
	t := s.t
	if t.ApplyPolicies {
		doc := fmt.Sprintf(policiesYAML, victimIP, t.DocsClient)
		res, err := s.admin.do(ctx, http.MethodPut, s.adminURL("/conditional-access/policies?comment=ward+demo"), strings.NewReader(doc), "application/yaml")
		if err != nil {
			return err
		}
		if res.Status != http.StatusOK {
			return fmt.Errorf("demo: applying the policies: %d %.300s", res.Status, res.Body)
		}
		r.step(Step{ID: "2.0a", Run: 2, Actor: "secops", Outcome: OutcomeOK, Title: "applies the Conditional Access policies (admin API)",
			Detail: "token protection and strict location for the document app; refresh only from Contoso's network (" + victimIP + "/32); " +
				"MFA on medium or high sign-in risk; a password change at high user risk"})
		// Every instance follows a new version within its poll interval.
		if err := sleepCtx(ctx, 400*time.Millisecond); err != nil {
			return err
		}
	} else {
		r.step(Step{ID: "2.0a", Run: 2, Actor: "secops", Outcome: OutcomeInfo, Title: "keeps the server's own Conditional Access policies",
			Detail: "--server: the demo does not change a running Ward's policies"})
	}
	usage, err := tokenRequest(ctx, tokenClient(victimIP, nil), t.Issuer, url.Values{"grant_type": {"client_credentials"}, "scope": {"ward:usage"}}, t.UsageClient, t.UsageSecret)
	if err != nil {
		return err
	}
	if usage.AccessToken == "" {
		return fmt.Errorf("demo: the gateway's usage token: %s", tokenRefusal(usage))
	}
	g, err := startGateway(ctx, t.Issuer, s.docs.URL, t.ReceiverClient, usage.AccessToken)
	if err != nil {
		return err
	}
	s.gw, s.front = g, g.URL
	s.closers = append(s.closers, func() { _ = g.Close() })
	// The gateway's operator registers its push stream with Ward.
	rk, err := newSigner()
	if err != nil {
		return err
	}
	rt, err := tokenRequest(ctx, tokenClient(victimIP, rk), t.Issuer, url.Values{"grant_type": {"client_credentials"}, "scope": {"ssf.manage"}}, t.ReceiverClient, t.ReceiverSecret)
	if err != nil {
		return err
	}
	if rt.AccessToken == "" {
		return fmt.Errorf("demo: the gateway's stream token: %s", tokenRefusal(rt))
	}
	body, _ := json.Marshal(map[string]any{"delivery": map[string]any{"method": "urn:ietf:rfc:8935",
		"endpoint_url": g.URL + "/.well-known/ward/ssf/push", "authorization_header": "Bearer " + g.pushBearer}})
	receiver := newAPI(victimIP, rt.AccessToken, rk)
	res, err := receiver.do(ctx, http.MethodPost, t.Issuer+"/ssf/stream", strings.NewReader(string(body)), "application/json")
	if err != nil {
		return err
	}
	if res.Status != http.StatusCreated {
		return fmt.Errorf("demo: registering the gateway's CAE stream: %d %.300s", res.Status, res.Body)
	}
	var stream struct {
		ID string `json:"stream_id"`
	}
	if err := json.Unmarshal([]byte(res.Body), &stream); err == nil && stream.ID != "" {
		// The stream goes with the gateway (a running server keeps no
		// stream of the demo's).
		s.closers = append(s.closers, func() {
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, _ = receiver.do(dctx, http.MethodDelete, t.Issuer+"/ssf/stream?stream_id="+url.QueryEscape(stream.ID), nil, "")
		})
	}
	r.step(Step{ID: "2.0b", Run: 2, Actor: "secops", Outcome: OutcomeOK, Title: "puts ward gateway in front of the document app",
		Detail: "it validates DPoP-bound tokens and strict location, reports every token use to Ward's detectors, and receives CAE events by SSF push at " + g.URL})
	return nil
}

// victim is alice's laptop: its browser, the agent's device key, the
// document app's tokens.
type victim struct {
	who     *account
	browser *browser
	agent   *agent.Client
	signer  *dpop.Signer
	cfg     *agent.Config
	keyPath string
	dbsc    *dbscKey // the browser's DBSC key, once registered
	at, rt  string
	api     *api
}

func (v *victim) close() {
	if v.agent != nil {
		_ = v.agent.Close()
	}
}

func (v *victim) setTokens(t *tokens) {
	v.at, v.rt = t.AccessToken, t.RefreshToken
	v.api = newAPI(victimIP, v.at, v.signer)
}

func (r *recorder) victimSignsIn(ctx context.Context, s *stack, dir string) (*victim, error) {
	t := s.t
	v := &victim{who: &account{name: t.User, password: t.UserPassword, totpSecret: t.UserTOTP},
		browser: newBrowser(t.Issuer, victimIP, victimUA)}
	ks := &keystore.FileStore{Dir: filepath.Join(dir, "laptop", "keys")}
	hc := &http.Client{Transport: transportFrom(victimIP), Timeout: 30 * time.Second}
	var approval *page
	var approvalErr error
	polls := 0
	cfg, err := agent.Enroll(ctx, agent.EnrollOptions{Server: t.Issuer, ClientID: t.AgentClient, Store: ks, KeyDir: ks.Dir,
		ConfigPath: filepath.Join(dir, "laptop", "agent.json"), HTTPClient: hc,
		Prompt: func(_, complete, code string) { approval, approvalErr = v.browser.signIn(ctx, complete, v.who, code) },
		// The approval is done when Prompt returns: poll at once, and
		// give up quickly if it was not.
		Sleep: func(ctx context.Context, d time.Duration) error {
			polls++
			switch {
			case approvalErr != nil:
				return approvalErr
			case polls > 3:
				return errors.New("demo: the enrolment was not approved")
			case polls > 1:
				return sleepCtx(ctx, d)
			}
			return ctx.Err()
		}})
	if err != nil {
		detail := err.Error()
		if approval != nil {
			detail += " (approval page: " + pageRefusal(approval) + ")"
		}
		return nil, fmt.Errorf("demo: enrolling alice's laptop: %s", detail)
	}
	v.cfg = cfg
	if v.agent, err = agent.Open(ctx, cfg, agent.Options{Store: ks, HTTPClient: hc}); err != nil {
		return nil, err
	}
	if v.signer, err = dpop.NewSigner(v.agent.Key()); err != nil {
		return nil, err
	}
	v.keyPath = filepath.Join(ks.Dir, cfg.KeyName+".pem")
	r.step(Step{ID: "2.1", Run: 2, Actor: "alice", Outcome: OutcomeOK, Title: "signs in (" + strings.Join(approval.Steps, " + ") + ") and enrols her laptop with the device agent",
		Detail: fmt.Sprintf("device %s registered with the laptop's own key (store: %s, thumbprint %s)", cfg.DeviceID, cfg.KeyStorage, v.signer.Thumbprint())})

	p, tk, err := codeExchange(ctx, v.browser, t.Issuer, t.DocsClient, t.DocsRedirectURI, "openid profile offline_access", v.who, v.signer, victimIP,
		url.Values{"claims": {caeClaims}})
	if err != nil {
		return nil, err
	}
	if tk == nil || tk.AccessToken == "" {
		why := pageRefusal(p)
		if tk != nil {
			why = tokenRefusal(tk)
		}
		return nil, fmt.Errorf("demo: alice's sign-in to the document app: %s", why)
	}
	v.setTokens(tk)
	got, total, refused, err := readDocs(ctx, v.api, s.front)
	if err != nil {
		return nil, err
	}
	c := claimsOf(v.at)
	detail := fmt.Sprintf("SSO: no password asked again; token type %s bound to the laptop's key (cnf.jkt %s), device %v, usable only from %v; %d of %d documents read through the gateway",
		tk.TokenType, cnfJKT(v.at), c["did"], c["ipr"], got, total)
	if refused != nil {
		detail += "; refused: " + refusal(refused)
	}
	r.expect(got == total && cnfJKT(v.at) == v.signer.Thumbprint(), Step{ID: "2.2", Run: 2, Actor: "alice",
		Title: "opens the document app on her laptop", Detail: detail}, OutcomeOK, "a device-bound token that reads every document")
	return v, nil
}

// loot is what the malware sends out.
type loot struct {
	at, rt  string
	cookies []*http.Cookie
}

func (r *recorder) malwareCopies(s *stack, v *victim) loot {
	l := loot{at: v.at, rt: v.rt, cookies: v.browser.cookies()}
	r.step(Step{ID: "2.3", Run: 2, Actor: "malware", Outcome: OutcomeInfo,
		Title:       "copies the refresh token, an access token and the SSO cookie and sends them out",
		Detail:      fmt.Sprintf("%d cookie(s) of Ward's origin; the device key stays on the laptop (the malware can use it while it runs there, see 2.4 and 2.5)", len(l.cookies)),
		DoesNotShow: "malware reading the key file: this demo's laptop keeps its key in a 0600 file, which a process of the same user could copy; in a TPM (`ward device enroll` uses one where present) it cannot be exported"})
	return l
}

// replays are the attacker's attempts from another network, each one
// refused by a different defence.
func (r *recorder) replays(ctx context.Context, s *stack, v *victim, l loot, sum *RunSummary) error {
	t := s.t
	r.p.Section("Run 2: the attacker replays the stolen tokens from "+attackerIP,
		"Each replay is refused; the timeline says by what. 2.4 and 2.5 are the hardest case: malware that also makes DPoP proofs with the laptop's key for the attacker.")
	locOK := !t.remote
	// 2.4 access token + proofs by the laptop's key, from elsewhere.
	if locOK {
		oracle := newAPI(attackerIP, l.at, v.signer)
		got, _, refused, err := readDocs(ctx, oracle, s.front)
		if err != nil {
			return err
		}
		sum.Replays++
		if got == 0 {
			sum.Refusals++
		}
		sum.StolenDocs += got
		s1 := Step{ID: "2.4", Run: 2, Actor: "attacker", Title: "replays the access token with proofs signed on the laptop by the malware",
			Shows: "strict location: the token carries Contoso's ranges (ipr), the gateway refuses it anywhere else, even with a valid proof"}
		if refused != nil {
			s1.By, s1.Detail = "strict location at the gateway", refusal(refused)
		}
		r.expect(got == 0 && refused != nil && challengeError(refused) == "insufficient_claims", s1, OutcomeRefused, "401 insufficient_claims (location)")

		// 2.5 refresh token + proofs by the laptop's key, from elsewhere.
		tk, err := tokenRequest(ctx, tokenClient(attackerIP, v.signer), t.Issuer, url.Values{"grant_type": {"refresh_token"},
			"refresh_token": {l.rt}, "client_id": {t.DocsClient}}, "", "")
		if err != nil {
			return err
		}
		sum.Replays++
		if tk.AccessToken == "" {
			sum.Refusals++
		}
		blocked := s.blockedBy(ctx, tk.ErrorDescription)
		r.expect(tk.AccessToken == "" && blocked == "refresh-trusted-networks-only", Step{ID: "2.5", Run: 2, Actor: "attacker",
			Title: "replays the refresh token with a proof signed on the laptop", By: "Conditional Access location policy " + blocked,
			Detail: tokenRefusal(tk) + "; the sign-in log names the policy for that reference"}, OutcomeRefused, "refused by the policy refresh-trusted-networks-only")
	} else {
		r.step(Step{ID: "2.4", Run: 2, Actor: "attacker", Outcome: OutcomeSkipped, Title: "replays with proofs signed on the laptop (strict location, location policy)",
			Detail: "--server: the attacker and the victim both connect from this machine, so a location defence cannot tell them apart; the embedded demo plays it"})
	}

	// 2.6 the SSO cookie in the attacker's browser.
	thief := newBrowser(t.Issuer, attackerIP, attackerUA)
	thief.setCookies(l.cookies)
	ts, err := newSigner()
	if err != nil {
		return err
	}
	cp, ctk, err := codeExchange(ctx, thief, t.Issuer, t.DocsClient, t.DocsRedirectURI, "openid profile offline_access", nil, ts, attackerIP, nil)
	if err != nil {
		return err
	}
	sum.Replays++
	gotTokens := ctk != nil && ctk.AccessToken != ""
	if !gotTokens {
		sum.Refusals++
	}
	r.expect(!gotTokens, Step{ID: "2.6", Run: 2, Actor: "attacker", Title: "puts the SSO cookie in their own browser and signs in to the document app",
		By: "Conditional Access (token protection: no registered device holds the attacker's key)", Detail: pageRefusal(cp)},
		OutcomeRefused, "no tokens for the attacker")

	// The victim keeps reading while the attacker tries his own key: the
	// moment the gateway refuses her token is the CAE revocation.
	pollCtx, stopPoll := context.WithTimeout(ctx, 20*time.Second)
	defer stopPoll()
	type refusedAt struct {
		at time.Time
		r  *result
	}
	cae := make(chan refusedAt, 1)
	go func() {
		defer close(cae)
		for {
			res, err := v.api.get(pollCtx, s.front+"/docs/")
			if err != nil {
				return
			}
			if res.Status == http.StatusUnauthorized {
				cae <- refusedAt{time.Now(), res}
				return
			}
			if sleepCtx(pollCtx, 5*time.Millisecond) != nil {
				return
			}
		}
	}()
	t0 := time.Now()
	// 2.7 the access token with the attacker's own key.
	own := newAPI(attackerIP, l.at, ts)
	res, err := own.get(ctx, s.front+"/docs/")
	if err != nil {
		return err
	}
	sum.Replays++
	if res.Status == http.StatusUnauthorized {
		sum.Refusals++
	}
	r.expect(res.Status == http.StatusUnauthorized, Step{ID: "2.7", Run: 2, Actor: "attacker", Title: "replays the access token with their own DPoP key",
		By: "token protection at the gateway (the proof's key is not the token's cnf.jkt)", Detail: refusal(res)}, OutcomeRefused, "401")
	// 2.8 as a bearer token.
	res, err = newAPI(attackerIP, l.at, nil).get(ctx, s.front+"/docs/")
	if err != nil {
		return err
	}
	sum.Replays++
	if res.Status == http.StatusUnauthorized {
		sum.Refusals++
	}
	r.expect(res.Status == http.StatusUnauthorized, Step{ID: "2.8", Run: 2, Actor: "attacker", Title: "replays the access token as a bearer token, without a proof",
		By: "token protection at the gateway (a DPoP-bound token needs a proof)", Detail: refusal(res)}, OutcomeRefused, "401")
	// 2.9 the refresh token with the attacker's own key.
	tk, err := tokenRequest(ctx, tokenClient(attackerIP, ts), t.Issuer, url.Values{"grant_type": {"refresh_token"},
		"refresh_token": {l.rt}, "client_id": {t.DocsClient}}, "", "")
	if err != nil {
		return err
	}
	sum.Replays++
	if tk.AccessToken == "" {
		sum.Refusals++
	}
	r.expect(tk.Status == http.StatusBadRequest && tk.Error == "invalid_grant", Step{ID: "2.9", Run: 2, Actor: "attacker",
		Title: "replays the refresh token with their own DPoP key", By: "token protection at Ward (the refresh token is bound to the laptop's key)",
		Detail: tokenRefusal(tk)}, OutcomeRefused, "400 invalid_grant")

	ra, ok := <-cae
	if !ok {
		r.expect(false, Step{ID: "2.10", Run: 2, Actor: "gateway", Title: "CAE: alice's tokens revoked at the gateway"}, OutcomeDetected,
			"the gateway to refuse alice's token within 20 s")
		return nil
	}
	total := ra.at.Sub(t0)
	sum.ReplayToRefusalMillis = ms(total)
	// CAE proper: from Ward's decision (her risk raised to high, in the
	// audit log) to the gateway's refusal; the rest is the detection.
	decided, err := s.riskRaised(ctx)
	if err != nil {
		return err
	}
	st := Step{ID: "2.10", Run: 2, Actor: "gateway", By: "Continuous Access Evaluation (SSF push from Ward: risk-level-change, session-revoked)",
		Detail: "alice's own next request: " + refusal(ra.r),
		Shows:  "CAE: from Ward's decision (user.risk_changed to high, in the audit log) to the gateway refusing alice's still-unexpired token, the SET pushed in between; and from the attacker's first own-key replay (2.7), detection included"}
	if decided.IsZero() {
		st.Title = fmt.Sprintf("CAE: every token of alice refused at the gateway %.0f ms after the replay", ms(total))
		r.expect(false, st, OutcomeDetected, "the risk change in the audit log")
		return nil
	}
	took := ra.at.Sub(decided)
	sum.CAEMillis = ms(took)
	st.Title = fmt.Sprintf("CAE: every token of alice refused at the gateway %.0f ms after Ward's decision (%.0f ms after the replay)", ms(took), ms(total))
	r.expect(took < time.Second, st, OutcomeDetected, "under a second")
	return nil
}

// riskRaised returns when the audit log says the user's risk last became
// high (zero if it does not).
func (s *stack) riskRaised(ctx context.Context) (time.Time, error) {
	var evs struct {
		Events []struct {
			Time time.Time         `json:"time"`
			Data map[string]string `json:"data"`
		} `json:"events"`
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := s.admin.getJSON(ctx, s.adminURL("/events?type=user.risk_changed&limit=20&user_id="+url.QueryEscape(s.userID)), &evs); err != nil {
			return time.Time{}, err
		}
		for _, e := range evs.Events {
			if e.Data["level"] == "high" {
				return e.Time, nil
			}
		}
		if time.Now().After(deadline) {
			return time.Time{}, nil
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return time.Time{}, err
		}
	}
}

// response shows what Ward concluded: detections, user risk, incident.
func (r *recorder) response(ctx context.Context, s *stack, sum *RunSummary) error {
	var ur *userRisk
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		if ur, err = s.risk(ctx); err != nil {
			return err
		}
		if ur.Level == "high" || time.Now().After(deadline) {
			break
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	// The gateway reports token uses every 100 ms: give its findings
	// (the replays at the gateway) a moment to arrive too.
	for end := time.Now().Add(400 * time.Millisecond); len(ur.Detections) < 2 && time.Now().Before(end); {
		var err error
		if ur, err = s.risk(ctx); err != nil {
			return err
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	sum.UserRisk = ur.Level
	var lines []string
	techs := map[string]bool{}
	for _, d := range ur.Detections {
		sum.Detections = append(sum.Detections, Detection{Type: d.Type, Severity: d.Severity, Confidence: d.Confidence, Technique: d.Technique, Source: d.Source, Detail: d.Detail})
		lines = append(lines, fmt.Sprintf("%s (%s, %s, %s)", d.Type, d.Severity, d.Technique, d.Source))
		if d.Technique != "" && !techs[d.Technique] {
			techs[d.Technique] = true
			sum.MITRETechnique = append(sum.MITRETechnique, d.Technique)
		}
	}
	r.expect(len(ur.Detections) > 0, Step{ID: "2.11", Run: 2, Actor: "ward", Title: fmt.Sprintf("%d detection(s) recorded", len(ur.Detections)),
		By: "the online detectors (every token use Ward and the gateway saw)", Detail: strings.Join(lines, "; ")}, OutcomeDetected, "a detection")
	r.expect(ur.Level == "high", Step{ID: "2.12", Run: 2, Actor: "ward", Title: "alice's user risk is " + orNone(ur.Level) + ": every session of hers revoked",
		By: "the automatic response (risk.auto_revoke_level: high)"}, OutcomeDetected, "user risk high")

	return r.incident(ctx, s, sum)
}

// incidentView is GET /admin/api/v1/incidents/{id}, the parts shown.
type incidentView struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	Title      string   `json:"title"`
	Severity   string   `json:"severity"`
	Status     string   `json:"status"`
	Detections int      `json:"detections"`
	Techniques []string `json:"techniques"`
	Attack     []struct {
		ID      string `json:"id"`
		Name    string `json:"name"`
		Tactics []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"tactics"`
	} `json:"attack"`
	Entities struct {
		Users    []string `json:"users"`
		Sessions []string `json:"sessions"`
		Devices  []string `json:"devices"`
		IPs      []string `json:"ips"`
	} `json:"entities"`
}

// incident finds the incident the detections opened, through the admin
// API where it has incidents.
func (r *recorder) incident(ctx context.Context, s *stack, sum *RunSummary) error {
	var list struct {
		Incidents []incidentView `json:"incidents"`
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		res, err := s.admin.get(ctx, s.adminURL("/incidents?user="+url.QueryEscape(s.userID)))
		if err != nil {
			return err
		}
		if res.Status == http.StatusNotFound && !strings.Contains(res.Body, "incident") {
			sum.IncidentSkip = "this Ward has no incidents API (GET /admin/api/v1/incidents answered 404)"
			r.step(Step{ID: "2.13", Run: 2, Actor: "ward", Outcome: OutcomeSkipped, Title: "the incident with its MITRE ATT&CK techniques",
				Detail: sum.IncidentSkip + "; the detections above carry the techniques: " + strings.Join(sum.MITRETechnique, ", ")})
			return nil
		}
		if res.Status != http.StatusOK {
			return fmt.Errorf("demo: GET /incidents: %d %.200s", res.Status, res.Body)
		}
		if err := json.Unmarshal([]byte(res.Body), &list); err != nil {
			return err
		}
		if len(list.Incidents) > 0 || time.Now().After(deadline) {
			break
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
	if len(list.Incidents) == 0 {
		r.expect(false, Step{ID: "2.13", Run: 2, Actor: "ward", Title: "an incident opens"}, OutcomeDetected, "an incident about alice within 3 s")
		return nil
	}
	var in incidentView
	if err := s.admin.getJSON(ctx, s.adminURL("/incidents/"+url.PathEscape(list.Incidents[0].ID)), &in); err != nil {
		return err
	}
	var techs []string
	for _, a := range in.Attack {
		var tactics []string
		for _, t := range a.Tactics {
			tactics = append(tactics, t.Name)
		}
		techs = append(techs, fmt.Sprintf("%s %s (%s)", a.ID, a.Name, strings.Join(tactics, ", ")))
	}
	sum.Incident = fmt.Sprintf("%s, %s, %s: %s; MITRE ATT&CK %s", in.Name, in.Severity, in.Status, in.Title, strings.Join(in.Techniques, ", "))
	sum.IncidentName = in.Name
	r.expect(in.Severity == "high" && len(in.Techniques) > 0, Step{ID: "2.13", Run: 2, Actor: "ward",
		Title: fmt.Sprintf("incident %s opens (%s, %s)", in.Name, in.Severity, in.Status),
		By:    "incident correlation of the detections (GET /admin/api/v1/incidents)",
		Detail: fmt.Sprintf("%s; %d detection(s); MITRE ATT&CK: %s; entities: %d user, %d session(s), %d device(s), addresses %s",
			in.Title, in.Detections, strings.Join(techs, "; "), len(in.Entities.Users), len(in.Entities.Sessions), len(in.Entities.Devices), strings.Join(in.Entities.IPs, ", "))},
		OutcomeDetected, "a high incident with its techniques")
	return nil
}

// signsInAgain: alice's client follows the claims challenge, is sent to
// sign in, and gets back in.
func (r *recorder) signsInAgain(ctx context.Context, s *stack, v *victim, sum *RunSummary) error {
	t := s.t
	res, err := v.api.get(ctx, s.front+"/docs/")
	if err != nil {
		return err
	}
	tk, err := tokenRequest(ctx, tokenClient(victimIP, v.signer), t.Issuer, url.Values{"grant_type": {"refresh_token"},
		"refresh_token": {v.rt}, "client_id": {t.DocsClient}, "claims": {caeClaims}}, "", "")
	if err != nil {
		return err
	}
	r.expect(res.Status == http.StatusUnauthorized && tk.AccessToken == "", Step{ID: "2.14", Run: 2, Actor: "alice",
		Title:  "her app gets a claims challenge; the refresh it makes is refused: she must sign in again",
		Detail: "gateway: " + refusal(res) + "; token endpoint: " + tokenRefusal(tk)}, OutcomeInfo, "a challenge and a refused refresh")
	v.who.newPassword = "Contoso-new-" + randomSecret(9)
	p, redeem, err := authorizeCode(ctx, v.browser, t.Issuer, t.DocsClient, "", t.DocsRedirectURI, "openid profile offline_access", v.who, v.signer, victimIP,
		url.Values{"claims": {caeClaims}})
	if err != nil {
		return err
	}
	var ntk *tokens
	if redeem != nil {
		// The password change revoked her other sessions; resources
		// compare whole seconds, so her app redeems the code in the
		// next one (a token of the same second would be refused once
		// the revocation reaches the gateway).
		if err := nextSecond(ctx); err != nil {
			return err
		}
		if ntk, err = redeem(); err != nil {
			return err
		}
	}
	if ntk == nil || ntk.AccessToken == "" {
		why := pageRefusal(p)
		if ntk != nil {
			why = tokenRefusal(ntk)
		}
		r.expect(false, Step{ID: "2.15", Run: 2, Actor: "alice", Title: "signs in again", Detail: why}, OutcomeOK, "new tokens")
		return nil
	}
	// Her browser supports DBSC this time: it binds the new SSO session
	// to a key of its own (3.3 steals its cookies).
	dbsc := ""
	if key, err := newDBSCKey(); err != nil {
		return err
	} else if err := v.browser.registerDBSC(ctx, p.DBSCOffer, key); err != nil {
		dbsc = "; DBSC: " + err.Error()
	} else {
		v.dbsc, dbsc = key, "; her browser bound the new SSO session to its own key (DBSC)"
	}
	v.setTokens(ntk)
	// Her app follows a claims challenge, as CAE clients do (none is
	// expected: the token is newer than every revocation).
	followed := ""
	got, total, refused, err := readDocsWith(ctx, func(ctx context.Context, u string) (*result, error) {
		res, err := v.api.get(ctx, u)
		if err != nil || res.Status != http.StatusUnauthorized || followed != "" {
			return res, err
		}
		ok, err := v.follow(ctx, s.t, res)
		if err != nil || !ok {
			return res, err
		}
		followed = "; her app followed one claims challenge (" + refusal(res) + ") with a refresh"
		return v.api.get(ctx, u)
	}, s.front)
	if err != nil {
		return err
	}
	if refused != nil {
		followed += "; refused: " + refusal(refused)
	}
	sum.UserBackIn = got == total
	ur, err := s.risk(ctx)
	if err != nil {
		return err
	}
	r.expect(got == total, Step{ID: "2.15", Run: 2, Actor: "alice", Title: "signs in again (" + strings.Join(p.Steps, " + ") + ") and is back in",
		By:     "Conditional Access: high user risk requires MFA and a password change",
		Detail: fmt.Sprintf("%d of %d documents read; the password change remediated her risk: now %s%s%s", got, total, orNone(ur.Level), followed, dbsc)}, OutcomeOK, "every document")
	return nil
}

// proxyOnPath: a proxy that terminates TLS sees alice's token and proof;
// replaying them gets nothing.
func (r *recorder) proxyOnPath(ctx context.Context, s *stack, v *victim) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.front+"/docs/q3-board-report.pdf", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "DPoP "+v.at)
	// What the proxy records: the request exactly as alice's app sent it.
	recorded := http.Header{}
	c := &http.Client{Timeout: 30 * time.Second, Transport: &dpop.Transport{Base: recordingTransport{base: transportFrom(victimIP), rec: recorded}, Signer: v.signer}}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.expect(false, Step{ID: "3.1", Run: 2, Actor: "proxy", Title: "sees alice's request", Detail: fmt.Sprintf("HTTP %d", resp.StatusCode)}, OutcomeInfo, "200")
		return nil
	}
	// The proxy's operator replays it, from the proxy's own address on
	// Contoso's network, and asks for another document with it.
	replay := func(path string) (*result, error) {
		rq, err := http.NewRequestWithContext(ctx, http.MethodGet, s.front+path, nil)
		if err != nil {
			return nil, err
		}
		rq.Header.Set("Authorization", recorded.Get("Authorization"))
		rq.Header.Set("DPoP", recorded.Get("DPoP"))
		resp, err := (&http.Client{Transport: transportFrom(victimIP), Timeout: 30 * time.Second}).Do(rq)
		if err != nil {
			return nil, err
		}
		resp.Body.Close()
		return &result{Status: resp.StatusCode, Header: resp.Header}, nil
	}
	same, err := replay("/docs/q3-board-report.pdf")
	if err != nil {
		return err
	}
	other, err := replay("/docs/merger-plan.docx")
	if err != nil {
		return err
	}
	r.expect(same.Status == http.StatusUnauthorized && other.Status == http.StatusUnauthorized, Step{ID: "3.1", Run: 2, Actor: "proxy",
		Title:  "a TLS-terminating proxy on the path replays alice's request (token and proof) it saw",
		By:     "DPoP: a proof is single-use and names one method and URL",
		Detail: "the same request again: " + refusal(same) + "; another document with it: " + refusal(other),
		Shows:  "what the proxy saw is useless without the key", DoesNotShow: "a real TLS interception: the demo's proxy records the request inside the client"},
		OutcomeRefused, "401 twice")
	return nil
}

// recordingTransport keeps the headers of the request it sends (below
// the DPoP transport: with the proof, what a proxy on the path sees).
type recordingTransport struct {
	base http.RoundTripper
	rec  http.Header
}

func (t recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	for k, vs := range req.Header {
		t.rec[k] = append([]string(nil), vs...)
	}
	return t.base.RoundTrip(req)
}

// logsHoldNothing searches every log the demo can read for the stolen
// secrets.
func (r *recorder) logsHoldNothing(ctx context.Context, s *stack, v *victim, l loot, sum *RunSummary) {
	secrets := []string{l.at, l.rt, v.at, v.rt, v.who.password, s.t.UserPassword, s.t.UserTOTP}
	for _, c := range l.cookies {
		secrets = append(secrets, c.Value)
	}
	var checks []LogCheck
	add := func(name, text string) {
		checks = append(checks, LogCheck{Source: name, Bytes: len(text), Secrets: len(secrets), Found: countContaining(text, secrets)})
	}
	if s.w != nil {
		add("Ward's log (debug level)", s.t.logs.String())
	}
	if s.gw != nil {
		add("the gateway's log (debug level)", s.gw.logs.String())
	}
	add("the document app's access log (every request header)", s.docs.Log())
	var audit strings.Builder
	for _, q := range []string{"/events?limit=1000&user_id=" + url.QueryEscape(s.userID), "/events?limit=1000"} {
		if res, err := s.admin.get(ctx, s.adminURL(q)); err == nil {
			audit.WriteString(res.Body)
		}
	}
	add("the audit log (admin API GET /events)", audit.String())
	sum.LogChecks = checks
	found, parts := 0, []string{}
	for _, c := range checks {
		found += c.Found
		parts = append(parts, fmt.Sprintf("%s: %d bytes, %d found", c.Source, c.Bytes, c.Found))
	}
	st := Step{ID: "3.2", Run: 2, Actor: "demo", Title: fmt.Sprintf("searches the servers' logs for the %d stolen secrets (tokens, cookie, password, TOTP seed)", len(secrets)),
		Detail: strings.Join(parts, "; "),
		Shows:  "someone reading the logs of Ward, the gateway or the app finds no token to replay"}
	if s.w == nil {
		st.DoesNotShow = "Ward's own process log: --server cannot read it"
	}
	r.expect(found == 0, st, OutcomeOK, "no secret in any log")
}

// stolenLaptop: the key store, and the administrator's answer to a lost
// device.
func (r *recorder) stolenLaptop(ctx context.Context, s *stack, v *victim) error {
	mode := "?"
	if fi, err := os.Stat(v.keyPath); err == nil {
		mode = fmt.Sprintf("%04o (%s)", uint32(fi.Mode().Perm()), fi.Mode().Perm())
	}
	tpm := "no TPM on this machine (/dev/tpmrm0 absent)"
	if _, err := os.Stat("/dev/tpmrm0"); err == nil {
		tpm = "this machine has a TPM: `ward device enroll` keeps the key there, non-exportable (the demo uses a temporary file key)"
	}
	r.step(Step{ID: "3.4", Run: 2, Actor: "thief", Outcome: OutcomeInfo, Title: "steals the laptop: where is the device key?",
		Detail:      fmt.Sprintf("the demo laptop's key is a %s file (%s); %s", mode, v.keyPath, tpm),
		DoesNotShow: "disk encryption: the posture report says whether the disk is encrypted; a compliance policy can require it"})
	if err := nextSecond(ctx); err != nil {
		return err
	}
	before, err := v.api.get(ctx, s.front+"/docs/")
	if err != nil {
		return err
	}
	if before.Status != http.StatusOK {
		r.expect(false, Step{ID: "3.5", Run: 2, Actor: "secops", Title: "marks the laptop lost", Detail: "alice's token was refused before: " + refusal(before)}, OutcomeOK, "a working token first")
		return nil
	}
	t0 := time.Now()
	res, err := s.admin.do(ctx, http.MethodPost, s.adminURL("/devices/"+url.PathEscape(v.cfg.DeviceID)+"/lost"), strings.NewReader("{}"), "application/json")
	if err != nil {
		return err
	}
	if res.Status != http.StatusOK {
		r.expect(false, Step{ID: "3.5", Run: 2, Actor: "secops", Title: "marks the laptop lost", Detail: fmt.Sprintf("HTTP %d %.200s", res.Status, res.Body)}, OutcomeOK, "200")
		return nil
	}
	var refusedAfter time.Duration
	var last *result
	for time.Since(t0) < 5*time.Second {
		if last, err = v.api.get(ctx, s.front+"/docs/"); err != nil {
			return err
		}
		if last.Status == http.StatusUnauthorized {
			refusedAfter = time.Since(t0)
			break
		}
		if err := sleepCtx(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
	r.expect(refusedAfter > 0, Step{ID: "3.5", Run: 2, Actor: "secops", Title: fmt.Sprintf("marks the laptop lost (admin API): its tokens refused at the gateway %.0f ms later", ms(refusedAfter)),
		By: "CAE (device revoked)", Detail: "alice's request from the laptop: " + refusal(last)}, OutcomeDetected, "the laptop's tokens refused")
	return nil
}

// cookieAndDBSC: the cookies of alice's DBSC browser stolen, alone and
// together.
func (r *recorder) cookieAndDBSC(ctx context.Context, s *stack, v *victim) error {
	st := Step{ID: "3.3", Run: 2, Actor: "attacker", Title: "steals the cookies of a DBSC browser",
		DoesNotShow: "a real browser's DBSC: the demo's browser implements the draft's registration and refresh itself (Chromium does it natively)"}
	if v.dbsc == nil {
		st.Outcome, st.Detail = OutcomeSkipped, "alice's browser did not bind its session (no DBSC offer)"
		r.step(st)
		return nil
	}
	cookies := v.browser.cookies()
	alone := newBrowser(s.t.Issuer, attackerIP, attackerUA)
	alone.setCookies(onlyCookies(cookies, "ward_session"))
	stateAlone, err := alone.ssoState(ctx, s.t)
	if err != nil {
		return err
	}
	own, err := newDBSCKey()
	if err != nil {
		return err
	}
	refresh, err := alone.refreshDBSC(ctx, own)
	if err != nil {
		return err
	}
	// Both cookies, copied within the short-lived one's lifetime: the
	// session is recognised; the document app's tokens still need the
	// laptop's key.
	both := newBrowser(s.t.Issuer, attackerIP, attackerUA)
	both.setCookies(onlyCookies(cookies, "ward_session", "ward_dbsc"))
	ts, err := newSigner()
	if err != nil {
		return err
	}
	p, tk, err := codeExchange(ctx, both, s.t.Issuer, s.t.DocsClient, s.t.DocsRedirectURI, "openid profile offline_access", nil, ts, attackerIP,
		map[string][]string{"prompt": {"none"}})
	if err != nil {
		return err
	}
	withBoth := ""
	switch {
	case tk != nil && tk.AccessToken != "":
		withBoth = "tokens issued"
	case tk != nil:
		withBoth = "a code, whose redemption is refused: " + tokenRefusal(tk)
	default:
		withBoth = pageRefusal(p)
	}
	st.By = "DBSC: the SSO cookie needs the short-lived cookie only the browser's key renews"
	st.Detail = fmt.Sprintf("the SSO cookie alone: prompt=none answers %s (signed out); a refresh of the short-lived cookie signed with the attacker's key: HTTP %d; "+
		"both cookies, copied within the short-lived one's 10 minutes: the session is recognised and token protection decides: %s",
		stateAlone, refresh, withBoth)
	st.Shows = "a stolen DBSC cookie is worth at most the short-lived cookie's remaining minutes (a plain one, 1.5, was a full sign-in); token protection covers those minutes"
	r.expect(stateAlone == "login_required" && refresh == http.StatusUnauthorized && (tk == nil || tk.AccessToken == ""), st, OutcomeRefused,
		"login_required alone, the refresh refused, no tokens with both")
	return nil
}

// console prints the console's pages about what the demo did, where the
// server has a console.
func (r *recorder) console(ctx context.Context, s *stack, v *victim, sum *RunSummary) {
	res, err := newAPI(victimIP, "", nil).get(ctx, s.t.Issuer+"/console/login")
	if err != nil || res.Status == http.StatusNotFound {
		r.step(Step{ID: "3.6", Run: 2, Actor: "demo", Outcome: OutcomeSkipped, Title: "console URLs", Detail: "this Ward has no console (/console/login answered 404)"})
		return
	}
	base := s.t.Issuer + "/console"
	urls := []string{base + "/users/" + url.PathEscape(s.userID), base + "/devices/" + url.PathEscape(v.cfg.DeviceID),
		base + "/logs?user=" + url.QueryEscape(s.t.User)}
	r.rep.Console = append(r.rep.Console, urls...)
	detail := "alice (risk, detections, sessions and what binds them): " + urls[0] + "; her laptop: " + urls[1] + "; her sign-ins: " + urls[2]
	if sum.IncidentName != "" {
		detail += "; incident " + sum.IncidentName + ": the console has no incident page in this version (GET /admin/api/v1/incidents/" + sum.IncidentName + ", `ward incidents show " + sum.IncidentName + "`)"
	}
	r.step(Step{ID: "3.6", Run: 2, Actor: "demo", Outcome: OutcomeInfo, Title: "the console's pages about it", Detail: detail})
}

// follow answers a resource's claims challenge as a CAE-capable client
// does: a refresh with the claims, once the time they ask for has come.
func (v *victim) follow(ctx context.Context, t *Target, res *result) (bool, error) {
	ch, ok := rs.ParseClaimsChallenge(res.Header)
	if !ok {
		return false, nil
	}
	if nb, ok := ch.RequiredNotBefore(); ok && time.Until(nb) > 0 {
		if err := sleepCtx(ctx, time.Until(nb)+10*time.Millisecond); err != nil {
			return false, err
		}
	}
	tk, err := tokenRequest(ctx, tokenClient(victimIP, v.signer), t.Issuer, url.Values{"grant_type": {"refresh_token"},
		"refresh_token": {v.rt}, "client_id": {t.DocsClient}, "claims": {string(ch.Claims)}}, "", "")
	if err != nil || tk.AccessToken == "" {
		return false, err
	}
	v.setTokens(tk)
	return true, nil
}

var referenceRE = regexp.MustCompile(`reference ([A-Za-z0-9_-]+)`)

// blockedBy looks up, in the audit log, which Conditional Access policy
// blocked the request whose error description names a reference.
func (s *stack) blockedBy(ctx context.Context, desc string) string {
	m := referenceRE.FindStringSubmatch(desc)
	if m == nil {
		return ""
	}
	var evs struct {
		Events []struct {
			Data map[string]any `json:"data"`
		} `json:"events"`
	}
	if s.admin.getJSON(ctx, s.adminURL("/events?correlation_id="+url.QueryEscape(m[1])), &evs) != nil {
		return ""
	}
	for _, e := range evs.Events {
		if b, ok := e.Data["ca_blocked_by"].(string); ok && b != "" {
			return b
		}
	}
	return ""
}
