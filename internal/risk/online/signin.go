package online

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/geo"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/risk/assess"
	"github.com/ward-idp/ward/internal/risk/detect"
	"github.com/ward-idp/ward/internal/store"
)

// History is what the sign-in judge reads: the audit log.
type History interface {
	ListEvents(ctx context.Context, f store.EventFilter) ([]*store.StoredEvent, error)
}

// SignInJudge judges a sign-in before its code is issued with the
// detectors' sign-in family (detect.JudgeSignIn), against the user's
// history read from the audit log: any instance can judge any sign-in,
// whichever instance runs the online detectors, and a restart loses
// nothing. It implements assess.Detector for the risk service.
type SignInJudge struct {
	Store  History
	Config detect.Config
	// Geo places the sign-in and its history (nil: what events carry).
	Geo *geo.DB
	// Window is how far back the history goes (default
	// Config.ProfileRetention, else 90 days) and Max how many of the
	// user's events it reads (default 500, newest first).
	Window time.Duration
	Max    int
	Now    func() time.Time

	// judge is Config compiled: on first use, or by SetConfig.
	judge atomic.Pointer[detect.Judge]
}

// SetConfig replaces the rules the sign-ins judged from now on are judged
// with, compiled once here (Config is the configuration until the first
// call).
func (j *SignInJudge) SetConfig(cfg detect.Config) {
	j.judge.Store(detect.NewJudge(cfg))
}

// compiled is the judge of the current rules, compiled once.
func (j *SignInJudge) compiled() *detect.Judge {
	if c := j.judge.Load(); c != nil {
		return c
	}
	j.judge.CompareAndSwap(nil, detect.NewJudge(j.Config))
	return j.judge.Load()
}

// historyTypes are the events a user's sign-in history is made of.
var historyTypes = []model.EventType{model.EventSignInSucceeded, model.EventSSOSignIn, model.EventTokenRefreshed, model.EventSignInFailed}

// DetectSignIn loads the user's history and judges a. A detector that
// panics fails the judgement (the sign-in is refused, not waved through).
func (j *SignInJudge) DetectSignIn(ctx context.Context, a activity.Activity) (ds []assess.Detection, err error) {
	defer func() {
		if r := recover(); r != nil {
			ds, err = nil, fmt.Errorf("online: sign-in detector panic: %v", r)
		}
	}()
	if j.Geo != nil {
		j.Geo.Enrich(&a)
	}
	judge := j.compiled()
	if a.UserID == "" {
		return judge.JudgeSignIn(nil, a), nil
	}
	window, limit, now := j.Window, j.Max, time.Now
	if window <= 0 {
		window = judge.Config().ProfileRetention
	}
	if window <= 0 {
		window = 90 * 24 * time.Hour
	}
	if limit <= 0 {
		limit = 500
	}
	if j.Now != nil {
		now = j.Now
	}
	since := now().Add(-window)
	evs, err := j.read(ctx, store.EventFilter{UserID: a.UserID, Types: historyTypes, Since: since}, limit)
	if err != nil {
		return nil, err
	}
	// An SSO sign-in is judged against the sign-in that created its
	// session, however many sign-ins came since.
	if a.Kind == activity.KindSSOSignIn && a.SessionID != "" {
		origin, err := j.read(ctx, store.EventFilter{SessionID: a.SessionID, Types: []model.EventType{model.EventSignInSucceeded}}, 1)
		if err != nil {
			return nil, err
		}
		for _, o := range origin {
			if !slices.ContainsFunc(evs, func(e *store.StoredEvent) bool { return e.Seq == o.Seq }) {
				evs = append(evs, o)
			}
		}
	}
	slices.SortFunc(evs, func(x, y *store.StoredEvent) int { return int(x.Seq - y.Seq) })
	history := make([]activity.Activity, 0, len(evs))
	for _, e := range evs {
		h, ok := activity.FromEvent(&e.Event)
		if !ok {
			continue
		}
		if j.Geo != nil {
			j.Geo.Enrich(&h)
		}
		history = append(history, h)
	}
	return judge.JudgeSignIn(history, a), nil
}

// read lists up to limit events matching f, newest first.
func (j *SignInJudge) read(ctx context.Context, f store.EventFilter, limit int) ([]*store.StoredEvent, error) {
	var out []*store.StoredEvent
	for len(out) < limit {
		f.Limit = min(1000, limit-len(out))
		page, err := j.Store.ListEvents(ctx, f)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if len(page) < f.Limit {
			break
		}
		f.BeforeSeq = page[len(page)-1].Seq
	}
	return out, nil
}
