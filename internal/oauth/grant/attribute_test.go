package grant

import (
	"net/http"
	"testing"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/oautherr"
)

// Refresh tokens count their generations: 1 for the code's, +1 at each
// rotation, stored and recorded on the refresh events.
func TestRefreshGenerations(t *testing.T) {
	f := newFixture(t)
	s := f.signer()
	code, verifier := f.code("spa", f.session(), s.Thumbprint())
	rt := f.mustGrant(f.redeem("spa", code, verifier, s)).RefreshToken
	if ev := f.eventsOf(model.EventTokenIssued)[0]; ev.Data[activity.DataRTGenOut] != "1" || ev.Data[activity.DataRTGenIn] != "" ||
		ev.Data[activity.DataProof] != string(activity.ProofOK) || ev.Data[activity.DataJKT] != s.Thumbprint() {
		t.Fatalf("token.issued data: %v", ev.Data)
	}
	for gen := 2; gen <= 4; gen++ {
		rt = f.mustGrant(f.refresh("spa", rt, s)).RefreshToken
		stored, err := f.st.GetRefreshToken(f.ctx, f.hasher.Sum(rt))
		if err != nil || stored.Generation != gen {
			t.Fatalf("generation %d: stored %+v %v", gen, stored, err)
		}
		evs := f.eventsOf(model.EventTokenRefreshed)
		ev := evs[len(evs)-1]
		a, ok := activity.FromEvent(ev)
		if !ok || a.Kind != activity.KindRefresh || a.RefreshGenPresented != gen-1 || a.RefreshGenIssued != gen ||
			a.Proof != activity.ProofOK || a.JKT != s.Thumbprint() || a.BoundJKT != s.Thumbprint() || a.UserID != f.alice.ID {
			t.Fatalf("refresh %d activity: %+v", gen, a)
		}
	}
}

// A refused refresh names the session of the token it presented, the key
// it is bound to, the key that made the proof and the proof's status:
// a copied refresh token replayed with the thief's key is recorded
// against the victim's session as wrong_key, without a proof as missing.
// The client is told nothing of it.
func TestRefreshRefusalAttributed(t *testing.T) {
	f := newFixture(t)
	victim, thief := f.signer(), f.signer()
	sess := f.session()
	code, verifier := f.code("spa", sess, victim.Thumbprint())
	rt1 := f.mustGrant(f.redeem("spa", code, verifier, victim)).RefreshToken
	rt2 := f.mustGrant(f.refresh("spa", rt1, victim)).RefreshToken // generation 2

	for _, tc := range []struct {
		name  string
		req   *Request
		proof activity.Proof
		jkt   string
	}{
		{"another key", f.refresh("spa", rt2, thief), activity.ProofWrongKey, thief.Thumbprint()},
		{"no proof", f.refresh("spa", rt2, nil), activity.ProofMissing, ""},
	} {
		resp, e := f.grant(tc.req)
		wantRefused(t, resp, e, oautherr.InvalidGrant, http.StatusBadRequest, "refresh_key_mismatch")
		if e.Subject != (oautherr.Subject{UserID: f.alice.ID, SessionID: sess.ID}) {
			t.Errorf("%s: subject %+v", tc.name, e.Subject)
		}
		if e.Data[activity.DataProof] != string(tc.proof) || e.Data[activity.DataBoundJKT] != victim.Thumbprint() || e.Data[activity.DataRTGenIn] != "2" {
			t.Errorf("%s: data %v", tc.name, e.Data)
		}
		if e.Description != "refresh token is invalid or expired" {
			t.Errorf("%s: description %q tells the client why", tc.name, e.Description)
		}
	}

	// The victim's rotated generation 1 presented again by the thief: the
	// reuse record names both keys and the generation.
	resp, e := f.grant(f.refresh("spa", rt1, thief))
	wantRefused(t, resp, e, oautherr.InvalidGrant, http.StatusBadRequest, "refresh_reused")
	if e.Subject.SessionID != sess.ID || e.Data[activity.DataProof] != string(activity.ProofWrongKey) || e.Data[activity.DataRTGenIn] != "1" {
		t.Errorf("reuse refusal: %+v %v", e.Subject, e.Data)
	}
	evs := f.eventsOf(model.EventRefreshReuseDetected)
	if len(evs) != 1 {
		t.Fatalf("%d reuse events", len(evs))
	}
	a, _ := activity.FromEvent(evs[0])
	if a.SessionID != sess.ID || a.UserID != f.alice.ID || a.Proof != activity.ProofWrongKey || a.JKT != thief.Thumbprint() ||
		a.BoundJKT != victim.Thumbprint() || a.RefreshGenPresented != 1 || a.Result != activity.ResultFailure || a.Kind != activity.KindRefresh {
		t.Errorf("reuse activity: %+v", a)
	}

	// Unknown tokens name nobody.
	_, e = f.grant(f.refresh("spa", "no-such-token", thief))
	if e.Subject != (oautherr.Subject{}) || e.Data[activity.DataBoundJKT] != "" {
		t.Errorf("unknown token attributed: %+v %v", e.Subject, e.Data)
	}
}

// A refused code exchange names the code's session and the key its
// authorization request committed to.
func TestCodeRefusalAttributed(t *testing.T) {
	f := newFixture(t)
	bound, other := f.signer(), f.signer()
	sess := f.session()
	code, verifier := f.code("spa", sess, bound.Thumbprint())
	_, e := f.grant(f.redeem("spa", code, verifier, other))
	if e == nil || e.Reason != "dpop_jkt_mismatch" {
		t.Fatalf("got %v", e)
	}
	if e.Subject.SessionID != sess.ID || e.Subject.UserID != f.alice.ID || e.Data[activity.DataProof] != string(activity.ProofWrongKey) ||
		e.Data[activity.DataBoundJKT] != bound.Thumbprint() {
		t.Errorf("code refusal: %+v %v", e.Subject, e.Data)
	}
}
