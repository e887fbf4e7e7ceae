package graph

import (
	"cmp"
	"slices"
	"strconv"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/geo"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// Input is what a graph is built from.
type Input struct {
	Query Query
	// Groups are the events of the query's seeds, grouped by subject
	// (store.GroupEvents); GroupsTruncated says groups were left out.
	Groups          []*store.EventGroup
	GroupsTruncated bool
	// Events are events read in full: the first and last of each group
	// and the evidence (and risk.detected event) of each detection.
	Events []*store.StoredEvent
	// Detections are the risk detections of the users, sessions, devices
	// and addresses in the graph within the window.
	Detections []*model.RiskDetection
	// Sessions and Users are the stored records of the sessions and
	// users concerned, by id (absent: no longer stored).
	Sessions map[string]*model.Session
	Users    map[string]*model.User
	// Locations places the addresses, by address.
	Locations map[string]geo.Location
	Limits    Limits
}

type builder struct {
	in      Input
	nodes   map[string]*Node
	edges   map[string]*Edge
	evByID  map[string]*store.StoredEvent
	evBySeq map[int64]*store.StoredEvent
	seeds   map[string]bool
}

// Build builds the graph of in. It is pure: same input, same graph.
func Build(in Input) *Graph {
	in.Limits = in.Limits.orDefault()
	b := &builder{in: in, nodes: map[string]*Node{}, edges: map[string]*Edge{},
		evByID: map[string]*store.StoredEvent{}, evBySeq: map[int64]*store.StoredEvent{}, seeds: map[string]bool{}}
	for _, e := range in.Events {
		b.evByID[e.ID], b.evBySeq[e.Seq] = e, e
	}
	for _, k := range []struct {
		kind string
		ids  []string
	}{{KindUser, in.Query.Users}, {KindSession, in.Query.Sessions}, {KindDevice, in.Query.Devices}, {KindIP, in.Query.IPs}} {
		for _, id := range k.ids {
			b.seeds[NodeID(k.kind, id)] = true
		}
	}
	g := &Graph{Query: in.Query, Limits: in.Limits, Truncated: in.GroupsTruncated}
	for _, gr := range in.Groups {
		g.Events += gr.Count
		b.group(gr)
	}
	for _, e := range in.Events {
		b.event(e)
	}
	for _, d := range in.Detections {
		b.detection(d)
	}
	b.decorate()
	g.RootCause = b.rootCause()
	if g.RootCause != nil {
		b.markRootCause(g.RootCause)
	}
	g.Nodes, g.Edges = b.bounded(&g.Truncated)
	return g
}

// node returns the node of an entity, seen from first to last.
func (b *builder) node(kind, key string, first, last time.Time) *Node {
	id := NodeID(kind, key)
	n := b.nodes[id]
	if n == nil {
		n = &Node{ID: id, Kind: kind, Key: key, FirstSeen: first, LastSeen: last, Seed: b.seeds[id]}
		b.nodes[id] = n
		return n
	}
	if !first.IsZero() && (n.FirstSeen.IsZero() || first.Before(n.FirstSeen)) {
		n.FirstSeen = first
	}
	if last.After(n.LastSeen) {
		n.LastSeen = last
	}
	return n
}

// edge records count events from first to last behind from RELATION to.
// A count of 0 adds a relation known without an event of its own (a
// detection's user and session) unless events show it already.
func (b *builder) edge(from *Node, rel string, to *Node, first, last time.Time, count int64, sampled bool, ids ...string) {
	if from == nil || to == nil || from == to {
		return
	}
	k := from.ID + "\x00" + rel + "\x00" + to.ID
	e := b.edges[k]
	if e == nil {
		e = &Edge{From: from.ID, To: to.ID, Relation: rel, FirstSeen: first, LastSeen: last, Sampled: sampled}
		b.edges[k] = e
	} else {
		if count == 0 {
			return // known already, from events
		}
		if first.Before(e.FirstSeen) {
			e.FirstSeen = first
		}
		if last.After(e.LastSeen) {
			e.LastSeen = last
		}
		e.Sampled = e.Sampled && sampled
	}
	e.Count += count
	for _, id := range ids {
		if id != "" && len(e.Events) < maxEdgeEvents && !slices.Contains(e.Events, id) {
			e.Events = append(e.Events, id)
		}
	}
}

// groupIDs returns the ids of a group's first and last events (those
// that were read).
func (b *builder) groupIDs(g *store.EventGroup) []string {
	var out []string
	for _, s := range []int64{g.FirstSeq, g.LastSeq} {
		if e := b.evBySeq[s]; e != nil && !slices.Contains(out, e.ID) {
			out = append(out, e.ID)
		}
	}
	return out
}

// group adds the entities of a group of events and the relations between
// them: user -signed_in-> session, session -created_on-> device,
// session -issued_to-> client, session -used_from-> ip; outside a
// session, user (or device, or client) -used_from-> ip and user -uses->
// device and client. Groups of risk.detected events add nothing: the
// detections they record are added by detection.
func (b *builder) group(g *store.EventGroup) {
	if g.Type == model.EventRiskDetected {
		return // the detections are nodes of their own (detection)
	}
	f, l, c, ids := g.First, g.Last, g.Count, b.groupIDs(g)
	opt := func(kind, key string) *Node {
		if key == "" {
			return nil
		}
		return b.node(kind, key, f, l)
	}
	user, sess, client := opt(KindUser, g.UserID), opt(KindSession, g.SessionID), opt(KindClient, g.ClientID)
	dev, ip := opt(KindDevice, g.DeviceID), opt(KindIP, g.IP)
	if sess != nil {
		b.edge(user, RelSignedIn, sess, f, l, c, false, ids...)
		b.edge(sess, RelCreatedOn, dev, f, l, c, false, ids...)
		b.edge(sess, RelIssuedTo, client, f, l, c, false, ids...)
		b.edge(sess, RelUsedFrom, ip, f, l, c, false, ids...)
		return
	}
	switch {
	case user != nil:
		b.edge(user, RelUsedFrom, ip, f, l, c, false, ids...)
		b.edge(user, RelUses, dev, f, l, c, false, ids...)
		b.edge(user, RelUses, client, f, l, c, false, ids...)
	case dev != nil:
		b.edge(dev, RelUsedFrom, ip, f, l, c, false, ids...)
	case client != nil:
		b.edge(client, RelUsedFrom, ip, f, l, c, false, ids...)
	}
}

// refreshKey names a refresh-token generation of a session.
func refreshKey(session string, gen int) string { return session + "#" + strconv.Itoa(gen) }

// event adds what an event read in full says beyond its group: the access
// token and the resource it was used at, the refresh-token generation and
// where it was presented, the keys of proofs and bindings.
func (b *builder) event(e *store.StoredEvent) {
	a, ok := activity.FromEvent(&e.Event)
	if !ok {
		return
	}
	t := e.Time
	at := func(kind, key string) *Node {
		if key == "" {
			return nil
		}
		return b.node(kind, key, t, t)
	}
	var owner *Node
	switch {
	case a.SessionID != "":
		owner = at(KindSession, a.SessionID)
	case a.UserID != "":
		owner = at(KindUser, a.UserID)
	case a.ClientID != "":
		owner = at(KindClient, a.ClientID)
	}
	ip := at(KindIP, a.IP)
	uses := int64(a.Uses())
	if a.TokenID != "" {
		tok := at(KindToken, a.TokenID)
		if a.Kind == activity.KindTokenUse {
			b.edge(tok, RelUsedAt, at(KindResource, a.Resource), t, t, uses, true, e.ID)
			if a.Result == activity.ResultFailure {
				b.edge(tok, RelUsedFrom, ip, t, t, uses, true, e.ID)
				b.edge(tok, RelProvedWith, at(KindKey, a.JKT), t, t, uses, true, e.ID)
			}
		} else if a.Result != activity.ResultFailure {
			b.edge(owner, RelIssued, tok, t, t, 1, true, e.ID)
			b.edge(tok, RelBoundTo, at(KindKey, boundKey(a)), t, t, 1, true, e.ID)
		}
	}
	if a.Kind == activity.KindRefresh && a.SessionID != "" {
		if a.Result == activity.ResultSuccess && a.RefreshGenIssued > 0 {
			b.edge(owner, RelRotated, at(KindRefresh, refreshKey(a.SessionID, a.RefreshGenIssued)), t, t, 1, true, e.ID)
		}
		if a.RefreshGenPresented > 0 {
			r := at(KindRefresh, refreshKey(a.SessionID, a.RefreshGenPresented))
			b.edge(owner, RelRotated, r, t, t, 1, true, e.ID)
			b.edge(r, RelPresented, ip, t, t, 1, true, e.ID)
			b.edge(r, RelProvedWith, at(KindKey, a.JKT), t, t, 1, true, e.ID)
			b.edge(r, RelBoundTo, at(KindKey, a.BoundJKT), t, t, 1, true, e.ID)
			return
		}
	}
	if owner != nil && owner.Kind == KindSession {
		b.edge(owner, RelProvedWith, at(KindKey, a.JKT), t, t, 1, true, e.ID)
		b.edge(owner, RelBoundTo, at(KindKey, a.BoundJKT), t, t, 1, true, e.ID)
	}
}

// boundKey is the key an issued token is bound to: the proof's key of a
// successful grant.
func boundKey(a activity.Activity) string {
	if a.BoundJKT != "" {
		return a.BoundJKT
	}
	if a.Proof == activity.ProofOK {
		return a.JKT
	}
	return ""
}

// detection adds a detection: detection -about-> session (or user),
// -observed_from-> ip, -on_device-> device.
func (b *builder) detection(d *model.RiskDetection) {
	t := d.DetectedAt
	n := b.node(KindDetection, d.ID, t, t)
	n.Label = d.Type
	n.Attrs = map[string]string{"type": d.Type, "severity": d.Severity, "state": d.State, "source": d.Source,
		"confidence": strconv.FormatFloat(d.Confidence, 'f', 2, 64)}
	if d.Technique != "" {
		n.Attrs["technique"] = d.Technique
	}
	if d.Detail != "" {
		n.Attrs["detail"] = d.Detail
	}
	for _, id := range append([]string{d.EventID}, d.Evidence...) {
		if id != "" && len(n.Events) < maxEdgeEvents && !slices.Contains(n.Events, id) {
			n.Events = append(n.Events, id)
		}
	}
	ids := n.Events
	if d.SessionID != "" {
		s := b.node(KindSession, d.SessionID, t, t)
		b.edge(n, RelAbout, s, t, t, 1, false, ids...)
		if d.UserID != "" {
			b.edge(b.node(KindUser, d.UserID, t, t), RelSignedIn, s, t, t, 0, false)
		}
	} else if d.UserID != "" {
		b.edge(n, RelAbout, b.node(KindUser, d.UserID, t, t), t, t, 1, false, ids...)
	}
	if d.IP != "" {
		b.edge(n, RelObservedFrom, b.node(KindIP, d.IP, t, t), t, t, 1, false, ids...)
	}
	if d.DeviceID != "" {
		b.edge(n, RelOnDevice, b.node(KindDevice, d.DeviceID, t, t), t, t, 1, false, ids...)
	}
}

// decorate labels the nodes and places the addresses.
func (b *builder) decorate() {
	for _, n := range b.nodes {
		switch n.Kind {
		case KindUser:
			if u := b.in.Users[n.Key]; u != nil {
				n.Label = u.Username
			}
		case KindSession:
			if s := b.in.Sessions[n.Key]; s != nil {
				n.Attrs = map[string]string{"created_at": s.CreatedAt.UTC().Format(time.RFC3339)}
				if s.IP != "" {
					n.Attrs["created_from"] = s.IP
				}
				if !s.RevokedAt.IsZero() {
					n.Attrs["revoked_at"] = s.RevokedAt.UTC().Format(time.RFC3339)
				}
			}
		case KindIP:
			if loc, ok := b.in.Locations[n.Key]; ok {
				n.Attrs = placeAttrs(loc)
				n.Label = placeLabel(loc)
			}
		case KindKey:
			n.Label = shortKey(n.Key)
		}
	}
}

func placeAttrs(loc geo.Location) map[string]string {
	m := map[string]string{}
	if loc.ASN != 0 {
		m["asn"] = strconv.FormatUint(uint64(loc.ASN), 10)
	}
	if loc.ASOrg != "" {
		m["as_org"] = loc.ASOrg
	}
	if loc.Country != "" {
		m["country"] = loc.Country
	}
	if loc.City != "" {
		m["city"] = loc.City
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// shortKey abbreviates a key thumbprint for people.
func shortKey(k string) string {
	if len(k) > 12 {
		return k[:12] + "…"
	}
	return k
}

// priority orders nodes for the limits: seeds, the root cause, the
// detections, the main entities, then tokens, generations, resources and
// keys.
func priority(n *Node) int {
	switch {
	case n.Seed:
		return 0
	case n.RootCause:
		return 1
	case n.Kind == KindDetection:
		return 2
	case n.Kind == KindUser, n.Kind == KindSession, n.Kind == KindDevice, n.Kind == KindIP, n.Kind == KindClient:
		return 3
	}
	return 4
}

// bounded returns the nodes and edges within the limits, in time order,
// and sets *truncated when some were left out.
func (b *builder) bounded(truncated *bool) ([]*Node, []*Edge) {
	nodes := make([]*Node, 0, len(b.nodes))
	for _, n := range b.nodes {
		nodes = append(nodes, n)
	}
	slices.SortFunc(nodes, func(x, y *Node) int {
		return cmp.Or(cmp.Compare(priority(x), priority(y)), x.FirstSeen.Compare(y.FirstSeen), cmp.Compare(x.ID, y.ID))
	})
	if len(nodes) > b.in.Limits.MaxNodes {
		nodes, *truncated = nodes[:b.in.Limits.MaxNodes], true
	}
	kept := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		kept[n.ID] = true
	}
	edges := make([]*Edge, 0, len(b.edges))
	for _, e := range b.edges {
		if kept[e.From] && kept[e.To] {
			edges = append(edges, e)
		} else {
			*truncated = true
		}
	}
	rank := func(e *Edge) int {
		switch {
		case e.RootCause:
			return 0
		case !e.Sampled:
			return 1
		}
		return 2
	}
	slices.SortFunc(edges, func(x, y *Edge) int {
		return cmp.Or(cmp.Compare(rank(x), rank(y)), x.FirstSeen.Compare(y.FirstSeen), edgeCmp(x, y))
	})
	if len(edges) > b.in.Limits.MaxEdges {
		edges, *truncated = edges[:b.in.Limits.MaxEdges], true
	}
	slices.SortFunc(nodes, func(x, y *Node) int { return cmp.Or(x.FirstSeen.Compare(y.FirstSeen), cmp.Compare(x.ID, y.ID)) })
	slices.SortFunc(edges, func(x, y *Edge) int { return cmp.Or(x.FirstSeen.Compare(y.FirstSeen), edgeCmp(x, y)) })
	return nodes, edges
}

func edgeCmp(x, y *Edge) int {
	return cmp.Or(cmp.Compare(x.From, y.From), cmp.Compare(x.Relation, y.Relation), cmp.Compare(x.To, y.To))
}
