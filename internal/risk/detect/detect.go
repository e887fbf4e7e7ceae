// Package detect is Ward's token-theft detectors: pure functions over the
// activity record (internal/activity), one code path online (the risk
// consumer feeds every activity to an Engine), at sign-in time
// (JudgeSignIn, before a code is issued) and offline (`ward risk
// backtest` over an activity export).
//
// An Engine keeps the little state the stateful detectors need — per
// session, access token, user and source address — bounded by Config and
// forgotten by activity time (least recently used first), never by wall
// time, so a backtest of last month's log behaves as the live service did.
// It does no I/O: the caller places addresses (internal/geo) before it
// observes them and publishes the findings.
//
// docs/risk.md describes every detector, its evidence, thresholds and
// MITRE ATT&CK technique.
package detect

import (
	"time"

	"github.com/ward-idp/ward/internal/risk/assess"
)

// Detection types (snake_case, the risk.detected event's reason).
const (
	// A bound credential presented without its key's proof, or with a
	// proof by another key: a copied refresh or access token (T1550.001),
	// a copied DBSC-bound SSO cookie (T1539).
	TypeTokenReplayWrongKey = "token_replay_wrong_key"
	TypeTokenReplayNoProof  = "token_replay_missing_proof"
	TypeCookieReplayBound   = "sso_cookie_replay_wrong_key"
	// One session, refresh token or access token used from two network
	// contexts that cannot both be its client.
	TypeSessionConcurrentUse = "session_concurrent_use"
	TypeTokenConcurrentUse   = "token_concurrent_use"
	// The SSO cookie presented from a network, device or browser unlike
	// the session's origin (T1539).
	TypeSSOCookieAnomaly = "sso_cookie_anomaly"
	// A rotated refresh token presented again beyond the grace window
	// (T1528), an authorization code presented twice (T1550.001).
	TypeRefreshReuse = "refresh_token_reuse"
	TypeCodeReuse    = "authorization_code_reuse"
	// A token Ward did not issue as presented: unknown jti, an audience
	// never requested, used beyond its lifetime, claims not as issued.
	TypeAnomalousToken = "anomalous_token"
	// Sign-in family.
	TypeUnfamiliarSignIn = "unfamiliar_sign_in_properties"
	TypeImpossibleTravel = "impossible_travel"
	TypeAnonymousIP      = "anonymous_ip"
	TypeMaliciousIP      = "malicious_ip"
	TypePasswordSpray    = "password_spray"
	TypeBruteForce       = "brute_force"
	TypeMFAFatigue       = "mfa_failures"
	// External signals (SSF): each mapped signal type has its own type,
	// external_<name> (see Config.Signals).
	TypeExternalPrefix = "external_"
)

// Severities.
const (
	Low    = "low"
	Medium = "medium"
	High   = "high"
)

// SignalRule maps an external signal's event type to a detection.
type SignalRule struct {
	Type       string
	Severity   string
	Confidence float64
	Technique  string
}

