// Package graph is the investigation graph: for a query naming users,
// sessions, devices or IP addresses and a time window, the entities
// involved (users, sessions, devices, clients, addresses with their
// autonomous system and country, access tokens, refresh-token
// generations, resources, proof keys, risk detections), their relations
// over time, and the root cause of a token theft, derived from the
// detections and the events they rest on.
//
// Build is pure: it turns what the store returned (events grouped by
// subject, the events read in full, detections, sessions, users,
// locations) into a Graph. Service reads those from the store and calls
// it. The JSON model and the root-cause rule are documented in
// docs/secops.md, "Investigation graph".
package graph

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/textclean"
)

// Node kinds.
const (
	KindUser      = "user"
	KindSession   = "session"
	KindDevice    = "device"
	KindClient    = "client"
	KindIP        = "ip"
	KindToken     = "token"   // an access token, by its jti
	KindRefresh   = "refresh" // a refresh-token generation of a session
	KindResource  = "resource"
	KindKey       = "key" // a proof key, by its RFC 7638 thumbprint
	KindDetection = "detection"
)

// Relations (edge labels), each read "from RELATION to".
const (
	RelSignedIn     = "signed_in"     // user -> session
	RelCreatedOn    = "created_on"    // session -> device (the device whose key the session's tokens are bound to)
	RelIssuedTo     = "issued_to"     // session -> client
	RelUsedFrom     = "used_from"     // session, user, device, client, token or refresh -> ip
	RelUses         = "uses"          // user -> device, user -> client (outside a session)
	RelIssued       = "issued"        // session or client -> token
	RelUsedAt       = "used_at"       // token -> resource
	RelRotated      = "rotated"       // session -> refresh generation
	RelPresented    = "presented"     // refresh generation -> ip (presented from there)
	RelProvedWith   = "proved_with"   // session, token or refresh -> key (the proof's key)
	RelBoundTo      = "bound_to"      // session, token or refresh -> key (the key it is bound to)
	RelAbout        = "about"         // detection -> session or user
	RelObservedFrom = "observed_from" // detection -> ip
	RelOnDevice     = "on_device"     // detection -> device
)

// Limits of a query and of a graph.
const (
	// MaxSeeds bounds the users, sessions, devices and addresses of one
	// query together.
	MaxSeeds = 20
	// MaxWindow is the longest time window; DefaultWindow the window
	// ending now when a query names no start.
	MaxWindow     = 92 * 24 * time.Hour
	DefaultWindow = 7 * 24 * time.Hour
	// DefaultMaxNodes and DefaultMaxEdges bound a graph (Limits).
	DefaultMaxNodes = 500
	DefaultMaxEdges = 2000
	// maxIDLen bounds an id of a query.
	maxIDLen = textclean.MaxID
	// maxEdgeEvents bounds the event ids an edge lists.
	maxEdgeEvents = 10
)

// ErrInvalidQuery is returned (wrapped, with a message meant for the
// caller) for a query that cannot be run.
var ErrInvalidQuery = errors.New("graph: invalid query")

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidQuery, fmt.Sprintf(format, a...))
}

