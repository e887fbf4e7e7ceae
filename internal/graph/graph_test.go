package graph_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/internal/geo"
	"github.com/ward-idp/ward/internal/geo/geotest"
	"github.com/ward-idp/ward/internal/graph"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/postgres"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

var ctx = context.Background()

// backends runs fn against a fresh SQLite store and, when
// WARD_TEST_POSTGRES_DSN is set, a fresh PostgreSQL schema.
func backends(t *testing.T, fn func(t *testing.T, s store.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "ward.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		fn(t, s)
	})
	t.Run("postgres", func(t *testing.T) {
		s := openPostgres(t)
		fn(t, s)
	})
}

func openPostgres(t testing.TB) *postgres.Store {
	t.Helper()
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("WARD_TEST_POSTGRES_DSN is not set")
	}
	b := make([]byte, 8)
	rand.Read(b)
	schema := "ward_test_" + hex.EncodeToString(b)
	s, err := postgres.Open(ctx, dsn, postgres.WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		if conn, err := pgx.Connect(ctx, dsn); err == nil {
			conn.Exec(ctx, `DROP SCHEMA `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
			conn.Close(ctx)
		}
	})
	return s
}

// The story's places: the victim's office network and the attacker's.
const (
	ipOffice   = "192.0.2.10"    // AS 64500, FR
	ipAttacker = "198.51.100.66" // AS 64501, US
	keyVictim  = "victim-key-thumbprint-0123456789abcdef"
	keyThief   = "thief-key-thumbprint-fedcba9876543210"
	resource   = "https://api.example.com"
)

var t0 = time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)

