package ssf_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
	"github.com/ward-idp/ward/rs"
)

// startFake runs Ward on its fake clock (TOTP codes follow it).
//
// The clock moves on a second after the start, as time does between a
// server's start and what it is asked next: the events of the start
// (alice's configured second factor: mfa.enrolled) must be older than the
// streams a test creates. At the same instant, the transmitter's catch-up
// consumer, which finds that event without SETs (no stream existed),
// cannot tell that the stream came after it and queues a SET for it, late,
// in the middle of whatever the test checks then; whether the consumer
// saw the event at all depended on whether it was created before the
// relay published it.
func startFake(t testing.TB) *wardtest.Instance {
	t.Helper()
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		ssfClients(c)
		// The mapping tests publish events one by one and expect each
		// one's SETs: the detectors' own findings about them (a refresh
		// reuse is a theft) would add risk-level-change SETs.
		c.RiskDetection.Enabled = false
	}})
	in.Clock.Advance(time.Second)
	return in
}

// polled is a SET taken from a poll stream, verified by rs.
type polled struct {
	raw    string
	set    *rs.SET
	claims map[string]any
	event  map[string]any
}

// pollAll drains a poll stream (acknowledging) and verifies every SET
// with an rs.Receiver at the instance's clock.
func pollAll(t *testing.T, in *wardtest.Instance, tok, id string) []polled {
	t.Helper()
	recv, err := rs.NewReceiver(rs.ReceiverConfig{Issuer: in.URL, Audience: receiverID, Now: in.Clock.Now,
		State: rs.NewRevocationState(rs.StateConfig{Now: in.Clock.Now})})
	if err != nil {
		t.Fatal(err)
	}
	var out []polled
	var ack []string
	for {
		r := call(t, in, http.MethodPost, "/ssf/poll/"+id, tok, map[string]any{"returnImmediately": true, "maxEvents": 50, "ack": ack})
		wantStatus(t, "poll", r, http.StatusOK)
		var resp struct {
			Sets          map[string]string `json:"sets"`
			MoreAvailable bool              `json:"moreAvailable"`
		}
		if err := json.Unmarshal(r.body, &resp); err != nil {
			t.Fatal(err)
		}
		ack = nil
		// Keep the transmitter's order: read the keys as they appear.
		dec := json.NewDecoder(strings.NewReader(string(r.body)))
		var order []string
		depth := 0
		inSets := false
		for {
			tk, err := dec.Token()
			if err != nil {
				break
			}
			switch v := tk.(type) {
			case json.Delim:
				if v == '{' {
					depth++
				} else if v == '}' {
					depth--
					inSets = false
				}
			case string:
				if depth == 1 && v == "sets" {
					inSets = true
				} else if depth == 2 && inSets {
					order = append(order, v)
					dec.Token() // the SET
				}
			}
		}
		for _, jti := range order {
			raw := resp.Sets[jti]
			set, err := recv.Verify(context.Background(), raw)
			if err != nil {
				t.Fatalf("SET %s refused by rs: %v", jti, err)
			}
			if set.JTI != jti {
				t.Errorf("SET under key %s has jti %s", jti, set.JTI)
			}
			if h := headerOf(t, raw); h["typ"] != "secevent+jwt" || h["alg"] != "ES256" || h["kid"] != in.App.Keys.ActiveKID() {
				t.Errorf("header = %v", h)
			}
			c := claimsOf(t, raw)
			evs := c["events"].(map[string]any)
			var ev map[string]any
			for _, v := range evs {
				ev = v.(map[string]any)
			}
			out = append(out, polled{raw, set, c, ev})
			ack = append(ack, jti)
		}
		if len(order) == 0 && len(ack) == 0 {
			return out
		}
		if len(order) == 0 {
			continue
		}
	}
}

// memberNames lists an object's member names.
func memberNames(m map[string]any) []string {
	out := keysOf(m)
	slices.Sort(out)
	return out
}

