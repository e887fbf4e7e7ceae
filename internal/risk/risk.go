// Package risk owns Identity Protection's risk levels: the user risk,
// the session risk and the sign-in risk (none, low, medium, high), the
// detections behind them and their history, the automatic response to a
// high level, remediation, and what administrators do about it.
//
// Its input is the risk.detected domain event, whoever publishes it (the
// online detectors, the sign-in assessment, an external signal). A
// durable bus consumer records each detection once, by its detection id
// (a repeat, a redelivery after a crash or the same event handled by two
// instances is recognised by the store's unique key), recomputes the
// levels of the user and of its sessions in the same transaction that
// records it (under the lock of the user's row, so a dismissal racing a
// detection cannot lose either), and commits user.risk_changed and
// session.risk_changed with it. When a level reaches the configured
// automatic revocation level (high by default) the same transaction
// revokes the sessions the session service plans to end, with the events
// that record them: no one sees the level without the revocation (a
// resource told HIGH while a stolen refresh token still refreshes), nor
// the revocation without the level. The events are published once it
// commits, and the CAE transmitter tells resources at once.
//
// The user's level is the users row's risk level, so Conditional Access
// (internal/access) reads the live value; the aggregation is Aggregate's
// (docs/risk-response.md).
package risk

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/risk/assess"
	"github.com/ward-idp/ward/internal/store"
)

// ActorSystem is the actor of what Ward does on its own.
const ActorSystem = "system"

// Errors.
var (
	// ErrNotFound: no such user, session or detection. It wraps
	// store.ErrNotFound.
	ErrNotFound error = notFoundError{}
	// ErrNotActive: the detection, or every detection of the user or
	// session, is no longer active (nothing to dismiss).
	ErrNotActive = errors.New("risk: no active detection to dismiss")
	// ErrInvalidLevel: a level other than none, low, medium or high.
	ErrInvalidLevel = errors.New("risk: level must be none, low, medium or high")
)

type notFoundError struct{}

func (notFoundError) Error() string { return "risk: not found" }
func (notFoundError) Unwrap() error { return store.ErrNotFound }

// Sessions is what the service needs of the session service: reading a
// session and planning revocations (the session service is the only owner
// of revocation: it decides what ends and how it is recorded), which the
// risk change that calls for them carries out in its own transaction
// (store.RiskState.Revoke).
type Sessions interface {
	Get(ctx context.Context, id string) (*model.Session, error)
	// PlanRevokeUser plans the revocation of every session of the user.
	PlanRevokeUser(actor, userID string, cause model.RevocationCause) *store.UserRevocation
	// PlanRevokeUserUnremediated plans the revocation of the user's
	// sessions created up to now, or up to the user's first remediation
	// after activity, and of the session subject ("" for none) whatever
	// its creation time.
	PlanRevokeUserUnremediated(actor, userID string, cause model.RevocationCause, activity time.Time, subject string) *store.UserRevocation
}

// Options configure a Service.
type Options struct {
	Store    store.Store // required
	Sessions Sessions    // required
	// Bus records the events (nil: recorded nowhere).
	Bus bus.Bus
	Now func() time.Time
	Log *slog.Logger
	// AutoRevokeLevel is the level at which a user's or session's
	// sessions are revoked ("" : high; "off": never).
	AutoRevokeLevel string
	// LowLifetime and MediumLifetime are how long a low and a medium
	// detection count (0: 7 days and 30 days); a high one counts until it
	// is dismissed or remediated.
	LowLifetime    time.Duration
	MediumLifetime time.Duration
	// MFARemediates is the highest user level a sign-in with a second
	// factor remediates ("": medium; "off": none).
	MFARemediates string
	// Retention is how long dismissed, remediated and expired detections
	// and the history are kept (0: 90 days).
	Retention time.Duration
	// Detector judges sign-ins in AssessSignIn (nil: none; the sign-in
	// risk is then the session's for SSO sign-ins, else none).
	Detector assess.Detector
	// Rules of the aggregation (zero: DefaultRules).
	Rules Rules
}

// Service maintains risk levels. It is safe for concurrent use.
type Service struct {
	o      Options
	events *bus.Emitter
	log    *slog.Logger
	revoke int // rank of AutoRevokeLevel; 0: off

	stats struct {
		recorded, repeats, refused, unknownUser, responses atomic.Int64
	}
	mu    sync.Mutex
	stops []func()
}

// Stats counts what the consumer did since the service started.
type Stats struct {
	// Recorded detections, Repeats recognised (same detection id),
	// Refused (malformed or hostile events, and detections naming no
	// user), UnknownUser (the user no longer exists), Responses
	// (revocations carried out).
	Recorded, Repeats, Refused, UnknownUser, Responses int64
}

// New returns a Service. It panics without Store or Sessions.
func New(o Options) *Service {
	if o.Store == nil || o.Sessions == nil {
		panic("risk: Options.Store and Options.Sessions are required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.LowLifetime <= 0 {
		o.LowLifetime = 7 * 24 * time.Hour
	}
	if o.MediumLifetime <= 0 {
		o.MediumLifetime = 30 * 24 * time.Hour
	}
	if o.Retention <= 0 {
		o.Retention = 90 * 24 * time.Hour
	}
	if o.AutoRevokeLevel == "" {
		o.AutoRevokeLevel = model.RiskHigh
	}
	if o.MFARemediates == "" {
		o.MFARemediates = model.RiskMedium
	}
	if o.Rules == (Rules{}) {
		o.Rules = DefaultRules
	}
	log := o.Log.With("component", "risk")
	s := &Service{o: o, log: log, events: bus.NewEmitter(o.Bus, o.Now).Logging(log)}
	if o.AutoRevokeLevel != "off" {
		s.revoke = model.RiskRank(o.AutoRevokeLevel)
	}
	return s
}

// Stats returns the consumer's counters.
func (s *Service) Stats() Stats {
	return Stats{Recorded: s.stats.recorded.Load(), Repeats: s.stats.repeats.Load(), Refused: s.stats.refused.Load(),
		UnknownUser: s.stats.unknownUser.Load(), Responses: s.stats.responses.Load()}
}

// ValidLevel reports whether l is one of the levels.
func ValidLevel(l string) bool { return l != "" && model.RiskRank(l) >= 0 }

// ValidSetting reports whether l is a level or "off" (the settings
// auto_revoke_level and mfa_remediates).
func ValidSetting(l string) bool { return l == "off" || (ValidLevel(l) && l != model.RiskNone) }
