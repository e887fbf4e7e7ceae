package admin

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/graph"
)

// Graph draws investigation graphs (graph.Service).
type Graph interface {
	Graph(ctx context.Context, q graph.Query) (*graph.Graph, error)
}

// maxGraphQuery bounds the query string of GET /graph.
const maxGraphQuery = 8 << 10

func (api *API) graphRoutes() {
	if api.graph == nil {
		return
	}
	api.handle("GET /graph", api.getGraph)
	if api.incidents != nil {
		api.handle("GET /incidents/{id}/graph", api.getIncidentGraph)
	}
}

// graphParams are the parameters GET /graph knows; any other is refused,
// so that a misspelt one (users=) is not silently ignored.
var graphParams = map[string]bool{"user": true, "session": true, "device": true, "ip": true, "from": true, "to": true}

// parseGraphQuery reads GET /graph?user=&session=&device=&ip=&from=&to=.
// Each subject parameter may repeat and hold a comma-separated list.
func parseGraphQuery(r *http.Request, now time.Time) (graph.Query, error) {
	if len(r.URL.RawQuery) > maxGraphQuery {
		return graph.Query{}, invalid("the query string is longer than %d bytes", maxGraphQuery)
	}
	q := r.URL.Query()
	for k := range q {
		if !graphParams[k] {
			return graph.Query{}, invalid("unknown parameter %q: use user, session, device, ip, from and to", clipParam(k))
		}
	}
	list := func(name string) []string {
		var out []string
		for _, v := range q[name] {
			for s := range strings.SplitSeq(v, ",") {
				out = append(out, strings.TrimSpace(s))
			}
		}
		return out
	}
	var from, to time.Time
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"from", &from}, {"to", &to}} {
		switch vs := q[p.name]; {
		case len(vs) > 1:
			return graph.Query{}, invalid("%s given more than once", p.name)
		case len(vs) == 1:
			t, err := time.Parse(time.RFC3339Nano, vs[0])
			if err != nil {
				return graph.Query{}, invalid("%s must be an RFC 3339 time such as 2026-01-02T15:04:05Z", p.name)
			}
			*p.dst = t
		}
	}
	gq, err := graph.NewQuery(list("user"), list("session"), list("device"), list("ip"), from, to, now)
	if errors.Is(err, graph.ErrInvalidQuery) {
		return graph.Query{}, invalid("%s", strings.TrimPrefix(err.Error(), graph.ErrInvalidQuery.Error()+": "))
	}
	return gq, err
}

// clipParam shows at most 32 printable characters of a parameter name.
func clipParam(k string) string {
	if len(k) > 32 {
		k = k[:32]
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r > '~' {
			return '?'
		}
		return r
	}, k)
}

// GET /graph: the investigation graph of users, sessions, devices and
// addresses within a window (docs/secops.md, "Investigation graph").
func (api *API) getGraph(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	q, err := parseGraphQuery(r, api.now())
	if err != nil {
		return err
	}
	g, err := api.graph.Graph(r.Context(), q)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, g)
	return nil
}

// GET /incidents/{id}/graph: the investigation graph of an incident: its
// users, sessions, devices and addresses from a day before its first
// detection to a day after its last (or now).
func (api *API) getIncidentGraph(w http.ResponseWriter, r *http.Request, _ *reqCtx) error {
	d, err := api.incidents.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		return incidentErr(err)
	}
	now := api.now()
	e := d.Entities
	seeds, from, to := graph.Around(e.Users, e.Sessions, e.Devices, e.IPs, d.FirstSeen, d.LastSeen, now)
	q, err := graph.QueryFor(seeds, from, to, now)
	if errors.Is(err, graph.ErrInvalidQuery) {
		return invalid("%s", strings.TrimPrefix(err.Error(), graph.ErrInvalidQuery.Error()+": "))
	}
	if err != nil {
		return err
	}
	g, err := api.graph.Graph(r.Context(), q)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"incident": d.Incident, "graph": g})
	return nil
}
