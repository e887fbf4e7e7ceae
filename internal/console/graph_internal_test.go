package console

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/graph"
)

// TestLayoutGraph: nodes in columns by kind, the root cause and the
// seeds at the top of theirs; a column with more nodes than it draws
// says how many more (the tables keep them all) and its undrawn nodes'
// edges are not drawn; long labels are cut.
func TestLayoutGraph(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	g := &graph.Graph{RootCause: &graph.RootCause{Summary: "replayed"}}
	user := &graph.Node{ID: "user:u1", Kind: graph.KindUser, Key: "u1", Label: strings.Repeat("x", 40), Seed: true, FirstSeen: t0}
	g.Nodes = append(g.Nodes, user)
	for i := range 30 {
		ip := fmt.Sprintf("192.0.2.%d", i)
		g.Nodes = append(g.Nodes, &graph.Node{ID: "ip:" + ip, Kind: graph.KindIP, Key: ip, RootCause: i == 29, FirstSeen: t0})
		g.Edges = append(g.Edges, &graph.Edge{From: user.ID, To: "ip:" + ip, Relation: graph.RelUsedFrom, Count: 1, RootCause: i == 29})
	}
	v := layoutGraph(g)
	if v.Summary != "replayed" || len(v.Columns) != 2 || v.Columns[0].Title != "Users" || v.Columns[1].Title != "IP addresses" {
		t.Fatalf("columns: %+v", v.Columns)
	}
	if v.Columns[1].More != 30-graphMaxRows || !v.Truncated {
		t.Errorf("more: %d, truncated %v", v.Columns[1].More, v.Truncated)
	}
	if len(v.Nodes) != 31 || len(v.Edges) != 30 {
		t.Errorf("tables: %d nodes, %d edges", len(v.Nodes), len(v.Edges))
	}
	if len(v.Boxes) != 1+graphMaxRows || len(v.Lines) != graphMaxRows {
		t.Errorf("drawn: %d boxes, %d lines", len(v.Boxes), len(v.Lines))
	}
	var root *graphBox
	for i, b := range v.Boxes {
		if b.ID == "ip:192.0.2.29" {
			root = &v.Boxes[i]
		}
		if b.ID == "user:u1" && (b.Text != strings.Repeat("x", graphLabelN-1)+"…" || !b.Seed) {
			t.Errorf("user's box: %+v", b)
		}
	}
	if root == nil || !root.Root || root.Y != graphTop || root.X <= graphColW-graphPadX {
		t.Errorf("the root-cause address is not first in its column: %+v", root)
	}
	if last := v.Lines[len(v.Lines)-1]; !last.Root || !strings.HasPrefix(last.D, fmt.Sprintf("M%d %d ", graphPadX+graphNodeW, graphTop+graphNodeH/2)) {
		t.Errorf("the root-cause line (drawn last): %+v", last)
	}
	if v.Width <= 0 || v.Height < graphTop+graphMaxRows*graphRowH {
		t.Errorf("size %dx%d", v.Width, v.Height)
	}
}