// checkShape compares a SET with a CAEP example: the same top-level
// claims and sub_id format, and every event member of the example except
// the listed vendor-specific ones.
func checkShape(t *testing.T, got polled, vector string, skip ...string) {
	t.Helper()
	want := vectorJSON(t, "caep", vector)
	for _, k := range keysOf(want) {
		if _, ok := got.claims[k]; !ok {
			t.Errorf("%s: claim %s of the example is missing", vector, k)
		}
	}
	ws := want["sub_id"].(map[string]any)
	gs := got.claims["sub_id"].(map[string]any)
	if ws["format"] != gs["format"] {
		t.Errorf("%s: sub_id format %v, example %v", vector, gs["format"], ws["format"])
	}
	var wev map[string]any
	for _, v := range want["events"].(map[string]any) {
		wev = v.(map[string]any)
	}
	for _, k := range keysOf(wev) {
		if slices.Contains(skip, k) {
			continue
		}
		if _, ok := got.event[k]; !ok {
			t.Errorf("%s: event member %s of the example is missing (have %v)", vector, k, memberNames(got.event))
		}
	}
}

// TestEventMapping drives the domain events through the bus (through the
// services and the admin API where a test can) and checks the SETs a
// poll stream receives: type, subject, event members, txn, and the shape
// of the CAEP 1.0 examples.
func TestEventMapping(t *testing.T) {
	in := startFake(t)
	tok := receiverToken(t, in)
	id := createStream(t, in, tok, map[string]any{})["stream_id"].(string)
	ctx := context.Background()
	alice, bob := userID(t, in, "alice"), userID(t, in, "bob")
	publish := func(e *model.Event) {
		t.Helper()
		if err := in.App.Bus.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	one := func(what string, evType string) polled {
		t.Helper()
		got := pollAll(t, in, tok, id)
		if len(got) != 1 || got[0].set.Event.Type != evType {
			var ts []string
			for _, g := range got {
				ts = append(ts, g.set.Event.Type)
			}
			t.Fatalf("%s: got SETs %v, want one %s", what, ts, evType)
		}
		return got[0]
	}
	none := func(what string) {
		t.Helper()
		if got := pollAll(t, in, tok, id); len(got) != 0 {
			t.Fatalf("%s: %d SETs, want none (first: %s)", what, len(got), got[0].set.Event.Type)
		}
	}

	t.Run("password change", func(t *testing.T) {
		if err := in.App.Identity.SetPassword(ctx, bob, bob, bobNewPassword); err != nil {
			t.Fatal(err)
		}
		s := one("password", cae.EventCredentialChange)
		if s.set.Event.CredentialType != "password" || s.set.Event.ChangeType != "update" || s.set.Event.InitiatingEntity != "user" {
			t.Errorf("event = %+v", s.event)
		}
		if s.set.Subject.Format != "iss_sub" || s.set.Subject.Sub != bob {
			t.Errorf("subject = %+v", s.set.Subject)
		}
		checkShape(t, s, "09-credential-change-example-fido2.json", "fido2_aaguid", "friendly_name")
	})
	t.Run("MFA enrolled", func(t *testing.T) {
		publish(&model.Event{Type: model.EventMFAEnrolled, Actor: "admin-1", UserID: bob, Data: map[string]string{"method": "totp"}})
		s := one("mfa", cae.EventCredentialChange)
		if s.set.Event.CredentialType != "app" || s.set.Event.ChangeType != "create" || s.set.Event.InitiatingEntity != "admin" {
			t.Errorf("event = %+v", s.event)
		}
	})
	t.Run("MFA removed", func(t *testing.T) {
		u, err := in.App.Identity.CreateUser(ctx, "admin-1", identity.NewUser{Username: "tina", Password: "a long enough passphrase",
			TOTPSecret: "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"})
		if err != nil {
			t.Fatal(err)
		}
		pollAll(t, in, tok, id) // the enrolment's SET
		if err := in.App.Identity.RemoveTOTP(ctx, "admin-1", u.ID); err != nil {
			t.Fatal(err)
		}
		s := one("mfa removed", cae.EventCredentialChange)
		e := s.set.Event
		if e.CredentialType != "app" || e.ChangeType != "delete" || e.InitiatingEntity != "admin" || e.ReasonAdmin["en"] == "" {
			t.Errorf("event = %+v", s.event)
		}
		if s.set.Subject.Format != "iss_sub" || s.set.Subject.Sub != u.ID {
			t.Errorf("subject = %+v", s.set.Subject)
		}
		evs, _ := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventMFARemoved}, UserID: u.ID})
		if len(evs) != 1 || s.set.TXN != evs[0].ID {
			t.Errorf("txn %q, events %v", s.set.TXN, evs)
		}
		checkShape(t, s, "09-credential-change-example-fido2.json", "fido2_aaguid", "friendly_name")
	})
	t.Run("admin revokes one session", func(t *testing.T) {
		sid := bobSession(t, in)
		adm := adminToken(t, in)
		r := call(t, in, http.MethodDelete, "/admin/api/v1/sessions/"+sid, adm, nil)
		if r.status != http.StatusNoContent {
			t.Fatalf("revoke session: %d %s", r.status, r.body)
		}
		s := one("revoke session", cae.EventSessionRevoked)
		sub := s.set.Subject
		if sub.Format != "complex" || sub.User == nil || sub.User.Sub != bob || sub.Session == nil || sub.Session.ID != sid {
			t.Errorf("subject = %s", s.claims["sub_id"])
		}
		if s.set.Event.InitiatingEntity != "admin" || s.set.Event.ReasonAdmin["en"] == "" {
			t.Errorf("event = %+v", s.event)
		}
		checkShape(t, s, "04-session-revoked-example-user-sub.json", "reason_user")
	})
	t.Run("admin revokes all sessions", func(t *testing.T) {
		bobSession(t, in)
		bobSession(t, in)
		adm := adminToken(t, in)
		r := call(t, in, http.MethodPost, "/admin/api/v1/users/"+bob+"/sessions/revoke", adm, nil)
		if r.status != http.StatusOK {
			t.Fatalf("revoke all: %d %s", r.status, r.body)
		}
		s := one("revoke all (one user-level SET, none per session)", cae.EventSessionRevoked)
		if s.set.Subject.Format != "iss_sub" || s.set.Subject.Sub != bob {
			t.Errorf("subject = %+v", s.set.Subject)
		}
	})
	t.Run("refresh token reuse", func(t *testing.T) {
		publish(&model.Event{Type: model.EventRefreshReuseDetected, Actor: "web", UserID: bob, SessionID: "s-reuse", Reason: "refresh_reuse"})
		publish(&model.Event{Type: model.EventSessionRevoked, Actor: "system", UserID: bob, SessionID: "s-reuse", Reason: "refresh_reuse"})
		s := one("reuse (the session.revoked that follows carries no SET)", cae.EventSessionRevoked)
		if s.set.Subject.Session == nil || s.set.Subject.Session.ID != "s-reuse" || s.set.Event.InitiatingEntity != "system" {
			t.Errorf("SET = %s %v", s.claims["sub_id"], s.event)
		}
	})
	t.Run("user logout", func(t *testing.T) {
		publish(&model.Event{Type: model.EventSessionLoggedOut, Actor: bob, UserID: bob, SessionID: "s-out", Reason: "user_logout"})
		s := one("logout", cae.EventSessionRevoked)
		if s.set.Event.InitiatingEntity != "user" || s.set.Subject.Session.ID != "s-out" {
			t.Errorf("SET = %v", s.event)
		}
	})
	t.Run("device disabled", func(t *testing.T) {
		publish(&model.Event{ID: "ev-dev-1", Type: model.EventDeviceDisabled, Actor: "admin-1", UserID: bob, DeviceID: "d-1",
			Reason: "device_disabled"})
		publish(&model.Event{Type: model.EventSessionRevoked, Actor: "admin-1", UserID: bob, SessionID: "s-d1", DeviceID: "d-1", Reason: "device_disabled"})
		got := pollAll(t, in, tok, id)
		if len(got) != 2 || got[0].set.Event.Type != cae.EventDeviceComplianceChange || got[1].set.Event.Type != cae.EventSessionRevoked {
			t.Fatalf("device disabled: %d SETs %v", len(got), got)
		}
		dc, sr := got[0].set, got[1].set
		if dc.Event.CurrentStatus != "not-compliant" || dc.Event.PreviousStatus != "compliant" || dc.Subject.Device.ID != "d-1" || dc.Subject.User.Sub != bob {
			t.Errorf("device-compliance-change = %+v %s", dc.Event, got[0].claims["sub_id"])
		}
		if sr.Subject.Session != nil || sr.Subject.Device.ID != "d-1" || sr.Subject.User.Sub != bob {
			t.Errorf("session-revoked subject = %s, want {user, device}", got[1].claims["sub_id"])
		}
		if dc.TXN != "ev-dev-1" || sr.TXN != "ev-dev-1" {
			t.Errorf("txn %q, %q: both SETs of one change must carry its event id", dc.TXN, sr.TXN)
		}
		checkShape(t, got[0], "12-device-compliance-change-examples-out-of-compliance.json", "reason_user")
		checkShape(t, got[1], "05-session-revoked-example-user-device.json", "reason_user")
	})
	t.Run("device lost", func(t *testing.T) {
		publish(&model.Event{Type: model.EventDeviceLost, Actor: "admin-1", UserID: bob, DeviceID: "d-2"})
		if got := pollAll(t, in, tok, id); len(got) != 2 {
			t.Fatalf("device lost: %d SETs", len(got))
		}
	})
	t.Run("compliant device marked lost", func(t *testing.T) {
		// The device's stored compliance becomes noncompliant with its
		// status; the SET's previous_status is what it was before.
		now := in.Clock.Now()
		d := &model.Device{ID: "d-lost-compliant", UserID: bob, JKT: "jkt-lost-compliant", Platform: "linux", TrustType: model.TrustRegistered,
			Status: model.DeviceActive, Compliance: model.Compliant, ComplianceFailures: json.RawMessage(`[]`), CreatedAt: now, LastSeen: now, UpdatedAt: now}
		if err := in.App.Store.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
		if _, err := in.App.Devices.MarkLost(ctx, "admin-1", d.ID); err != nil {
			t.Fatal(err)
		}
		if got, _ := in.App.Store.GetDevice(ctx, d.ID); got.Compliance != model.NonCompliant {
			t.Fatalf("stored compliance %s", got.Compliance)
		}
		got := pollAll(t, in, tok, id)
		if len(got) != 2 || got[0].set.Event.Type != cae.EventDeviceComplianceChange {
			t.Fatalf("device lost: %d SETs", len(got))
		}
		if e := got[0].set.Event; e.PreviousStatus != "compliant" || e.CurrentStatus != "not-compliant" || got[0].set.Subject.Device.ID != d.ID {
			t.Errorf("device-compliance-change = %+v", got[0].event)
		}
	})
	t.Run("device compliance", func(t *testing.T) {
		publish(&model.Event{Type: model.EventDeviceComplianceChanged, Actor: bob, UserID: bob, DeviceID: "d-3",
			Data: map[string]string{"previous": "compliant", "compliance": "noncompliant", "failing_rules": "disk_encryption"}})
		s := one("noncompliant", cae.EventDeviceComplianceChange)
		if s.set.Event.InitiatingEntity != "policy" || s.set.Event.CurrentStatus != "not-compliant" {
			t.Errorf("event = %v", s.event)
		}
		publish(&model.Event{Type: model.EventDeviceComplianceChanged, UserID: bob, DeviceID: "d-3",
			Data: map[string]string{"previous": "noncompliant", "compliance": "unknown"}})
		none("noncompliant -> unknown is no change in CAEP terms")
		publish(&model.Event{Type: model.EventDeviceComplianceChanged, UserID: bob, DeviceID: "d-3",
			Data: map[string]string{"previous": "unknown", "compliance": "compliant"}})
		if s := one("back to compliant", cae.EventDeviceComplianceChange); s.set.Event.CurrentStatus != "compliant" {
			t.Errorf("event = %v", s.event)
		}
	})
	t.Run("risk", func(t *testing.T) {
		if err := in.App.Identity.SetRisk(ctx, "system", alice, "high", "leaked_credentials"); err != nil {
			t.Fatal(err)
		}
		s := one("risk", cae.EventRiskLevelChange)
		e := s.set.Event
		if e.Principal != "USER" || e.CurrentLevel != "HIGH" || e.PreviousLevel != "LOW" || e.RiskReason != "leaked_credentials" || e.InitiatingEntity != "system" {
			t.Errorf("event = %+v", s.event)
		}
		checkShape(t, s, "15-examples.json")
	})
	t.Run("location policy", func(t *testing.T) {
		publish(&model.Event{Type: model.EventAccessPolicyChanged, Actor: "admin-1",
			Data: map[string]string{"version": "7", "locations_changed": "true"}})
		s := one("locations", cae.EventTokenClaimsChange)
		if s.set.Subject.Format != "complex" || s.set.Subject.Tenant == nil || s.set.Subject.Tenant.ID != in.URL {
			t.Errorf("subject = %s", s.claims["sub_id"])
		}
		var claims map[string]any
		json.Unmarshal(s.set.Event.Claims, &claims)
		if claims["ward_policy_version"] != float64(7) || claims["ward_named_locations_changed"] != true {
			t.Errorf("claims = %s", s.set.Event.Claims)
		}
		publish(&model.Event{Type: model.EventAccessPolicyChanged, Actor: "admin-1", Data: map[string]string{"version": "8"}})
		none("a policy change without location changes")
	})
	t.Run("covered and irrelevant events", func(t *testing.T) {
		for _, e := range []*model.Event{
			{Type: model.EventSessionRevoked, UserID: bob, SessionID: "s-x", Reason: "password_changed"},
			{Type: model.EventSessionRevoked, UserID: bob, SessionID: "s-y", Reason: "user_disabled"},
			{Type: model.EventTokenRevoked, UserID: bob, SessionID: "s-z", Reason: "client_revoked_refresh_token"},
			{Type: model.EventSignInSucceeded, UserID: bob, SessionID: "s-z"},
			{Type: model.EventUserUpdated, UserID: bob},
		} {
			publish(e)
		}
		none("events without SETs")
	})
	t.Run("user deleted", func(t *testing.T) {
		if err := in.App.Identity.DeleteUser(ctx, "admin-1", bob); err != nil {
			t.Fatal(err)
		}
		s := one("deleted", cae.EventAccountPurged)
		if s.set.Subject.Sub != bob || s.set.Event.InitiatingEntity != "admin" {
			t.Errorf("SET = %v %v", s.claims["sub_id"], s.event)
		}
	})
}

