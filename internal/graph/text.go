package graph

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText writes g for people: the root cause first, then the
// entities and the relations in time order.
func WriteText(w io.Writer, g *Graph) error {
	var seeds []string
	for _, k := range []struct {
		kind string
		ids  []string
	}{{"user", g.Query.Users}, {"session", g.Query.Sessions}, {"device", g.Query.Devices}, {"ip", g.Query.IPs}} {
		for _, id := range k.ids {
			seeds = append(seeds, k.kind+" "+id)
		}
	}
	fmt.Fprintf(w, "Investigation graph of %s, %s to %s: %d events, %d entities, %d relations\n",
		strings.Join(seeds, ", "), tfmt(g.Query.From), tfmt(g.Query.To), g.Events, len(g.Nodes), len(g.Edges))
	if g.Truncated {
		fmt.Fprintf(w, "TRUNCATED: more than the limits allow (%d entities, %d relations); narrow the window or the query\n",
			g.Limits.MaxNodes, g.Limits.MaxEdges)
	}
	fmt.Fprintln(w)
	if rc := g.RootCause; rc != nil {
		head := "Root cause (rule " + rc.Rule
		if rc.DetectionID != "" {
			head += ", detection " + rc.DetectionID
		}
		fmt.Fprintf(w, "%s)\n  %s\n", head, rc.Summary)
		if len(rc.Events) > 0 {
			fmt.Fprintf(w, "  events: %s\n", strings.Join(rc.Events, " "))
		}
	} else {
		fmt.Fprintln(w, "Root cause: none found (no detection or theft signal in the window)")
	}
	names := make(map[string]string, len(g.Nodes))
	for _, n := range g.Nodes {
		names[n.ID] = nodeName(n)
	}
	fmt.Fprintln(w, "\nEntities")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  FIRST SEEN\tLAST SEEN\tKIND\tENTITY\tNOTES")
	for _, n := range g.Nodes {
		attrs := n.Attrs
		if n.Kind == KindKey {
			attrs = map[string]string{"thumbprint": n.Key}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", tfmt(n.FirstSeen), tfmt(n.LastSeen), n.Kind, names[n.ID], notes(n.Seed, n.RootCause, attrs))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nRelations")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  FIRST SEEN\tLAST SEEN\tRELATION\tCOUNT\tNOTES")
	for _, e := range g.Edges {
		from, to := names[e.From], names[e.To]
		var flags []string
		if e.RootCause {
			flags = append(flags, "ROOT CAUSE")
		}
		if e.Sampled {
			flags = append(flags, "sampled")
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s -%s-> %s\t%d\t%s\n", tfmt(e.FirstSeen), tfmt(e.LastSeen), from, e.Relation, to, e.Count,
			strings.Join(flags, ", "))
	}
	return tw.Flush()
}

func tfmt(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// nodeName names a node in the text: "ip 192.0.2.10 (AS 64500, FR)",
// "key AbCdEf012345…" (the thumbprint in full among the entities).
func nodeName(n *Node) string {
	if n.Kind == KindKey && n.Label != "" {
		return n.Kind + " " + n.Label
	}
	if n.Label != "" && n.Label != n.Key {
		return n.Kind + " " + n.Key + " (" + n.Label + ")"
	}
	return n.Kind + " " + n.Key
}

func notes(seed, root bool, attrs map[string]string) string {
	var out []string
	if root {
		out = append(out, "ROOT CAUSE")
	}
	if seed {
		out = append(out, "seed")
	}
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		out = append(out, k+"="+attrs[k])
	}
	return strings.Join(out, ", ")
}