// Config holds the detectors' thresholds, the bounds of an Engine's state
// and the operator's IP lists. DefaultConfig's values are documented in
// docs/risk.md; a zero field means its default (New fills them).
type Config struct {
	// Bounds of the state an Engine keeps: least recently used entries
	// are dropped first, so memory is bounded by these, not by traffic.
	MaxSessions int // sessions tracked (origin, recent network contexts, refresh generations)
	MaxUsers    int // users' sign-in histories
	MaxTokens   int // access tokens issued and not yet expired
	MaxSources  int // source addresses with recent failed sign-ins
	SeenIDs     int // activity ids remembered to ignore redeliveries

	// SessionIdle: a session with no activity for this long is forgotten.
	SessionIdle time.Duration
	// ProfileRetention: a network, device or browser unseen for a user
	// this long is no longer familiar; FamiliarAfter: one first seen less
	// than this ago is not familiar yet (an attacker's network does not
	// become familiar by being used for a few minutes).
	ProfileRetention time.Duration
	FamiliarAfter    time.Duration
	// ConcurrentWindow: two network contexts of one session or token
	// both used within it are concurrent.
	ConcurrentWindow time.Duration
	// RefreshGrace: a rotated refresh token presented again within this
	// time of its rotation, from the context that rotated it, is a retry
	// (a lost response), not a reuse.
	RefreshGrace time.Duration
	// MaxTokenLifetime is the longest access-token lifetime Ward issues
	// (tokens.cae_access_token_ttl or tokens.access_token_ttl); a use
	// later than that after issuance is a token not as issued.
	MaxTokenLifetime time.Duration
	// ClockSkew tolerated between Ward's and resources' clocks.
	ClockSkew time.Duration
	// Suppress: the same detection type about the same session (or
	// user, or source) is reported once per this window; later evidence
	// is folded into nothing new.
	Suppress time.Duration

	// MinHistory is how many successful sign-ins a user needs before
	// unfamiliar sign-in properties are judged (no baseline, no verdict).
	MinHistory int
	// MaxSpeedKmh and MinTravelKm: impossible travel is faster than
	// MaxSpeedKmh over more than MinTravelKm (geolocation is coarse).
	MaxSpeedKmh float64
	MinTravelKm float64
	// ExemptASNs are networks whose addresses say nothing of where the
	// user is: mobile carriers' CGNAT, in-flight wifi, relays. Travel
	// through them is never impossible.
	ExemptASNs []uint32
	// CorporateASNs and CorporateIPs are the organisation's own networks
	// and VPN egress (an IP list file: a VPN egress in a cloud provider's
	// AS is named by its addresses, not the whole AS): familiar for every
	// user, never far from anywhere.
	CorporateASNs []uint32
	CorporateIPs  *IPList
	// OrgNetworkUsers: a /24 (or /48) from which at least this many
	// distinct users worked without a finding is the organisation's (an
	// office, a VPN egress) or a shared carrier's: the concurrent-use
	// detector does not take it for somewhere else. The sign-in family
	// does not use it (JudgeSignIn sees one user's history only).
	OrgNetworkUsers int
	// MaxNetworks bounds the networks whose users are counted.
	MaxNetworks int

	// AnonymousIPs (Tor exits, anonymisers) and MaliciousIPs (deny lists,
	// threat feeds), from operator files (LoadIPList); nil: none.
	AnonymousIPs *IPList
	MaliciousIPs *IPList

	// SprayUsers distinct accounts (unknown names included) failing from
	// one source within SprayWindow is a password spray.
	SprayUsers  int
	SprayWindow time.Duration
	// BruteForceFailures password failures of one account within
	// BruteForceWindow is a brute force; MFAFailures second-factor
	// failures after a correct password within that window is an attack
	// on the second factor.
	BruteForceFailures int
	BruteForceWindow   time.Duration
	MFAFailures        int

	// Signals maps external signal event types (SSF URIs) to detections;
	// unmapped signals are ignored. nil: the defaults (DefaultSignals).
	Signals map[string]SignalRule
}

// DefaultConfig returns the documented defaults.
func DefaultConfig() Config {
	return Config{
		MaxSessions: 200_000, MaxUsers: 200_000, MaxTokens: 500_000, MaxSources: 100_000, SeenIDs: 200_000,
		SessionIdle: 7 * 24 * time.Hour, ProfileRetention: 90 * 24 * time.Hour, FamiliarAfter: time.Hour,
		ConcurrentWindow: 10 * time.Minute, RefreshGrace: 30 * time.Second,
		MaxTokenLifetime: 24 * time.Hour, ClockSkew: 2 * time.Minute, Suppress: 10 * time.Minute,
		MinHistory: 3, MaxSpeedKmh: 1000, MinTravelKm: 500, OrgNetworkUsers: 10, MaxNetworks: 100_000,
		SprayUsers: 10, SprayWindow: time.Hour, BruteForceFailures: 10, BruteForceWindow: 10 * time.Minute, MFAFailures: 5,
		Signals: DefaultSignals(),
	}
}

// Finding is one detection with what it is about.
type Finding struct {
	// ID is stable: the same finding over the same evidence has the same
	// id, so a re-run or a redelivery is recorded once.
	assess.Detection
	// Time is the time of the activity that completed the evidence (the
	// detection time).
	Time time.Time
	// UserID, SessionID, ClientID, DeviceID and IP are what it is about.
	UserID, SessionID, ClientID, DeviceID, IP string
}

// Stats are an Engine's counters, for metrics and tests.
type Stats struct {
	Observed   uint64            // activities judged
	Duplicates uint64            // activities ignored as already observed
	Findings   map[string]uint64 // by detection type
	Suppressed uint64            // findings folded into an earlier one (Config.Suppress)
	Evicted    uint64            // state entries dropped to stay within the bounds (Config.Max*)
	Expired    uint64            // state entries forgotten after their idle time
	Sessions   int               // tracked now
	Users      int
	Tokens     int
	Sources    int
}
