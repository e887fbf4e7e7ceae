package grant

import (
	"context"
	"strconv"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/oautherr"
)

// credential is what a refused request presented, as far as Ward found
// it: whose it is and the key it is bound to. A refusal names them in its
// audit event, so that a stolen refresh token replayed with another key
// is recorded against the session it was stolen from.
type credential struct {
	userID, sessionID, deviceID string
	boundJKT                    string
	gen                         int // refresh-token generation presented (0: not a refresh token)
}

func refreshCredential(rt *model.RefreshToken) credential {
	return credential{userID: rt.UserID, sessionID: rt.SessionID, deviceID: rt.DeviceID, boundJKT: rt.JKT, gen: rt.Generation}
}

// ProofStatus is the status of req's DPoP proof against a credential
// bound to boundJKT ("" when unbound): ok, missing, wrong_key or none.
// A proof the endpoint refused never reaches a grant (it is invalid).
func ProofStatus(req *Request, boundJKT string) activity.Proof {
	switch {
	case req.Proof == nil && boundJKT != "":
		return activity.ProofMissing
	case req.Proof == nil:
		return activity.ProofNone
	case boundJKT != "" && req.Proof.JKT != boundJKT:
		return activity.ProofWrongKey
	}
	return activity.ProofOK
}

// attribute names cred on refusal e (unless a step named a subject
// already) with the proof status of req against it. Nothing of it is
// sent to the client.
func attribute(e *oautherr.Error, req *Request, cred credential) *oautherr.Error {
	if e == nil || e.Subject != (oautherr.Subject{}) || cred.userID == "" {
		return e
	}
	e.Subject = oautherr.Subject{UserID: cred.userID, SessionID: cred.sessionID, DeviceID: cred.deviceID}
	e.SetData(activity.DataProof, string(ProofStatus(req, cred.boundJKT)))
	if cred.boundJKT != "" {
		e.SetData(activity.DataBoundJKT, cred.boundJKT)
	}
	if cred.gen > 0 {
		e.SetData(activity.DataRTGenIn, strconv.Itoa(cred.gen))
	}
	return e
}

// Attributor is a grant that can name the credential of a request refused
// before the grant ran (an invalid DPoP proof): the refresh-token grant.
// Only refused requests pay for its lookup.
type Attributor interface {
	Attribute(ctx context.Context, req *Request, e *oautherr.Error)
}

// Attribute names the refresh token req presents, if Ward knows it, on e
// (whichever client it was issued to: another client presenting it is
// worth recording against its session too). The proof was refused, so the status stays
// whatever the endpoint set (invalid).
func (g refreshToken) Attribute(ctx context.Context, req *Request, e *oautherr.Error) {
	raw := req.Get("refresh_token")
	if raw == "" || e == nil || e.Subject != (oautherr.Subject{}) {
		return
	}
	rt, err := g.Store.GetRefreshToken(ctx, g.TokenHasher.Sum(raw))
	if err != nil {
		return
	}
	e.Subject = oautherr.Subject{UserID: rt.UserID, SessionID: rt.SessionID, DeviceID: rt.DeviceID}
	if rt.JKT != "" {
		e.SetData(activity.DataBoundJKT, rt.JKT)
	}
	if rt.Generation > 0 {
		e.SetData(activity.DataRTGenIn, strconv.Itoa(rt.Generation))
	}
}
