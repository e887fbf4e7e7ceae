package console

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ward-idp/ward/internal/graph"
	"github.com/ward-idp/ward/internal/incident"
)

// Graphs draws investigation graphs (graph.Service).
type Graphs interface {
	GraphFor(ctx context.Context, seeds []graph.Seed, from, to time.Time) (*graph.Graph, error)
}

// graphTimeout bounds the drawing of a page's graph, so that a user or
// an incident with a great many events does not hold its page for long.
const graphTimeout = 10 * time.Second

// Layout of the graph's SVG: one column per kind of entity, a box per
// node, at most graphMaxRows boxes per column (the table lists them all).
const (
	graphColW    = 176
	graphNodeW   = 150
	graphNodeH   = 28
	graphRowH    = 38
	graphTop     = 34
	graphPadX    = 8
	graphMaxRows = 24
	graphLabelN  = 17 // runes of a label drawn in a box
)

// graphColumns are the columns, left to right, and the kinds each holds.
var graphColumns = []struct {
	Title string
	Kinds []string
}{
	{"Users", []string{graph.KindUser}},
	{"Sessions", []string{graph.KindSession}},
	{"Devices", []string{graph.KindDevice}},
	{"Applications", []string{graph.KindClient}},
	{"IP addresses", []string{graph.KindIP}},
	{"Tokens and resources", []string{graph.KindToken, graph.KindRefresh, graph.KindResource, graph.KindKey}},
	{"Detections", []string{graph.KindDetection}},
}

// graphView is an investigation graph as a page draws it: the root
// cause in words, the SVG's layout, and the nodes and edges as tables.
type graphView struct {
	// Problem says why there is no graph (nothing to draw, an error).
	Problem   string
	Summary   string // the root cause in words; "" when none is known
	Truncated bool   // the graph or a column was cut
	Width     int
	Height    int
	Desc      string
	Columns   []graphColumnView
	Boxes     []graphBox
	Lines     []graphLine
	Nodes     []graphNodeRow
	Edges     []graphEdgeRow
	From, To  time.Time
}

type graphColumnView struct {
	X     int
	Title string
	// More is how many nodes of the column are not drawn.
	More  int
	MoreY int
}

type graphBox struct {
	ID, Kind     string
	X, Y, TX, TY int
	Text, Title  string
	Root, Seed   bool
}

type graphLine struct {
	D, Title string
	Root     bool
}

type graphNodeRow struct {
	Kind, Key, Label, Notes string
	FirstSeen, LastSeen     time.Time
	Root, Seed              bool
}

type graphEdgeRow struct {
	From, Relation, To  string
	FirstSeen, LastSeen time.Time
	Count               int64
	Root                bool
}

// incidentGraph draws the graph of an incident: its users, sessions,
// devices and addresses from a day before its first detection to a day
// after its last (or now).
func (c *Console) incidentGraph(ctx context.Context, d *incident.Detail) *graphView {
	if c.d.Graph == nil {
		return nil
	}
	e := d.Entities
	seeds, from, to := graph.Around(e.Users, e.Sessions, e.Devices, e.IPs, d.FirstSeen, d.LastSeen, c.d.Now())
	return c.drawGraph(ctx, seeds, from, to)
}

// userGraph draws the graph of a user over the last week.
func (c *Console) userGraph(ctx context.Context, userID string) *graphView {
	if c.d.Graph == nil {
		return nil
	}
	return c.drawGraph(ctx, []graph.Seed{{Kind: graph.KindUser, ID: userID}}, time.Time{}, time.Time{})
}

func (c *Console) drawGraph(ctx context.Context, seeds []graph.Seed, from, to time.Time) *graphView {
	if len(seeds) == 0 {
		return &graphView{Problem: "Nothing to draw: no user, session, device or IP address is named."}
	}
	gctx, cancel := context.WithTimeout(ctx, graphTimeout)
	defer cancel()
	g, err := c.d.Graph.GraphFor(gctx, seeds, from, to)
	switch {
	case errors.Is(err, graph.ErrInvalidQuery):
		return &graphView{Problem: "No graph: " + strings.TrimPrefix(err.Error(), graph.ErrInvalidQuery.Error()+": ") + "."}
	case err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
		c.d.Log.WarnContext(ctx, "investigation graph: too slow for the page", "err", err)
		return &graphView{Problem: "The graph took too long to draw for this page; ward graph and the admin API's GET /graph draw it with a longer limit."}
	case err != nil:
		c.d.Log.ErrorContext(ctx, "investigation graph", "err", err)
		return &graphView{Problem: "The graph could not be drawn; the server log has the details."}
	}
	return layoutGraph(g)
}

