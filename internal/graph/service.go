package graph

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/geo"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// Store is what the service reads (store.Store has it all).
type Store interface {
	GroupEvents(ctx context.Context, s store.EventScope, limit int) ([]*store.EventGroup, bool, error)
	EventsBySeq(ctx context.Context, seqs []int64) ([]*store.StoredEvent, error)
	EventsByID(ctx context.Context, ids []string) ([]*store.StoredEvent, error)
	ListRiskDetections(ctx context.Context, f store.RiskDetectionFilter) ([]*model.RiskDetection, error)
	GetSession(ctx context.Context, id string) (*model.Session, error)
	ListSessions(ctx context.Context, f store.SessionFilter) ([]*model.Session, error)
	GetUser(ctx context.Context, id string) (*model.User, error)
}

// Locator places addresses (*geo.DB; nil places nothing).
type Locator interface {
	Lookup(ip netip.Addr) (geo.Location, error)
}

// Options configure a Service.
type Options struct {
	Store   Store
	Locator Locator
	Now     func() time.Time // default time.Now
	// Limits bound every graph (zero: DefaultMaxNodes, DefaultMaxEdges).
	Limits Limits
	// MaxGroups bounds the groups of events read (0: 2000).
	MaxGroups int
	// Timeout bounds the reads of one graph (0: 30 s), so that a query
	// over an address with millions of events cannot hold the database
	// for long.
	Timeout time.Duration
}

// Bounds of what one query reads besides the groups.
const (
	defaultMaxGroups  = 2000
	maxUsers          = 20   // users whose detections are read
	maxUserSessions   = 1000 // sessions listed per seed user (newest first)
	maxSessionLookups = 20   // sessions read one by one beyond the seeds' and detections'
	maxDetections     = 200  // detections in one graph
	perUserLookup     = 1000 // detections read per user (newest first)
	defaultTimeout    = 30 * time.Second
)

// Service draws graphs from the store.
type Service struct {
	o Options
}

// New returns a Service.
func New(o Options) *Service {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxGroups <= 0 {
		o.MaxGroups = defaultMaxGroups
	}
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	o.Limits = o.Limits.orDefault()
	return &Service{o: o}
}

// Now is the service's clock (for NewQuery's default window).
func (s *Service) Now() time.Time { return s.o.Now() }

// Graph draws the graph of q, which NewQuery or QueryFor made. Ids that
// name nothing give an empty graph.
func (s *Service) Graph(ctx context.Context, q Query) (*Graph, error) {
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	in := Input{Query: q, Limits: s.o.Limits, Sessions: map[string]*model.Session{}, Users: map[string]*model.User{},
		Locations: map[string]geo.Location{}}
	var err error
	in.Groups, in.GroupsTruncated, err = s.o.Store.GroupEvents(ctx, store.EventScope{UserIDs: q.Users, SessionIDs: q.Sessions,
		DeviceIDs: q.Devices, IPs: q.IPs, Since: q.From, Until: q.To}, s.o.MaxGroups)
	if err != nil {
		return nil, fmt.Errorf("graph: events: %w", err)
	}
	users, sessions := s.subjects(q, in.Groups)
	// Three independent reads at once: the groups' first and last
	// events; the detections and their evidence; the users and the seed
	// users' sessions.
	var (
		wg                sync.WaitGroup
		errs              [3]error
		sampled, evidence []*store.StoredEvent
	)
	wg.Go(func() { sampled, errs[0] = s.sampled(ctx, in.Groups) })
	wg.Go(func() {
		if in.Detections, errs[1] = s.detections(ctx, q, users, sessions); errs[1] == nil {
			evidence, errs[1] = s.evidence(ctx, in.Detections)
		}
	})
	wg.Go(func() { errs[2] = s.people(ctx, q.Users, users, in.Users, in.Sessions) })
	wg.Wait()
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	in.Events = mergeEvents(sampled, evidence)
	// The sessions still unknown: the seeds' and the detections' first
	// (the root cause reads them), then others, within a budget.
	var want []string
	for _, d := range in.Detections {
		if d.SessionID != "" && !slices.Contains(want, d.SessionID) {
			want = append(want, d.SessionID)
		}
	}
	seeds := len(q.Sessions) + len(want)
	want = append(slices.Clone(q.Sessions), want...)
	for _, id := range sessions {
		if !slices.Contains(want, id) {
			want = append(want, id)
		}
	}
	looked := 0
	for i, id := range want {
		if in.Sessions[id] != nil {
			continue
		}
		if i >= seeds && looked >= maxSessionLookups {
			break
		}
		looked++
		se, err := s.o.Store.GetSession(ctx, id)
		switch {
		case err == nil:
			in.Sessions[id] = se
		case !errors.Is(err, store.ErrNotFound):
			return nil, fmt.Errorf("graph: session: %w", err)
		}
	}
	s.locate(&in)
	return Build(in), nil
}

