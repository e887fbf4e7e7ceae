package rs

import (
	"context"
	"testing"
	"time"
)

// TestRiskHighSparesSessionsAfterRemediation: a risk-level-change to HIGH
// about a user ends the tokens issued up to its event_timestamp — the
// time Ward says the level is about (the user's remediation, when the
// user remediated after the activity) — and not those of the sessions
// signed in after it, which Ward's response spared; whatever order the
// SETs come in, and however often. An old SET cannot kill the spared
// tokens, and a later LOW resurrects nothing.
func TestRiskHighSparesSessionsAfterRemediation(t *testing.T) {
	for _, order := range []string{"in order", "HIGH first", "replayed and late"} {
		t.Run(order, func(t *testing.T) {
			f := newRecvFixture(t)
			iss := f.idp.issuer
			user := map[string]any{"format": "iss_sub", "iss": iss, "sub": "alice"}
			now := f.clk.Now()
			activity := now.Add(-50 * time.Minute)
			remediated := now.Add(-30 * time.Minute)
			at := func(ts time.Time) func(map[string]any) {
				return func(c map[string]any) { c["iat"] = ts.Unix() }
			}
			// The password change: credential-change at the remediation.
			change := f.set(EventCredentialChange, map[string]any{"credential_type": "password", "change_type": "update",
				"event_timestamp": remediated.Unix()}, user, at(remediated))
			// The late detection: HIGH now, about the account up to the
			// remediation.
			high := f.set(EventRiskLevelChange, map[string]any{"principal": "USER", "current_level": "HIGH", "previous_level": "LOW",
				"event_timestamp": remediated.Unix()}, user)
			// An older HIGH (an earlier detection, before the activity).
			oldHigh := f.set(EventRiskLevelChange, map[string]any{"principal": "USER", "current_level": "HIGH",
				"event_timestamp": activity.Add(-20 * time.Minute).Unix()}, user, at(activity.Add(-20*time.Minute)))
			low := f.set(EventRiskLevelChange, map[string]any{"principal": "USER", "current_level": "LOW", "previous_level": "HIGH"}, user)
			process := func(sets ...string) {
				t.Helper()
				for _, s := range sets {
					if _, err := f.r.Process(context.Background(), s); err != nil {
						t.Fatal(err)
					}
				}
			}
			switch order {
			case "in order":
				process(oldHigh, change, high)
			case "HIGH first":
				process(high, change, oldHigh)
			case "replayed and late":
				process(high, high, change, high, oldHigh, change)
			}
			process(low)
			tok := func(sid string, issued time.Time) *TokenInfo {
				return &TokenInfo{Issuer: iss, Subject: "alice", SessionID: sid, IssuedAt: issued, ExpiresAt: issued.Add(time.Hour)}
			}
			for _, c := range []struct {
				name    string
				tok     *TokenInfo
				refused bool
			}{
				{"issued before the activity", tok("old", activity.Add(-10*time.Minute)), true},
				{"issued after the activity (maybe the attacker's)", tok("attacker", activity.Add(5*time.Minute)), true},
				{"issued at the remediation", tok("straggler", remediated), true},
				{"spared session, after the remediation", tok("mine", remediated.Add(time.Second)), false},
				{"spared session, refreshed later", tok("mine", remediated.Add(20*time.Minute)), false},
				{"issued after the HIGH", tok("new", now.Add(time.Second)), false},
			} {
				d := f.state.Check(c.tok)
				if got := d != nil && d.Kind == Revoked; got != c.refused {
					t.Errorf("%s: decision %+v, want refused %v", c.name, d, c.refused)
				}
			}
		})
	}
}

// TestRiskHighWithoutTimestamp: a transmitter that gives no
// event_timestamp says the level is about the account up to the SET's
// iat: every token issued before it ends.
func TestRiskHighWithoutTimestamp(t *testing.T) {
	f := newRecvFixture(t)
	iss := f.idp.issuer
	now := f.clk.Now()
	set := f.set(EventRiskLevelChange, map[string]any{"principal": "USER", "current_level": "HIGH"},
		map[string]any{"format": "iss_sub", "iss": iss, "sub": "alice"})
	if _, err := f.r.Process(context.Background(), set); err != nil {
		t.Fatal(err)
	}
	if d := f.state.Check(&TokenInfo{Issuer: iss, Subject: "alice", IssuedAt: now.Add(-time.Second)}); d == nil || d.Kind != Revoked {
		t.Errorf("a token issued before the SET: %+v, want revoked", d)
	}
	if d := f.state.Check(&TokenInfo{Issuer: iss, Subject: "alice", IssuedAt: now.Add(time.Second)}); d != nil {
		t.Errorf("a token issued after the SET: %+v, want accepted", d)
	}
}