// layoutGraph places g's nodes in columns by kind (root-cause nodes,
// then seeds, then the rest in the order first seen) and its edges as
// curves between them.
func layoutGraph(g *graph.Graph) *graphView {
	v := &graphView{Truncated: g.Truncated, From: g.Query.From, To: g.Query.To}
	if g.RootCause != nil {
		v.Summary = g.RootCause.Summary
	}
	byID := make(map[string]*graph.Node, len(g.Nodes))
	for _, n := range g.Nodes {
		byID[n.ID] = n
		v.Nodes = append(v.Nodes, graphNodeRow{Kind: n.Kind, Key: n.Key, Label: nodeLabel(n), FirstSeen: n.FirstSeen, LastSeen: n.LastSeen,
			Root: n.RootCause, Seed: n.Seed, Notes: nodeNotes(n)})
	}
	for _, e := range g.Edges {
		v.Edges = append(v.Edges, graphEdgeRow{From: nodeName(byID[e.From], e.From), Relation: strings.ReplaceAll(e.Relation, "_", " "),
			To: nodeName(byID[e.To], e.To), FirstSeen: e.FirstSeen, LastSeen: e.LastSeen, Count: e.Count, Root: e.RootCause})
	}
	type place struct{ col, x, y int }
	at := map[string]place{}
	rows := 0
	for _, col := range graphColumns {
		var ns []*graph.Node
		for _, n := range g.Nodes {
			if slices.Contains(col.Kinds, n.Kind) {
				ns = append(ns, n)
			}
		}
		if len(ns) == 0 {
			continue
		}
		rank := func(n *graph.Node) int {
			switch {
			case n.RootCause:
				return 0
			case n.Seed:
				return 1
			}
			return 2
		}
		slices.SortStableFunc(ns, func(a, b *graph.Node) int { return rank(a) - rank(b) })
		ci := len(v.Columns)
		cv := graphColumnView{X: graphPadX + ci*graphColW, Title: col.Title}
		if len(ns) > graphMaxRows {
			cv.More, ns = len(ns)-graphMaxRows, ns[:graphMaxRows]
			v.Truncated = true
		}
		for i, n := range ns {
			x, y := cv.X, graphTop+i*graphRowH
			at[n.ID] = place{ci, x, y}
			v.Boxes = append(v.Boxes, graphBox{ID: n.ID, Kind: n.Kind, X: x, Y: y, TX: x + 8, TY: y + graphNodeH/2,
				Text: clipRunes(boxText(n), graphLabelN), Title: boxTitle(n), Root: n.RootCause, Seed: n.Seed})
		}
		cv.MoreY = graphTop + len(ns)*graphRowH + 12
		rows = max(rows, len(ns)+min(cv.More, 1))
		v.Columns = append(v.Columns, cv)
	}
	for _, e := range g.Edges {
		a, okA := at[e.From]
		b, okB := at[e.To]
		if !okA || !okB {
			continue
		}
		y1, y2 := a.y+graphNodeH/2, b.y+graphNodeH/2
		var d string
		switch {
		case a.col < b.col:
			x1, x2 := a.x+graphNodeW, b.x
			m := (x1 + x2) / 2
			d = fmt.Sprintf("M%d %d C%d %d %d %d %d %d", x1, y1, m, y1, m, y2, x2, y2)
		case a.col > b.col:
			x1, x2 := a.x, b.x+graphNodeW
			m := (x1 + x2) / 2
			d = fmt.Sprintf("M%d %d C%d %d %d %d %d %d", x1, y1, m, y1, m, y2, x2, y2)
		default: // the same column: a loop out to the right
			x := a.x + graphNodeW
			d = fmt.Sprintf("M%d %d C%d %d %d %d %d %d", x, y1, x+18, y1, x+18, y2, x, y2)
		}
		v.Lines = append(v.Lines, graphLine{D: d, Root: e.RootCause,
			Title: nodeName(byID[e.From], e.From) + " " + strings.ReplaceAll(e.Relation, "_", " ") + " " + nodeName(byID[e.To], e.To)})
	}
	// Root-cause lines last, so that they are drawn on top.
	slices.SortStableFunc(v.Lines, func(a, b graphLine) int {
		switch {
		case a.Root == b.Root:
			return 0
		case b.Root:
			return -1
		}
		return 1
	})
	v.Width = max(graphPadX*2+len(v.Columns)*graphColW-(graphColW-graphNodeW), 320)
	v.Height = graphTop + max(rows, 1)*graphRowH + 8
	v.Desc = fmt.Sprintf("%s in %s and %s; the root cause is outlined in red. The tables below list every entity and relation.",
		plural(len(g.Nodes), "entity", "entities"), plural(len(v.Columns), "column", "columns"), plural(len(g.Edges), "relation", "relations"))
	return v
}

// boxText is what a node's box shows: a user's name, an address, a
// detection's type, else its key.
func boxText(n *graph.Node) string {
	switch n.Kind {
	case graph.KindUser, graph.KindDetection:
		if n.Label != "" {
			return n.Label
		}
	}
	return n.Key
}

// boxTitle is a node's tooltip: its kind, key and label, and whether it
// is the root cause or a seed.
func boxTitle(n *graph.Node) string {
	s := nodeName(n, n.ID)
	if n.RootCause {
		s += " — root cause"
	}
	if n.Seed {
		s += " — where the graph starts"
	}
	return s
}

// nodeLabel is a node's label when it says more than its key.
func nodeLabel(n *graph.Node) string {
	if n.Label == n.Key {
		return ""
	}
	return n.Label
}

// nodeName names a node: "ip 192.0.2.10 (AS 64500 Example Net, FR)".
func nodeName(n *graph.Node, id string) string {
	if n == nil {
		return id
	}
	if l := nodeLabel(n); l != "" {
		return n.Kind + " " + n.Key + " (" + l + ")"
	}
	return n.Kind + " " + n.Key
}

func nodeNotes(n *graph.Node) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(n.Attrs)) {
		out = append(out, strings.ReplaceAll(k, "_", " ")+": "+n.Attrs[k])
	}
	return strings.Join(out, "; ")
}

// clipRunes cuts s to n runes, with an ellipsis when cut.
func clipRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