func locator(t *testing.T) *geo.DB {
	t.Helper()
	city, asn := geotest.Write(t, t.TempDir(), []geotest.Place{
		{CIDR: "192.0.2.0/24", Country: "FR", City: "Paris", Lat: 48.85, Lon: 2.35, ASN: 64500, ASOrg: "Example Office Net"},
		{CIDR: "198.51.100.0/24", Country: "US", ASN: 64501, ASOrg: "Example Hosting"},
	})
	db, err := geo.Open(city, asn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// story records a token theft as Ward records it: alice signs in on her
// registered device (key K1) from the office, exchanges the code,
// refreshes and uses the API; five minutes after the sign-in her current
// refresh token is presented from another network with another key (K2),
// and a detection cites that refresh. Bob works from the same office.
// An older session of alice lies outside the window.
func story(t *testing.T, s store.Store) map[string]string {
	t.Helper()
	ids := map[string]string{}
	for _, u := range []*model.User{{ID: "u-alice", Username: "alice"}, {ID: "u-bob", Username: "bob"}} {
		u.CreatedAt, u.UpdatedAt = t0.Add(-48*time.Hour), t0.Add(-48*time.Hour)
		if err := s.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	for _, se := range []*model.Session{
		{ID: "s-alice", UserID: "u-alice", IP: ipOffice, CreatedAt: t0, AuthTime: t0},
		{ID: "s-bob", UserID: "u-bob", IP: ipOffice, CreatedAt: t0.Add(time.Minute), AuthTime: t0.Add(time.Minute)},
	} {
		se.LastSeen, se.ExpiresAt, se.AMR = se.CreatedAt, se.CreatedAt.Add(24*time.Hour), []string{"pwd", "otp"}
		if err := s.CreateSession(ctx, se); err != nil {
			t.Fatal(err)
		}
	}
	add := func(name string, e model.Event) {
		e.ID = "ev-" + name
		e.Actor = e.UserID
		if _, err := s.AppendEvent(ctx, &e); err != nil {
			t.Fatal(err)
		}
		ids[name] = e.ID
	}
	ok, fail := model.OutcomeSuccess, model.OutcomeFailure
	add("old", model.Event{Type: model.EventSignInSucceeded, Time: t0.Add(-30 * 24 * time.Hour), UserID: "u-alice", SessionID: "s-old",
		ClientID: "spa", IP: ipOffice, Outcome: ok})
	add("signin", model.Event{Type: model.EventSignInSucceeded, Time: t0, UserID: "u-alice", SessionID: "s-alice", ClientID: "spa",
		IP: ipOffice, UserAgent: "Firefox", Outcome: ok, Data: map[string]string{"amr": "pwd otp", "jkt": keyVictim}})
	add("code", model.Event{Type: model.EventTokenIssued, Time: t0.Add(10 * time.Second), UserID: "u-alice", SessionID: "s-alice",
		ClientID: "spa", DeviceID: "d-laptop", TokenID: "jti-1", IP: ipOffice, Outcome: ok, Binding: model.BindingDPoP,
		Data: map[string]string{"grant_type": "authorization_code", "jkt": keyVictim, "proof": "ok", "rt_gen_issued": "1"}})
	add("bob", model.Event{Type: model.EventSignInSucceeded, Time: t0.Add(time.Minute), UserID: "u-bob", SessionID: "s-bob",
		ClientID: "spa", IP: ipOffice, Outcome: ok})
	add("refresh", model.Event{Type: model.EventTokenRefreshed, Time: t0.Add(2 * time.Minute), UserID: "u-alice", SessionID: "s-alice",
		ClientID: "spa", DeviceID: "d-laptop", TokenID: "jti-2", IP: ipOffice, Outcome: ok, Binding: model.BindingDPoP,
		Data: map[string]string{"grant_type": "refresh_token", "jkt": keyVictim, "bound_jkt": keyVictim, "proof": "ok",
			"rt_gen_presented": "1", "rt_gen_issued": "2"}})
	add("use", model.Event{Type: model.EventTokenUsed, Time: t0.Add(3 * time.Minute), UserID: "u-alice", SessionID: "s-alice",
		ClientID: "spa", DeviceID: "d-laptop", TokenID: "jti-2", IP: ipOffice, Outcome: ok,
		Data: map[string]string{"resource": resource, "jkt": keyVictim, "bound_jkt": keyVictim, "proof": "ok", "count": "5"}})
	add("stolen", model.Event{Type: model.EventTokenRequestFailed, Time: t0.Add(5 * time.Minute), UserID: "u-alice", SessionID: "s-alice",
		ClientID: "spa", IP: ipAttacker, UserAgent: "python-requests", Outcome: fail, Reason: "refresh_key_mismatch",
		Data: map[string]string{"grant_type": "refresh_token", "jkt": keyThief, "bound_jkt": keyVictim, "proof": "wrong_key",
			"rt_gen_presented": "2", "error": "invalid_grant"}})
	det := &model.RiskDetection{ID: "det-1", Type: "refresh_token_wrong_key", UserID: "u-alice", SessionID: "s-alice", ClientID: "spa",
		IP: ipAttacker, Severity: model.RiskHigh, Confidence: 0.95, Technique: "T1550.001", Evidence: []string{ids["stolen"]},
		Detail: "refresh token presented with another key", Source: model.DetectionSourceOnline, EventID: "ev-det-1",
		DetectedAt: t0.Add(5*time.Minute + time.Second), State: model.DetectionActive}
	add("det-1", model.Event{Type: model.EventRiskDetected, Time: det.DetectedAt, UserID: "u-alice", SessionID: "s-alice",
		ClientID: "spa", IP: ipAttacker, Reason: det.Type, Data: map[string]string{model.DataDetectionID: det.ID,
			model.DataDetectionSeverity: "high", model.DataDetectionEvidence: ids["stolen"]}})
	if _, err := s.UpdateRisk(ctx, "u-alice", det, func(*store.RiskState) error { return nil }); err != nil {
		t.Fatal(err)
	}
	// A low detection of bob's that the root cause must not pick.
	low := &model.RiskDetection{ID: "det-bob", Type: "unfamiliar_sign_in", UserID: "u-bob", SessionID: "s-bob", IP: ipOffice,
		Severity: model.RiskLow, Confidence: 0.4, Source: model.DetectionSourceSignIn, DetectedAt: t0.Add(time.Minute), State: model.DetectionActive}
	if _, err := s.UpdateRisk(ctx, "u-bob", low, func(*store.RiskState) error { return nil }); err != nil {
		t.Fatal(err)
	}
	return ids
}

func query(t *testing.T, users, sessions, devices, ips []string) graph.Query {
	t.Helper()
	q, err := graph.NewQuery(users, sessions, devices, ips, t0.Add(-time.Hour), t0.Add(time.Hour), t0)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

type view struct {
	g     *graph.Graph
	nodes map[string]*graph.Node
	edges map[string]*graph.Edge
}

func index(g *graph.Graph) view {
	v := view{g: g, nodes: map[string]*graph.Node{}, edges: map[string]*graph.Edge{}}
	for _, n := range g.Nodes {
		v.nodes[n.ID] = n
	}
	for _, e := range g.Edges {
		v.edges[e.From+" -"+e.Relation+"-> "+e.To] = e
	}
	return v
}

func (v view) edge(t *testing.T, key string) *graph.Edge {
	t.Helper()
	e := v.edges[key]
	if e == nil {
		var have []string
		for k := range v.edges {
			have = append(have, k)
		}
		slices.Sort(have)
		t.Fatalf("no edge %s; edges:\n%s", key, strings.Join(have, "\n"))
	}
	return e
}

// TestTokenTheftStory: the graph of the victim has the entities and
// relations of the story, over time, and the root cause names the
// victim's session, device and network and the attacker's network and
// key.
func TestTokenTheftStory(t *testing.T) {
	backends(t, func(t *testing.T, s store.Store) {
		ids := story(t, s)
		svc := graph.New(graph.Options{Store: s, Locator: locator(t), Now: func() time.Time { return t0 }})
		g, err := svc.Graph(ctx, query(t, []string{"u-alice"}, nil, nil, nil))
		if err != nil {
			t.Fatal(err)
		}
		v := index(g)
		for _, id := range []string{"user:u-alice", "session:s-alice", "device:d-laptop", "client:spa", "ip:" + ipOffice, "ip:" + ipAttacker,
			"key:" + keyVictim, "key:" + keyThief, "token:jti-2", "refresh:s-alice#2", "resource:" + resource, "detection:det-1"} {
			if v.nodes[id] == nil {
				t.Errorf("no node %s", id)
			}
		}
		for _, id := range []string{"session:s-old", "user:u-bob", "session:s-bob", "detection:det-bob"} {
			if v.nodes[id] != nil {
				t.Errorf("node %s is outside the window or the query", id)
			}
		}
		if g.Events != 6 || g.Truncated {
			t.Errorf("events %d (want 6), truncated %v", g.Events, g.Truncated)
		}
		if n := v.nodes["user:u-alice"]; n.Label != "alice" || !n.Seed || !n.RootCause {
			t.Errorf("user node: %+v", n)
		}
		if n := v.nodes["ip:"+ipAttacker]; n.Attrs["asn"] != "64501" || n.Attrs["country"] != "US" || !n.RootCause {
			t.Errorf("attacker's address: %+v", n)
		}
		// Relations with their counts, times and events.
		e := v.edge(t, "session:s-alice -used_from-> ip:"+ipOffice)
		if e.Count != 4 || !e.FirstSeen.Equal(t0) || !e.LastSeen.Equal(t0.Add(3*time.Minute)) || !e.RootCause {
			t.Errorf("session used from the office: %+v", e)
		}
		e = v.edge(t, "session:s-alice -used_from-> ip:"+ipAttacker)
		if e.Count != 1 || !e.FirstSeen.Equal(t0.Add(5*time.Minute)) || !slices.Equal(e.Events, []string{ids["stolen"]}) || !e.RootCause {
			t.Errorf("session used from the attacker's network: %+v", e)
		}
		if e := v.edge(t, "user:u-alice -signed_in-> session:s-alice"); e.Count != 5 || !e.LastSeen.Equal(t0.Add(5*time.Minute)) {
			t.Errorf("signed_in: %+v", e)
		}
		if e := v.edge(t, "session:s-alice -created_on-> device:d-laptop"); e.Count != 3 || !e.FirstSeen.Equal(t0.Add(10*time.Second)) {
			t.Errorf("created_on: %+v", e)
		}
		v.edge(t, "session:s-alice -issued_to-> client:spa")
		v.edge(t, "session:s-alice -issued-> token:jti-2")
		if e := v.edge(t, "token:jti-2 -used_at-> resource:"+resource); e.Count != 5 || !e.Sampled {
			t.Errorf("used_at: %+v", e)
		}
		v.edge(t, "session:s-alice -rotated-> refresh:s-alice#2")
		v.edge(t, "refresh:s-alice#2 -presented-> ip:"+ipAttacker)
		v.edge(t, "refresh:s-alice#2 -proved_with-> key:"+keyThief)
		v.edge(t, "refresh:s-alice#2 -bound_to-> key:"+keyVictim)
		v.edge(t, "detection:det-1 -about-> session:s-alice")
		v.edge(t, "detection:det-1 -observed_from-> ip:"+ipAttacker)
		// Time order.
		for i := 1; i < len(g.Nodes); i++ {
			if g.Nodes[i].FirstSeen.Before(g.Nodes[i-1].FirstSeen) {
				t.Errorf("nodes out of time order at %d", i)
			}
		}
		// The root cause.
		rc := g.RootCause
		if rc == nil {
			t.Fatal("no root cause")
		}
		want := "session s-alice of alice created on device d-laptop at 2026-11-30T09:00:00Z from IP 192.0.2.10 (AS 64500 Example Office Net, FR); " +
			"its refresh token (generation 2) replayed from IP 198.51.100.66 (AS 64501 Example Hosting, US) with another key at " +
			"2026-11-30T09:05:00Z (5m0s later); detected as refresh_token_wrong_key (T1550.001, high)"
		if rc.Summary != want {
			t.Errorf("summary:\n got %s\nwant %s", rc.Summary, want)
		}
		if rc.Rule != graph.RuleDetection || rc.DetectionID != "det-1" || rc.Origin.DeviceID != "d-laptop" || rc.Origin.IP != ipOffice ||
			rc.Origin.Place == nil || rc.Origin.Place.ASN != 64500 || rc.Origin.Key != keyVictim || rc.Misuse.IP != ipAttacker ||
			rc.Misuse.Key != keyThief || !rc.Misuse.OtherKey || rc.Misuse.Credential != graph.CredRefreshToken || rc.Misuse.Generation != 2 ||
			rc.Misuse.EventID != ids["stolen"] || rc.Misuse.After != "5m0s" {
			t.Errorf("root cause: %+v", rc)
		}
		for _, id := range []string{"session:s-alice", "device:d-laptop", "ip:" + ipOffice, "ip:" + ipAttacker, "key:" + keyThief, "detection:det-1"} {
			if !slices.Contains(rc.Nodes, id) || !v.nodes[id].RootCause {
				t.Errorf("root cause node %s not marked", id)
			}
		}
		if v.nodes["resource:"+resource].RootCause || v.nodes["client:spa"].RootCause {
			t.Error("the resource or the client is marked root cause")
		}
		// JSON and text.
		if _, err := json.Marshal(g); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := graph.WriteText(&buf, g); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		rcAt, entAt := strings.Index(out, want), strings.Index(out, "\nEntities")
		if rcAt < 0 || entAt < rcAt || !strings.Contains(out, "session s-alice -used_from-> ip 198.51.100.66") {
			t.Errorf("text rendering:\n%s", out)
		}
	})
}

// TestExpansion: a session, a device or an address finds the users,
// sessions and devices one hop away in the window; an address shared by
// two users shows both; the root cause is found from any of them.
func TestExpansion(t *testing.T) {
	backends(t, func(t *testing.T, s store.Store) {
		story(t, s)
		svc := graph.New(graph.Options{Store: s, Locator: locator(t)})
		cases := []struct {
			name      string
			q         graph.Query
			want, not []string
			rootCause bool
		}{
			{"attacker ip", query(t, nil, nil, nil, []string{ipAttacker}), []string{"session:s-alice", "user:u-alice", "detection:det-1"},
				[]string{"user:u-bob", "ip:" + ipOffice}, true},
			{"office ip", query(t, nil, nil, nil, []string{ipOffice}), []string{"session:s-alice", "session:s-bob", "user:u-bob", "device:d-laptop",
				"detection:det-bob", "ip:" + ipAttacker}, nil, true},
			{"session", query(t, nil, []string{"s-alice"}, nil, nil), []string{"user:u-alice", "device:d-laptop", "ip:" + ipAttacker}, []string{"session:s-bob"}, true},
			{"device", query(t, nil, nil, []string{"d-laptop"}, nil), []string{"session:s-alice", "user:u-alice", "detection:det-1"}, []string{"session:s-bob", "user:u-bob"}, true},
		}
		for _, c := range cases {
			g, err := svc.Graph(ctx, c.q)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			v := index(g)
			for _, id := range c.want {
				if v.nodes[id] == nil {
					t.Errorf("%s: no node %s", c.name, id)
				}
			}
			for _, id := range c.not {
				if v.nodes[id] != nil {
					t.Errorf("%s: node %s is more than one hop away", c.name, id)
				}
			}
			if (g.RootCause != nil) != c.rootCause {
				t.Errorf("%s: root cause %+v, want one: %v", c.name, g.RootCause, c.rootCause)
			}
			if c.rootCause && g.RootCause.DetectionID != "det-1" {
				t.Errorf("%s: root cause from %s, want det-1 (the most severe)", c.name, g.RootCause.DetectionID)
			}
		}
		// An incident's seeds and span.
		g, err := svc.GraphFor(ctx, []graph.Seed{{Kind: graph.KindSession, ID: "s-alice"}, {Kind: graph.KindIP, ID: ipAttacker}},
			t0, t0.Add(10*time.Minute))
		if err != nil || g.RootCause == nil || g.RootCause.Origin.SessionID != "s-alice" || !index(g).nodes["session:s-alice"].Seed {
			t.Errorf("GraphFor: %v, %+v", err, g)
		}
		if _, err := svc.GraphFor(ctx, nil, t0, t0.Add(time.Minute)); !errors.Is(err, graph.ErrInvalidQuery) {
			t.Errorf("GraphFor without seeds: %v", err)
		}
	})
}

// TestUnknownAndEmpty: ids that name nothing, and a window without
// events, give an empty graph, not an error.
func TestUnknownAndEmpty(t *testing.T) {
	backends(t, func(t *testing.T, s store.Store) {
		story(t, s)
		svc := graph.New(graph.Options{Store: s})
		for name, q := range map[string]graph.Query{
			"unknown ids": query(t, []string{"nobody"}, []string{"no-session"}, []string{"no-device"}, []string{"203.0.113.250"}),
			"other window": func() graph.Query {
				q, err := graph.NewQuery([]string{"u-alice"}, nil, nil, nil, t0.Add(time.Hour), t0.Add(2*time.Hour), t0)
				if err != nil {
					t.Fatal(err)
				}
				return q
			}(),
		} {
			g, err := svc.Graph(ctx, q)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(g.Nodes) != 0 || len(g.Edges) != 0 || g.RootCause != nil || g.Events != 0 || g.Truncated {
				t.Errorf("%s: %d nodes, %d edges, root cause %v", name, len(g.Nodes), len(g.Edges), g.RootCause)
			}
			b, _ := json.Marshal(g)
			if !strings.Contains(string(b), `"nodes":[]`) || !strings.Contains(string(b), `"root_cause":null`) {
				t.Errorf("%s: JSON %s", name, b)
			}
		}
	})
}

// TestBounds: the limits hold, truncated says so, and the seeds and the
// root cause are kept first.
func TestBounds(t *testing.T) {
	backends(t, func(t *testing.T, s store.Store) {
		story(t, s)
		svc := graph.New(graph.Options{Store: s, Limits: graph.Limits{MaxNodes: 4, MaxEdges: 3}})
		g, err := svc.Graph(ctx, query(t, []string{"u-alice"}, nil, nil, nil))
		if err != nil {
			t.Fatal(err)
		}
		if len(g.Nodes) != 4 || len(g.Edges) > 3 || !g.Truncated {
			t.Fatalf("%d nodes, %d edges, truncated %v", len(g.Nodes), len(g.Edges), g.Truncated)
		}
		v := index(g)
		if n := v.nodes["user:u-alice"]; n == nil || !n.Seed {
			t.Error("the seed was dropped")
		}
		for _, n := range g.Nodes {
			if !n.Seed && !n.RootCause {
				t.Errorf("kept %s before root-cause nodes", n.ID)
			}
		}
		for _, e := range g.Edges {
			if v.nodes[e.From] == nil || v.nodes[e.To] == nil {
				t.Errorf("edge %s -> %s to a dropped node", e.From, e.To)
			}
		}
		// Few event groups: truncated too.
		svc = graph.New(graph.Options{Store: s, MaxGroups: 1})
		if g, err := svc.Graph(ctx, query(t, []string{"u-alice"}, nil, nil, nil)); err != nil || !g.Truncated {
			t.Errorf("MaxGroups 1: truncated %v, %v", g != nil && g.Truncated, err)
		}
	})
}

// TestNewQuery: hostile and invalid queries are refused with a message,
// valid ones normalised.
func TestNewQuery(t *testing.T) {
	now := t0
	long := strings.Repeat("x", 129)
	many := make([]string, graph.MaxSeeds+1)
	for i := range many {
		many[i] = "u" + strings.Repeat("1", i+1)
	}
	bad := []struct {
		name                       string
		users, sessions, devs, ips []string
		from, to                   time.Time
	}{
		{name: "nothing"},
		{name: "long id", users: []string{long}},
		{name: "empty id", sessions: []string{""}},
		{name: "space", devs: []string{"a b"}},
		{name: "control", users: []string{"a\x00b"}},
		{name: "non-ascii", users: []string{"ålice"}},
		{name: "bad ip", ips: []string{"999.1.1.1"}},
		{name: "ip with zone", ips: []string{"fe80::1%eth0"}},
		{name: "too many", users: many},
		{name: "too many across kinds", users: many[:10], ips: []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6", "192.0.2.7", "192.0.2.8", "192.0.2.9", "192.0.2.10", "192.0.2.11"}},
		{name: "reversed", users: []string{"u"}, from: now, to: now.Add(-time.Hour)},
		{name: "empty window", users: []string{"u"}, from: now, to: now},
		{name: "too long", users: []string{"u"}, from: now.Add(-93 * 24 * time.Hour), to: now},
		{name: "ancient", users: []string{"u"}, from: time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), to: time.Date(1970, 1, 2, 0, 0, 0, 0, time.UTC)},
	}
	for _, c := range bad {
		if _, err := graph.NewQuery(c.users, c.sessions, c.devs, c.ips, c.from, c.to, now); !errors.Is(err, graph.ErrInvalidQuery) {
			t.Errorf("%s: err %v, want ErrInvalidQuery", c.name, err)
		} else if strings.Contains(err.Error(), long) {
			t.Errorf("%s: the error echoes the input", c.name)
		}
	}
	q, err := graph.NewQuery([]string{"u1", "u1"}, nil, nil, []string{" 2001:db8::1 ", "::ffff:192.0.2.1"}, time.Time{}, time.Time{}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(q.Users, []string{"u1"}) || !slices.Equal(q.IPs, []string{"2001:db8::1", "::ffff:192.0.2.1", "192.0.2.1"}) ||
		!q.To.Equal(now.Add(time.Minute)) || !q.From.Equal(now.Add(time.Minute-graph.DefaultWindow)) {
		t.Errorf("normalised: %+v", q)
	}
	// Seeds from an incident.
	q, err = graph.QueryFor([]graph.Seed{{Kind: "user", ID: "u1"}, {Kind: "session", ID: "s1"}, {Kind: "device", ID: "d1"}, {Kind: "ip", ID: "192.0.2.1"}},
		now.Add(-time.Hour), now, now)
	if err != nil || len(q.Users)+len(q.Sessions)+len(q.Devices)+len(q.IPs) != 4 {
		t.Errorf("QueryFor: %+v %v", q, err)
	}
	if _, err := graph.QueryFor([]graph.Seed{{Kind: "token", ID: "x"}}, time.Time{}, time.Time{}, now); !errors.Is(err, graph.ErrInvalidQuery) {
		t.Errorf("QueryFor unknown kind: %v", err)
	}
}

// TestSignalWithoutDetection: without a detection, a refresh token
// presented with another key is the root cause by itself.
func TestSignalWithoutDetection(t *testing.T) {
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, e := range []*model.Event{
		{ID: "a", Type: model.EventTokenRefreshed, Time: t0, UserID: "u", SessionID: "s", DeviceID: "d", IP: ipOffice, Outcome: model.OutcomeSuccess,
			Data: map[string]string{"grant_type": "refresh_token", "jkt": keyVictim, "proof": "ok", "rt_gen_presented": "1", "rt_gen_issued": "2"}},
		{ID: "b", Type: model.EventRefreshReuseDetected, Time: t0.Add(time.Minute), UserID: "u", SessionID: "s", IP: ipAttacker,
			Data: map[string]string{"grant_type": "refresh_token", "jkt": keyThief, "bound_jkt": keyVictim, "proof": "wrong_key", "rt_gen_presented": "1"}},
	} {
		if _, err := s.AppendEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	g, err := graph.New(graph.Options{Store: s}).Graph(ctx, query(t, []string{"u"}, nil, nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	rc := g.RootCause
	if rc == nil || rc.Rule != graph.RuleSignal || rc.Misuse.EventID != "b" || rc.Origin.DeviceID != "d" || !rc.Misuse.OtherKey ||
		!strings.Contains(rc.Summary, "its refresh token (generation 1) replayed from IP "+ipAttacker+" with another key") {
		t.Errorf("root cause: %+v", rc)
	}
}

// TestAround: an incident's graph seeds its users, sessions, devices and
// addresses in that order (at most MaxSeeds), and spans a day either
// side of its detections, but not past a minute after now.
func TestAround(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	first, last := now.Add(-72*time.Hour), now.Add(-48*time.Hour)
	seeds, from, to := graph.Around([]string{"u1"}, []string{"s1", "s2"}, []string{"d1"}, []string{"192.0.2.1"}, first, last, now)
	want := []graph.Seed{{Kind: graph.KindUser, ID: "u1"}, {Kind: graph.KindSession, ID: "s1"}, {Kind: graph.KindSession, ID: "s2"},
		{Kind: graph.KindDevice, ID: "d1"}, {Kind: graph.KindIP, ID: "192.0.2.1"}}
	if !slices.Equal(seeds, want) {
		t.Errorf("seeds %v, want %v", seeds, want)
	}
	if !from.Equal(first.Add(-24*time.Hour)) || !to.Equal(last.Add(24*time.Hour)) {
		t.Errorf("window %s – %s, want a day either side of %s – %s", from, to, first, last)
	}
	// Ongoing: the window ends a minute after now.
	if _, _, to := graph.Around([]string{"u1"}, nil, nil, nil, first, now.Add(-time.Hour), now); !to.Equal(now.Add(time.Minute)) {
		t.Errorf("ongoing incident's window ends %s, want %s", to, now.Add(time.Minute))
	}
	many := make([]string, graph.MaxSeeds+5)
	for i := range many {
		many[i] = "s" + strings.Repeat("x", i+1)
	}
	seeds, _, _ = graph.Around([]string{"u1"}, many, nil, []string{"192.0.2.1"}, first, last, now)
	if len(seeds) != graph.MaxSeeds || seeds[0] != (graph.Seed{Kind: graph.KindUser, ID: "u1"}) || seeds[len(seeds)-1].Kind != graph.KindSession {
		t.Errorf("%d seeds (first %v, last %v), want the first %d in order", len(seeds), seeds[0], seeds[len(seeds)-1], graph.MaxSeeds)
	}
	if _, err := graph.QueryFor(seeds, from, to, now); err != nil {
		t.Errorf("the query of Around's result: %v", err)
	}
}