// TestRequirementsOutOfOrder: a MEDIUM risk (step-up) of a later event is
// neither replaced by an earlier one delivered late nor lifted by an
// earlier assurance decrease.
func TestRequirementsOutOfOrder(t *testing.T) {
	f := newRecvFixture(t, func(c *ReceiverConfig) { c.StepUpACR = "urn:ward:acr:mfa" })
	iss := f.idp.issuer
	user := map[string]any{"format": "iss_sub", "iss": iss, "sub": "alice"}
	now := f.clk.Now()
	earlier := now.Add(-20 * time.Minute)
	newer := f.set(EventRiskLevelChange, map[string]any{"principal": "USER", "current_level": "MEDIUM", "event_timestamp": now.Unix()}, user)
	older := f.set(EventRiskLevelChange, map[string]any{"principal": "USER", "current_level": "MEDIUM", "event_timestamp": earlier.Unix()}, user,
		func(c map[string]any) { c["iat"] = earlier.Unix() })
	decrease := f.set(EventAssuranceLevelChange, map[string]any{"namespace": "x", "current_level": "urn:ward:acr:password",
		"change_direction": "decrease", "event_timestamp": earlier.Unix()}, user, func(c map[string]any) { c["iat"] = earlier.Unix() })
	for _, s := range []string{newer, older, decrease} {
		if _, err := f.r.Process(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	// Authenticated with MFA between the two events: meets the older
	// requirement, not the newer one.
	tok := &TokenInfo{Issuer: iss, Subject: "alice", ACR: "urn:ward:acr:mfa", AuthTime: now.Add(-5 * time.Minute), IssuedAt: now.Add(time.Second)}
	if d := f.state.Check(tok); d == nil || d.Kind != StepUp {
		t.Errorf("after the late earlier SETs: %+v, want the newer step-up", d)
	}
	// A decrease after the requirement lifts it.
	later := f.set(EventAssuranceLevelChange, map[string]any{"namespace": "x", "current_level": "urn:ward:acr:password",
		"change_direction": "decrease"}, user, func(c map[string]any) { c["jti"] = "later-decrease" })
	f.clk.Advance(time.Minute)
	if _, err := f.r.Process(context.Background(), later); err != nil {
		t.Fatal(err)
	}
	if d := f.state.Check(tok); d != nil {
		t.Errorf("after a later decrease: %+v, want accepted", d)
	}
}

// TestRiskLowLiftsStepUp: a risk-level-change back to LOW lifts the
// step-up an earlier MEDIUM asked for (Ward's Conditional Access no
// longer asks for it either), but not one of a MEDIUM after it (a late
// LOW), not an assurance-level-change's requirement, and no revocation.
func TestRiskLowLiftsStepUp(t *testing.T) {
	f := newRecvFixture(t, func(c *ReceiverConfig) { c.StepUpACR = "urn:ward:acr:mfa" })
	iss := f.idp.issuer
	now := f.clk.Now()
	earlier := now.Add(-20 * time.Minute)
	user := func(sub string) map[string]any { return map[string]any{"format": "iss_sub", "iss": iss, "sub": sub} }
	level := func(sub, lvl string, ts time.Time, jti string) string {
		return f.set(EventRiskLevelChange, map[string]any{"principal": "USER", "current_level": lvl, "event_timestamp": ts.Unix()}, user(sub),
			func(c map[string]any) { c["iat"] = ts.Unix(); c["jti"] = jti })
	}
	process := func(sets ...string) {
		t.Helper()
		for _, s := range sets {
			if _, err := f.r.Process(context.Background(), s); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A password-only token issued before any of it.
	tok := func(sub string) *TokenInfo {
		return &TokenInfo{Issuer: iss, Subject: sub, ACR: "urn:ward:acr:password", AuthTime: earlier.Add(-time.Hour),
			IssuedAt: now.Add(time.Second), ExpiresAt: now.Add(time.Hour)}
	}
	stepUp := func(sub string) bool {
		d := f.state.Check(tok(sub))
		if d != nil && d.Kind != StepUp {
			t.Fatalf("%s: decision %+v, want step-up or nothing", sub, d)
		}
		return d != nil
	}

	// MEDIUM, then LOW: lifted.
	process(level("alice", "MEDIUM", earlier, "a1"))
	if !stepUp("alice") {
		t.Fatal("alice: no step-up after MEDIUM")
	}
	process(level("alice", "LOW", now, "a2"))
	if stepUp("alice") {
		t.Error("alice: step-up still asked for after LOW")
	}

	// A late LOW (before the MEDIUM) lifts nothing.
	process(level("bob", "MEDIUM", now, "b1"), level("bob", "LOW", earlier, "b2"))
	if !stepUp("bob") {
		t.Error("bob: an earlier LOW delivered late lifted a newer MEDIUM's step-up")
	}

	// An assurance requirement stays.
	process(f.set(EventAssuranceLevelChange, map[string]any{"namespace": "x", "current_level": "urn:ward:acr:mfa",
		"change_direction": "increase", "event_timestamp": earlier.Unix()}, user("carol"),
		func(c map[string]any) { c["iat"] = earlier.Unix(); c["jti"] = "c1" }))
	process(level("carol", "LOW", now, "c2"))
	if !stepUp("carol") {
		t.Error("carol: LOW lifted an assurance-level-change requirement")
	}

	// HIGH then LOW: the revocation stays.
	process(level("dave", "HIGH", now, "d1"), level("dave", "LOW", now.Add(time.Second), "d2"))
	old := &TokenInfo{Issuer: iss, Subject: "dave", IssuedAt: now.Add(-time.Minute), ExpiresAt: now.Add(time.Hour)}
	if d := f.state.Check(old); d == nil || d.Kind != Revoked {
		t.Errorf("dave: %+v after HIGH then LOW, want revoked", d)
	}
}
