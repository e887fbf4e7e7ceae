package admin_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/identity/webauthntest"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

// The passkeys of a user: listed without key material, one removed
// (mfa.removed attributed to the administrator), all reset for a user who
// lost them (passkey.recovery, risk.detected from admin); a non-admin is
// refused and changes nothing.
func TestPasskeysAdmin(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		c.Issuer = strings.Replace(c.Issuer, "127.0.0.1", "localhost", 1)
	}})
	ctx := context.Background()
	alice := admin(t, in)
	aliceID := userID(t, in, "alice")
	bobID := userID(t, in, "bob")
	bobU, _ := in.App.Store.GetUser(ctx, bobID)
	// Bob's token first: with a passkey, his password alone no longer
	// signs him in.
	bob := signIn(t, in, "bob", "openid ward:admin")
	var ids []string
	for _, kind := range []string{identity.MethodPasskey, identity.MethodSecurityKey} {
		in.Clock.Advance(time.Second) // listed oldest first
		c, err := in.App.Identity.BeginPasskeyRegistration(ctx, bobU, kind)
		if err != nil {
			t.Fatal(err)
		}
		resp, _, err := webauthntest.New(in.URL).Create(c.Options)
		if err != nil {
			t.Fatal(err)
		}
		cred, err := in.App.Identity.FinishPasskeyRegistration(ctx, bobID, bobU, c.ID, kind+" of bob", resp)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, cred.ID)
	}

	if r := alice.do(t, req{method: "GET", path: "/users/" + bobID}); r.JSON["passkeys"] != float64(2) {
		t.Errorf("user: %s", r.Body)
	}
	if r := alice.do(t, req{method: "GET", path: "/users"}); r.list("users")[1]["passkeys"] != float64(2) || r.list("users")[0]["passkeys"] != float64(0) {
		t.Errorf("users: %s", r.Body)
	}
	r := alice.do(t, req{method: "GET", path: "/users/" + bobID + "/passkeys"})
	wantStatus(t, r, 200, "")
	l := r.list("passkeys")
	if len(l) != 2 || l[0]["kind"] != "passkey" || l[1]["kind"] != "security_key" || l[0]["name"] != "passkey of bob" || l[0]["attestation_format"] != "none" {
		t.Fatalf("list: %s", r.Body)
	}
	if strings.Contains(r.Body, "public_key") || strings.Contains(r.Body, "credential_id") {
		t.Errorf("key material in the listing: %s", r.Body)
	}
	wantStatus(t, alice.do(t, req{method: "GET", path: "/users/nobody/passkeys"}), 404, "not_found")

	// Rename: 200 with the passkey, the name trimmed, passkey.renamed
	// by the administrator.
	r = alice.do(t, req{method: "PATCH", path: "/users/" + bobID + "/passkeys/" + ids[1], body: map[string]any{"name": "  Bob's YubiKey 5C "}})
	wantStatus(t, r, 200, "")
	if r.JSON["name"] != "Bob's YubiKey 5C" || r.JSON["id"] != ids[1] || r.JSON["kind"] != "security_key" {
		t.Errorf("rename: %s", r.Body)
	}
	if l := alice.do(t, req{method: "GET", path: "/users/" + bobID + "/passkeys"}).list("passkeys"); l[1]["name"] != "Bob's YubiKey 5C" {
		t.Errorf("after rename: %v", l)
	}
	evs := events(t, in, model.EventPasskeyRenamed)
	if len(evs) != 1 || evs[0].UserID != bobID || evs[0].Actor != aliceID || evs[0].Data["credential"] != ids[1] ||
		evs[0].Data["name"] != "Bob's YubiKey 5C" || evs[0].Data["previous"] != "security_key of bob" {
		t.Fatalf("passkey.renamed: %+v", evs)
	}
	// Refused names: 400 invalid_request, nothing renamed.
	for label, body := range map[string]any{
		"empty":          map[string]any{"name": ""},
		"blank":          map[string]any{"name": "   "},
		"missing":        map[string]any{},
		"not a string":   map[string]any{"name": 7},
		"too long":       map[string]any{"name": strings.Repeat("k", 65)},
		"control":        map[string]any{"name": "key\u0007"},
		"newline":        map[string]any{"name": "key\nforged"},
		"RTL override":   map[string]any{"name": "key\u202egpj.exe"},
		"invalid UTF-8":  "{\"name\": \"key\xff\xfe\"}",
		"lone surrogate": `{"name": "key\ud800"}`,
		"unknown field":  map[string]any{"name": "ok", "public_key": "x"},
	} {
		r := alice.do(t, req{method: "PATCH", path: "/users/" + bobID + "/passkeys/" + ids[1], body: body})
		if r.Status != 400 || r.JSON["error"] != "invalid_request" {
			t.Errorf("%s: %d %s, want 400 invalid_request", label, r.Status, r.Body)
		}
	}
	if len(events(t, in, model.EventPasskeyRenamed)) != 1 {
		t.Errorf("a refused rename recorded an event")
	}
	// Another user's passkey under this user, an unknown one: 404.
	wantStatus(t, alice.do(t, req{method: "PATCH", path: "/users/" + aliceID + "/passkeys/" + ids[1], body: map[string]any{"name": "stolen"}}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "PATCH", path: "/users/" + bobID + "/passkeys/nope", body: map[string]any{"name": "x"}}), 404, "not_found")
	// Not an administrator (bob's own passkey, bob's token without the role).
	wantStatus(t, bob.do(t, req{method: "PATCH", path: "/users/" + bobID + "/passkeys/" + ids[1], body: map[string]any{"name": "mine"}}), 403, "access_denied")
	if l := alice.do(t, req{method: "GET", path: "/users/" + bobID + "/passkeys"}).list("passkeys"); l[1]["name"] != "Bob's YubiKey 5C" {
		t.Errorf("after refused renames: %v", l)
	}

	// Not an administrator.
	wantStatus(t, bob.do(t, req{method: "DELETE", path: "/users/" + bobID + "/passkeys/" + ids[0]}), 403, "access_denied")

	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/users/" + bobID + "/passkeys/" + ids[0]}), 204, "")
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/users/" + bobID + "/passkeys/" + ids[0]}), 404, "not_found")
	wantStatus(t, alice.do(t, req{method: "DELETE", path: "/users/" + aliceID + "/passkeys/" + ids[1]}), 404, "not_found")
	evs = events(t, in, model.EventMFARemoved)
	if len(evs) != 1 || evs[0].UserID != bobID || evs[0].Actor != aliceID || evs[0].Data["method"] != "passkey" || evs[0].Data["credential"] != ids[0] {
		t.Fatalf("mfa.removed: %+v", evs)
	}

	r = alice.do(t, req{method: "POST", path: "/users/" + bobID + "/passkeys/reset", body: map[string]any{"reason": "lost phone; identity checked in person"}})
	wantStatus(t, r, 200, "")
	if r.JSON["removed"] != float64(1) {
		t.Fatalf("reset: %s", r.Body)
	}
	rec := events(t, in, model.EventPasskeyRecovery)
	if len(rec) != 1 || rec[0].Actor != aliceID || rec[0].Reason != "admin_reset" || rec[0].Data["removed"] != "1" || rec[0].Data["note"] == "" {
		t.Fatalf("passkey.recovery: %+v", rec)
	}
	det := events(t, in, model.EventRiskDetected)
	if len(det) != 1 || det[0].UserID != bobID || det[0].Data[model.DataDetectionSource] != model.DetectionSourceAdmin {
		t.Fatalf("risk.detected: %+v", det)
	}
	if r := alice.do(t, req{method: "GET", path: "/users/" + bobID + "/passkeys"}); len(r.list("passkeys")) != 0 {
		t.Errorf("after reset: %s", r.Body)
	}
	// The risk engine takes the detection: bob's risk is raised.
	deadline := time.Now().Add(10 * time.Second)
	for {
		u, err := in.App.Store.GetUser(ctx, bobID)
		if err != nil {
			t.Fatal(err)
		}
		if u.RiskLevel == model.RiskMedium {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob's risk after the reset: %q, want medium", u.RiskLevel)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