// bobNewPassword is bob's password after the password-change step.
const bobNewPassword = "another-long-passphrase-9"

// bobSession signs bob in through "web" and returns the new session id.
func bobSession(t *testing.T, in *wardtest.Instance) string {
	t.Helper()
	before, _ := in.App.Store.ListSessions(context.Background(), storeSessions(userID(t, in, "bob")))
	userToken(t, in, "bob", bobNewPassword)
	after, _ := in.App.Store.ListSessions(context.Background(), storeSessions(userID(t, in, "bob")))
	for _, s := range after {
		found := false
		for _, b := range before {
			found = found || b.ID == s.ID
		}
		if !found {
			return s.ID
		}
	}
	t.Fatal("no new session")
	return ""
}

// adminToken signs alice (admin, TOTP) in through "web" with ward:admin.
func adminToken(t *testing.T, in *wardtest.Instance) string {
	t.Helper()
	verifier, challenge := wardtest.PKCE()
	in.Clock.Advance(31 * time.Second) // a fresh TOTP step
	loc := in.Login(t, in.Browser(), in.AuthorizeURL("web", challenge, url.Values{"scope": {"openid ward:admin"}}),
		"alice", wardtest.AlicePassword, in.TOTP(t, 0))
	return exchangeCode(t, in, loc.Query().Get("code"), verifier)
}