// GraphFor draws the graph of a list of seeds over a window (an
// incident's entities and span): QueryFor, then Graph. A zero to is now
// (as NewQuery says); ErrInvalidQuery for seeds it refuses.
func (s *Service) GraphFor(ctx context.Context, seeds []Seed, from, to time.Time) (*Graph, error) {
	q, err := QueryFor(seeds, from, to, s.o.Now())
	if err != nil {
		return nil, err
	}
	return s.Graph(ctx, q)
}

// subjects returns the users (seeds first, at most maxUsers) and the
// sessions (seeds first) of the query and its groups.
func (s *Service) subjects(q Query, groups []*store.EventGroup) (users, sessions []string) {
	users = slices.Clone(q.Users)
	sessions = slices.Clone(q.Sessions)
	for _, g := range groups {
		if g.UserID != "" && len(users) < maxUsers && !slices.Contains(users, g.UserID) {
			users = append(users, g.UserID)
		}
		if g.SessionID != "" && !slices.Contains(sessions, g.SessionID) {
			sessions = append(sessions, g.SessionID)
		}
	}
	return users, sessions
}

// detections returns the detections within the window of the query's
// users and session seeds, and those of the other users found that
// concern a session, device or address of the graph.
func (s *Service) detections(ctx context.Context, q Query, users, sessions []string) ([]*model.RiskDetection, error) {
	var out []*model.RiskDetection
	seen := map[string]bool{}
	keep := func(d *model.RiskDetection) bool {
		if seen[d.ID] || d.DetectedAt.Before(q.From) || !d.DetectedAt.Before(q.To) {
			return false
		}
		return slices.Contains(q.Users, d.UserID) || (d.SessionID != "" && slices.Contains(sessions, d.SessionID)) ||
			(d.DeviceID != "" && slices.Contains(q.Devices, d.DeviceID)) || (d.IP != "" && slices.Contains(q.IPs, d.IP))
	}
	read := func(f store.RiskDetectionFilter) error {
		f.Limit = perUserLookup
		ds, err := s.o.Store.ListRiskDetections(ctx, f)
		if err != nil {
			return fmt.Errorf("graph: detections: %w", err)
		}
		for _, d := range ds {
			if keep(d) {
				seen[d.ID] = true
				out = append(out, d)
			}
		}
		return nil
	}
	for _, u := range users {
		if err := read(store.RiskDetectionFilter{UserID: u}); err != nil {
			return nil, err
		}
	}
	for _, id := range q.Sessions {
		if err := read(store.RiskDetectionFilter{SessionID: id}); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(out, func(a, b *model.RiskDetection) int { return a.DetectedAt.Compare(b.DetectedAt) })
	if len(out) > maxDetections {
		// The most severe first, then the earliest.
		slices.SortStableFunc(out, func(a, b *model.RiskDetection) int { return sevRank(b.Severity) - sevRank(a.Severity) })
		out = out[:maxDetections]
	}
	return out, nil
}

// sampled reads the first and last event of each group.
func (s *Service) sampled(ctx context.Context, groups []*store.EventGroup) ([]*store.StoredEvent, error) {
	seqs := make([]int64, 0, 2*len(groups))
	for _, g := range groups {
		seqs = append(seqs, g.FirstSeq)
		if g.LastSeq != g.FirstSeq {
			seqs = append(seqs, g.LastSeq)
		}
	}
	var out []*store.StoredEvent
	for c := range slices.Chunk(seqs, store.MaxEventLookup) {
		evs, err := s.o.Store.EventsBySeq(ctx, c)
		if err != nil {
			return nil, fmt.Errorf("graph: events: %w", err)
		}
		out = append(out, evs...)
	}
	return out, nil
}

// evidence reads the events the detections cite (and their
// risk.detected events).
func (s *Service) evidence(ctx context.Context, ds []*model.RiskDetection) ([]*store.StoredEvent, error) {
	have := map[string]bool{}
	var want []string
	for _, d := range ds {
		for _, id := range append([]string{d.EventID}, d.Evidence...) {
			if id != "" && !have[id] && len(want) < store.MaxEventLookup {
				have[id] = true
				want = append(want, id)
			}
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	evs, err := s.o.Store.EventsByID(ctx, want)
	if err != nil {
		return nil, fmt.Errorf("graph: evidence: %w", err)
	}
	return evs, nil
}

// mergeEvents returns the events of a and b, each once, in Seq order.
func mergeEvents(a, b []*store.StoredEvent) []*store.StoredEvent {
	out := append(slices.Clone(a), b...)
	slices.SortFunc(out, func(x, y *store.StoredEvent) int { return cmp.Compare(x.Seq, y.Seq) })
	return slices.CompactFunc(out, func(x, y *store.StoredEvent) bool { return x.Seq == y.Seq })
}

// people reads the users and the sessions of the seed users (one query
// per seed user).
func (s *Service) people(ctx context.Context, seedUsers, users []string, um map[string]*model.User, sm map[string]*model.Session) error {
	for _, id := range users {
		u, err := s.o.Store.GetUser(ctx, id)
		switch {
		case err == nil:
			um[id] = u
		case !errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("graph: user: %w", err)
		}
	}
	for _, id := range seedUsers {
		ss, err := s.o.Store.ListSessions(ctx, store.SessionFilter{UserID: id, Limit: maxUserSessions})
		if err != nil {
			return fmt.Errorf("graph: sessions: %w", err)
		}
		for _, se := range ss {
			sm[se.ID] = se
		}
	}
	return nil
}

// locate places every address of the graph: as the events recorded it
// when they did (the location precomputed with the event), else by the
// location databases.
func (s *Service) locate(in *Input) {
	for _, e := range in.Events {
		if e.IP == "" {
			continue
		}
		if _, ok := in.Locations[e.IP]; ok {
			continue
		}
		d := e.Data
		if asn, err := strconv.ParseUint(d[activity.DataGeoASN], 10, 32); err == nil && asn > 0 || d[activity.DataGeoCountry] != "" {
			in.Locations[e.IP] = geo.Location{ASN: uint32(asn), ASOrg: d[activity.DataGeoASOrg], Country: d[activity.DataGeoCountry],
				City: d[activity.DataGeoCity]}
		}
	}
	if s.o.Locator == nil {
		return
	}
	ips := map[string]bool{}
	for _, g := range in.Groups {
		ips[g.IP] = true
	}
	for _, e := range in.Events {
		ips[e.IP] = true
	}
	for _, d := range in.Detections {
		ips[d.IP] = true
	}
	for ip := range ips {
		if _, ok := in.Locations[ip]; ok || ip == "" {
			continue
		}
		a, err := netip.ParseAddr(ip)
		if err != nil {
			continue
		}
		if loc, err := s.o.Locator.Lookup(a); err == nil && loc != (geo.Location{}) {
			in.Locations[ip] = loc
		}
	}
}
