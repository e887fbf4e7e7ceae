package grant

import (
	"context"
	"errors"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/oautherr"
	"github.com/ward-idp/ward/internal/store"
)

// LiveSession loads a session and its user and checks both may still get
// (or use) tokens at now.
func LiveSession(ctx context.Context, s store.Store, now time.Time, sid, uid string) (*model.Session, *model.User, *oautherr.Error) {
	sess, err := s.GetSession(ctx, sid)
	if errors.Is(err, store.ErrNotFound) {
		sess = nil
	} else if err != nil {
		return nil, nil, oautherr.Server(err)
	}
	if sess == nil || !sess.Active(now) {
		return nil, nil, checkLive(sess, nil, now)
	}
	u, err := s.GetUser(ctx, uid)
	if errors.Is(err, store.ErrNotFound) {
		u = nil
	} else if err != nil {
		return nil, nil, oautherr.Server(err)
	}
	if e := checkLive(sess, u, now); e != nil {
		return nil, nil, e
	}
	return sess, u, nil
}

// checkLive checks that a session and its user (nil: not found) may
// still get tokens.
func checkLive(sess *model.Session, u *model.User, now time.Time) *oautherr.Error {
	switch {
	case sess == nil:
		return oautherr.New(oautherr.InvalidGrant, "the sign-in session has ended").WithReason("session_unknown")
	case !sess.Active(now):
		return oautherr.New(oautherr.InvalidGrant, "the sign-in session has ended").WithReason("session_inactive")
	case u == nil:
		return oautherr.New(oautherr.InvalidGrant, "the user no longer exists").WithReason("user_unknown")
	case u.Disabled:
		return oautherr.New(oautherr.InvalidGrant, "the user is disabled").WithReason("user_disabled")
	}
	return nil
}