// Query is what a graph is drawn for: the events of its users,
// sessions, devices and addresses (the seeds) from From (inclusive) to
// To (exclusive), and the entities one hop away from them in those
// events.
type Query struct {
	Users    []string  `json:"users,omitempty"`
	Sessions []string  `json:"sessions,omitempty"`
	Devices  []string  `json:"devices,omitempty"`
	IPs      []string  `json:"ips,omitempty"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
}

// Seed is one subject of a query, as an incident names its entities:
// Kind is KindUser, KindSession, KindDevice or KindIP.
type Seed struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
}

// IncidentMargin widens an incident's span on either side, so that its
// graph shows what led up to the first detection (the victim's sign-in,
// the session's origin) and what followed the last.
const IncidentMargin = 24 * time.Hour

// Around is the graph of an incident (for the admin API and the
// console): its users, sessions, devices and addresses as seeds (at most
// MaxSeeds, in that order), from IncidentMargin before its first
// detection to IncidentMargin after its last, but no later than a minute
// after now (as a query's default: what is stamped now is in).
func Around(users, sessions, devices, ips []string, first, last, now time.Time) (seeds []Seed, from, to time.Time) {
	for _, e := range []struct {
		kind string
		ids  []string
	}{{KindUser, users}, {KindSession, sessions}, {KindDevice, devices}, {KindIP, ips}} {
		for _, id := range e.ids {
			seeds = append(seeds, Seed{Kind: e.kind, ID: id})
		}
	}
	if len(seeds) > MaxSeeds {
		seeds = seeds[:MaxSeeds]
	}
	from, to = first.Add(-IncidentMargin), last.Add(IncidentMargin)
	if limit := now.Add(time.Minute); to.After(limit) {
		to = limit
	}
	return seeds, from, to
}

// QueryFor makes the query of a list of seeds and a window (an
// incident's entities and its first and last detection, say), checked
// as NewQuery checks. Repeated seeds count once.
func QueryFor(seeds []Seed, from, to, now time.Time) (Query, error) {
	var q Query
	for _, s := range seeds {
		switch s.Kind {
		case KindUser:
			q.Users = append(q.Users, s.ID)
		case KindSession:
			q.Sessions = append(q.Sessions, s.ID)
		case KindDevice:
			q.Devices = append(q.Devices, s.ID)
		case KindIP:
			q.IPs = append(q.IPs, s.ID)
		default:
			return Query{}, invalid("seed kind %q: want user, session, device or ip", clip(s.Kind, 16))
		}
	}
	return NewQuery(q.Users, q.Sessions, q.Devices, q.IPs, from, to, now)
}

// NewQuery checks and normalises a query: at least one seed and at most
// MaxSeeds, ids of at most 128 printable characters, addresses that
// parse (written canonically), a window that starts before it ends and
// spans at most MaxWindow. A zero to is a minute after now (so that the
// events of this moment, and of instances whose clocks run slightly
// ahead, are in); a zero from is DefaultWindow before to.
func NewQuery(users, sessions, devices, ips []string, from, to, now time.Time) (Query, error) {
	q := Query{From: from, To: to}
	var err error
	if q.Users, err = ids("user", users); err != nil {
		return Query{}, err
	}
	if q.Sessions, err = ids("session", sessions); err != nil {
		return Query{}, err
	}
	if q.Devices, err = ids("device", devices); err != nil {
		return Query{}, err
	}
	for _, v := range ips {
		a, perr := netip.ParseAddr(strings.TrimSpace(v))
		if perr != nil || a.Zone() != "" {
			return Query{}, invalid("ip %q is not an IP address", clip(v, 64))
		}
		for _, s := range []string{a.String(), a.Unmap().String()} {
			if !slices.Contains(q.IPs, s) {
				q.IPs = append(q.IPs, s)
			}
		}
	}
	n := len(q.Users) + len(q.Sessions) + len(q.Devices) + len(q.IPs)
	switch {
	case n == 0:
		return Query{}, invalid("name at least one user, session, device or ip")
	case n > MaxSeeds:
		return Query{}, invalid("at most %d users, sessions, devices and ips together", MaxSeeds)
	}
	if q.To.IsZero() {
		q.To = now.Add(time.Minute).Truncate(time.Second)
	}
	if q.From.IsZero() {
		q.From = q.To.Add(-DefaultWindow)
	}
	q.From, q.To = q.From.UTC(), q.To.UTC()
	switch {
	case !q.From.Before(q.To):
		return Query{}, invalid("from must be before to")
	case q.To.Sub(q.From) > MaxWindow:
		return Query{}, invalid("the window spans at most %d days", int(MaxWindow/(24*time.Hour)))
	case q.From.Year() < 2000 || q.To.Year() > 9999:
		return Query{}, invalid("from and to must be times between the years 2000 and 9999")
	}
	return q, nil
}

// ids checks and dedupes the ids of one kind.
func ids(kind string, vs []string) ([]string, error) {
	var out []string
	for _, v := range vs {
		if !textclean.PrintableID(v) {
			return nil, invalid("%s id: want 1 to %d printable characters without spaces", kind, maxIDLen)
		}
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
		if len(out) > MaxSeeds {
			return nil, invalid("at most %d users, sessions, devices and ips together", MaxSeeds)
		}
	}
	return out, nil
}

// clip cuts v to n bytes for an error message (ASCII-safe: non-printable
// bytes are replaced).
func clip(v string, n int) string {
	if len(v) > n {
		v = v[:n]
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return '?'
		}
		return r
	}, v)
}

// Graph is the investigation graph of a query.
type Graph struct {
	Query Query `json:"query"`
	// RootCause is how the theft began, when the detections and events
	// say (null otherwise).
	RootCause *RootCause `json:"root_cause"`
	// Nodes and Edges, in time order (first seen).
	Nodes []*Node `json:"nodes"`
	Edges []*Edge `json:"edges"`
	// Events is the number of events the graph was drawn from.
	Events int64 `json:"events"`
	// Truncated: more entities, relations or event groups than the
	// limits allow; the graph keeps the seeds, the root cause, the
	// detections and the earliest of the rest.
	Truncated bool   `json:"truncated"`
	Limits    Limits `json:"limits"`
}

// Limits bound a graph.
type Limits struct {
	MaxNodes int `json:"max_nodes"`
	MaxEdges int `json:"max_edges"`
}

func (l Limits) orDefault() Limits {
	if l.MaxNodes <= 0 {
		l.MaxNodes = DefaultMaxNodes
	}
	if l.MaxEdges <= 0 {
		l.MaxEdges = DefaultMaxEdges
	}
	return l
}

// Node is one entity. ID is "kind:key".
type Node struct {
	ID        string            `json:"id"`
	Kind      string            `json:"kind"`
	Key       string            `json:"key"`
	Label     string            `json:"label,omitempty"`
	FirstSeen time.Time         `json:"first_seen"`
	LastSeen  time.Time         `json:"last_seen"`
	Seed      bool              `json:"seed,omitempty"`
	RootCause bool              `json:"root_cause,omitempty"`
	Attrs     map[string]string `json:"attrs,omitempty"`
	// Events are the ids of the events that name it (detections: its
	// own risk.detected event and its evidence), at most 10.
	Events []string `json:"events,omitempty"`
}

// Edge is one relation over time: From RELATION To, seen Count times
// from FirstSeen to LastSeen, in the events Events (at most 10 ids: the
// first and last of each group of events behind it). Sampled relations
// come from events read in full (the first and last event of each group,
// the evidence of detections): tokens, refresh generations, resources and
// keys; their Count counts those events only.
type Edge struct {
	From      string    `json:"from"`
	To        string    `json:"to"`
	Relation  string    `json:"relation"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Count     int64     `json:"count"`
	Events    []string  `json:"events,omitempty"`
	Sampled   bool      `json:"sampled,omitempty"`
	RootCause bool      `json:"root_cause,omitempty"`
}

// NodeID is the id of the node of an entity.
func NodeID(kind, key string) string { return kind + ":" + key }
