package admin_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/cae"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/wardtest"
)

// TestIncidentActionsReachReceivers: response actions taken from an
// incident through the admin API go through CAE: a Shared Signals
// receiver's poll stream gets the SETs of each (session-revoked for the
// revocation, RISC credential-compromise for the confirmed compromise,
// account-disabled for the disabled user), about the incident's user.
func TestIncidentActionsReachReceivers(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	alice := admin(t, in)
	bobID := userID(t, in, "bob")
	ctx := context.Background()
	st, err := in.App.CAE.CreateStream(ctx, "service", cae.StreamRequest{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := in.App.Store.CreateSession(ctx, &model.Session{ID: "bob-s1", UserID: bobID, AuthTime: now, AMR: []string{"pwd"},
		CreatedAt: now, LastSeen: now, ExpiresAt: now.Add(time.Hour), IdleTimeout: time.Hour}); err != nil {
		t.Fatal(err)
	}
	e := &model.Event{ID: "ev-d1", Type: model.EventRiskDetected, Time: now, UserID: bobID, SessionID: "bob-s1", IP: "203.0.113.7",
		Reason: "token_replay_wrong_key", Data: map[string]string{model.DataDetectionID: "d1", model.DataDetectionSeverity: "low",
			model.DataDetectionConfidence: "0.9"}}
	if _, err := in.App.Store.AppendEvent(ctx, e); err != nil {
		t.Fatal(err)
	}
	if err := in.App.Incidents.HandleDetection(ctx, e); err != nil {
		t.Fatal(err)
	}
	for _, action := range []string{"revoke_sessions", "confirm_compromised", "disable_user"} {
		r := alice.do(t, req{method: "POST", path: "/incidents/INC-1/actions", body: map[string]string{"action": action, "reason": "stolen token"}})
		wantStatus(t, r, 200, "")
	}
	seen := map[string]string{} // event type -> subject sub
	deadline := time.Now().Add(5 * time.Second)
	for len(seen) < 3 && time.Now().Before(deadline) {
		max := 50
		resp, err := in.App.CAE.Poll(ctx, "service", st.ID, cae.PollRequest{MaxEvents: &max, ReturnImmediately: true})
		if err != nil {
			t.Fatal(err)
		}
		var ack []string
		for _, s := range resp.Sets {
			ack = append(ack, s.JTI)
			parts := strings.Split(s.SET, ".")
			payload, err := base64.RawURLEncoding.DecodeString(parts[1])
			if err != nil {
				t.Fatal(err)
			}
			var claims struct {
				SubID struct {
					Sub  string `json:"sub"`
					User struct {
						Sub string `json:"sub"`
					} `json:"user"`
				} `json:"sub_id"`
				Events map[string]json.RawMessage `json:"events"`
			}
			if err := json.Unmarshal(payload, &claims); err != nil {
				t.Fatal(err)
			}
			for typ, body := range claims.Events {
				seen[typ] = claims.SubID.Sub + claims.SubID.User.Sub
				if typ == cae.EventCredentialCompromise && !strings.Contains(string(body), `"credential_type":"password"`) {
					t.Errorf("credential-compromise body %s", body)
				}
			}
		}
		if len(ack) > 0 {
			zero := 0
			if _, err := in.App.CAE.Poll(ctx, "service", st.ID, cae.PollRequest{MaxEvents: &zero, Ack: ack, ReturnImmediately: true}); err != nil {
				t.Fatal(err)
			}
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, typ := range []string{cae.EventSessionRevoked, cae.EventCredentialCompromise, cae.EventAccountDisabled} {
		if seen[typ] != bobID {
			t.Errorf("no %s SET about bob (SETs seen: %v)", typ, seen)
		}
	}
}
