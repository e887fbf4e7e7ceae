package server_test

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// lastActivity is the activity of the newest stored event of type typ.
func lastActivity(t *testing.T, in *wardtest.Instance, typ model.EventType) activity.Activity {
	t.Helper()
	evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{Types: []model.EventType{typ}, Limit: 1})
	if err != nil || len(evs) == 0 {
		t.Fatalf("no %s recorded: %v", typ, err)
	}
	e := evs[0].Event
	a, ok := activity.FromEvent(&e)
	if !ok {
		t.Fatalf("%s is not activity", typ)
	}
	return a
}

// A copied refresh token replayed at the token endpoint is recorded
// against the session it was stolen from: with the thief's key
// (wrong_key), without a proof (missing) and with a broken proof
// (invalid, refused before the grant), each with the user, session,
// client, the key the token is bound to and its generation. The thief is
// told nothing of it.
func TestTokenFailuresAttributed(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{Configure: noAutoRevoke})
	victim, thief := newSigner(t), newSigner(t)
	code, verifier := codeFlow(t, in, "spa", victim, nil)
	r := exchange(t, in, "spa", code, verifier, victim)
	if r.Status != 200 {
		t.Fatalf("token: %d %s", r.Status, r.Body)
	}
	sid := claims(t, r.str("access_token"))["sid"].(string)
	issued := lastActivity(t, in, model.EventTokenIssued)
	if issued.Kind != activity.KindToken || issued.Grant != "authorization_code" || issued.RefreshGenIssued != 1 || !issued.MFA {
		t.Fatalf("code exchange activity: %+v", issued)
	}
	r = refresh(t, in, "spa", r.str("refresh_token"), victim)
	if r.Status != 200 {
		t.Fatalf("refresh: %d %s", r.Status, r.Body)
	}
	rt := r.str("refresh_token")
	ok := lastActivity(t, in, model.EventTokenRefreshed)
	if ok.Kind != activity.KindRefresh || ok.RefreshGenPresented != 1 || ok.RefreshGenIssued != 2 || ok.Proof != activity.ProofOK ||
		ok.SessionID != sid || ok.IP == "" || ok.Result != activity.ResultSuccess {
		t.Fatalf("refresh activity: %+v", ok)
	}

	check := func(name string, typ model.EventType, wantProof activity.Proof, wantJKT string) {
		t.Helper()
		a := lastActivity(t, in, typ)
		if a.Kind != activity.KindRefresh || a.Grant != "refresh_token" || a.Result != activity.ResultFailure ||
			a.SessionID != sid || a.UserID == "" || a.ClientID != "spa" || a.BoundJKT != victim.Thumbprint() ||
			a.Proof != wantProof || a.JKT != wantJKT || a.RefreshGenPresented != 2 || a.IP == "" {
			t.Errorf("%s: activity %+v", name, a)
		}
	}
	r = refresh(t, in, "spa", rt, thief)
	wantError(t, r, 400, "invalid_grant")
	if strings.Contains(r.Body, "key") {
		t.Errorf("the thief is told about the key: %s", r.Body)
	}
	check("another key", model.EventTokenRequestFailed, activity.ProofWrongKey, thief.Thumbprint())

	// spa must send proofs: refused at the door, still attributed.
	r = refresh(t, in, "spa", rt, nil)
	wantError(t, r, 400, "invalid_dpop_proof")
	check("no proof", model.EventDPoPProofRejected, activity.ProofMissing, "")

	// A proof for another URL: refused at the door, still attributed.
	r = do(t, in, call{path: "/token", signer: thief, proofURL: in.URL + "/elsewhere",
		form: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"spa"}}})
	wantError(t, r, 400, "invalid_dpop_proof")
	check("invalid proof", model.EventDPoPProofRejected, activity.ProofInvalid, "")

	// None of it used the token up.
	if r := refresh(t, in, "spa", rt, victim); r.Status != 200 {
		t.Fatalf("victim's refresh after the attempts: %d %s", r.Status, r.Body)
	}
}
