package access_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

const pollInterval = 10 * time.Second

// env is a real SQLite store with fixtures, a bus with a recorder and
// one access service on them.
type env struct {
	st    *sqlite.Store
	bus   *bus.Local
	rec   *bus.Recorder
	clock *clock.Fake // shared by the services and the test
	svc   *access.Service
	// Fixture times: alice's risk was raised at riskAt.
	riskAt time.Time
}

// newEnv opens a fresh store with users alice (risk high) and bob (member
// of group ops, id g-ops), clients spa (public, https redirect), cli
// (public, loopback redirect), web (confidential) and tv (device code
// only), and devices d-active (active, compliant) and d-lost (lost,
// noncompliant); then loads a service.
func newEnv(t testing.TB) *env {
	t.Helper()
	ctx := context.Background()
	c := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "ward.db"), sqlite.WithClock(c.Now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{st: st, bus: bus.NewLocal(), rec: &bus.Recorder{}, clock: c, riskAt: c.Now().Add(-24 * time.Hour)}
	e.bus.Subscribe("recorder", e.rec.Handle)

	now := c.Now()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.CreateUser(ctx, &model.User{ID: "u-alice", Username: "alice", RiskLevel: policy.RiskHigh, RiskUpdatedAt: e.riskAt, CreatedAt: now, UpdatedAt: now}))
	must(st.CreateUser(ctx, &model.User{ID: "u-bob", Username: "bob", CreatedAt: now, UpdatedAt: now}))
	must(st.CreateGroup(ctx, &model.Group{ID: "g-ops", Name: "ops", Members: []string{"u-bob"}, CreatedAt: now}))
	for _, cl := range []*model.Client{
		{ID: "spa", TokenEndpointAuthMethod: model.AuthNone, RedirectURIs: []string{"https://app.example/cb"}, GrantTypes: []string{model.GrantAuthorizationCode}},
		{ID: "cli", TokenEndpointAuthMethod: model.AuthNone, RedirectURIs: []string{"http://127.0.0.1/cb"}, GrantTypes: []string{model.GrantAuthorizationCode}},
		{ID: "web", TokenEndpointAuthMethod: model.AuthClientSecretBasic, RedirectURIs: []string{"https://web.example/cb"}, GrantTypes: []string{model.GrantAuthorizationCode}},
		{ID: "tv", TokenEndpointAuthMethod: model.AuthNone, GrantTypes: []string{model.GrantDeviceCode}},
		{ID: "service", TokenEndpointAuthMethod: model.AuthClientSecretBasic, GrantTypes: []string{model.GrantClientCredentials}},
	} {
		cl.CreatedAt, cl.UpdatedAt = now, now
		must(st.CreateClient(ctx, cl))
	}
	for _, d := range []*model.Device{
		{ID: "d-active", UserID: "u-bob", JKT: "jkt-active", Platform: "linux", OSVersion: "12.1", Hostname: "bob-laptop",
			TrustType: model.TrustManaged, Status: model.DeviceActive, Compliance: model.Compliant},
		{ID: "d-lost", UserID: "u-bob", JKT: "jkt-lost", Platform: "windows", OSVersion: "11", Hostname: "bob-old",
			TrustType: model.TrustRegistered, Status: model.DeviceLost, Compliance: model.NonCompliant},
	} {
		d.CreatedAt, d.UpdatedAt, d.LastSeen = now, now, now
		must(st.CreateDevice(ctx, d))
	}
	e.svc = e.newService(t)
	return e
}

// newService is another instance (as on another node) on the same store.
func (e *env) newService(t testing.TB) *access.Service {
	t.Helper()
	s := access.New(access.Options{Store: e.st, Bus: e.bus, Now: e.clock.Now, PollInterval: pollInterval})
	if err := s.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *env) user(t testing.TB, id string) *model.User {
	t.Helper()
	u, err := e.st.GetUser(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func (e *env) client(t testing.TB, id string) *model.Client {
	t.Helper()
	c, err := e.st.GetClient(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *env) device(t testing.TB, id string) *model.Device {
	t.Helper()
	d, err := e.st.GetDevice(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// versions returns the number of stored versions.
func (e *env) versions(t testing.TB) int {
	t.Helper()
	vs, err := e.st.ListPolicyVersions(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return len(vs)
}

// changes returns the recorded access.policy_changed events.
func (e *env) changes() []model.Event {
	var out []model.Event
	for _, ev := range e.rec.Events() {
		if ev.Type == model.EventAccessPolicyChanged {
			out = append(out, ev)
		}
	}
	return out
}

// doc decodes a YAML policy document.
func doc(t testing.TB, y string) *policy.Document {
	t.Helper()
	d, err := policy.DecodeYAML([]byte(y))
	if err != nil {
		t.Fatalf("decode: %v\n%s", err, y)
	}
	return d
}

func apply(t testing.TB, s *access.Service, d *policy.Document, o access.ApplyOptions) *access.ApplyResult {
	t.Helper()
	res, err := s.Apply(context.Background(), d, o)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	return res
}

func evaluate(t testing.TB, s *access.Service, r access.Request) *access.Result {
	t.Helper()
	res, err := s.Evaluate(context.Background(), r)
	if err != nil {
		t.Fatalf("evaluate: %v", err)
	}
	return res
}

// policyResult returns the result of policy id in a decision.
func policyResult(t testing.TB, r *access.Result, id string) policy.PolicyResult {
	t.Helper()
	for _, p := range r.Policies {
		if p.ID == id {
			return p
		}
	}
	t.Fatalf("no result for policy %q in %+v", id, r.Policies)
	return policy.PolicyResult{}
}

var anyVersion = access.ApplyOptions{ExpectVersion: access.AnyVersion}

// Two policies; exclude lists are given empty on purpose: an empty list
// and an absent one are the same document.
const docV1 = `
locations:
  - {id: corp, trusted: true, ip_ranges: [203.0.113.0/24, "2001:db8:100::/48"]}
policies:
  - id: p-a
    state: enabled
    assignments: {users: {include: [all], exclude: []}, applications: {include: [web]}}
    grant: {controls: [mfa]}
  - id: p-b
    state: report_only
    assignments: {users: {include: [all]}, applications: {include: [all], exclude: []}}
    conditions: {flows: [refresh], locations: {include: [all], exclude: [trusted]}}
    grant: {block: true}
`

func TestEmptyStoreAllows(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	for _, r := range []access.Request{
		{Flow: policy.FlowInteractive, User: e.user(t, "u-alice"), Client: e.client(t, "spa"), IP: "198.51.100.1"},
		{Flow: policy.FlowClientCredentials, Client: e.client(t, "service")},
		{}, // no facts at all
	} {
		res := evaluate(t, e.svc, r)
		if res.Outcome != policy.OutcomeAllow || res.Version != 0 || len(res.Policies) != 0 {
			t.Errorf("empty store: %+v", res)
		}
	}
	d, v, err := e.svc.Current(ctx)
	if err != nil || v != 0 || d == nil || len(d.Policies) != 0 {
		t.Errorf("Current: %+v %d %v", d, v, err)
	}
	if set, v, err := e.svc.Set(ctx); set != nil || v != 0 || err != nil {
		t.Errorf("Set: %v %d %v", set, v, err)
	}
	if vs, err := e.svc.Versions(ctx, 0); err != nil || len(vs) != 0 {
		t.Errorf("Versions: %v %v", vs, err)
	}
	if _, _, err := e.svc.Version(ctx, 1); !errors.Is(err, store.ErrNotFound) || !errors.Is(err, access.ErrNotFound) {
		t.Errorf("Version(1) on an empty store: %v, want ErrNotFound", err)
	}
}

func TestApplyVersionsAndEvents(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	// First version.
	res := apply(t, e.svc, doc(t, docV1), access.ApplyOptions{Actor: "u-admin", Comment: "first", ExpectVersion: 0})
	if res.Version != 1 || !res.Changed || fmt.Sprint(res.Added) != "[p-a p-b]" || res.Updated != nil || res.Removed != nil || !res.LocationsChanged {
		t.Fatalf("first apply: %+v", res)
	}
	vs, err := e.st.ListPolicyVersions(ctx, 0)
	if err != nil || len(vs) != 1 || vs[0].Version != 1 || vs[0].CreatedBy != "u-admin" || vs[0].Comment != "first" ||
		!vs[0].CreatedAt.Equal(e.clock.Now()) || vs[0].Digest == "" {
		t.Fatalf("stored versions: %+v %v", vs, err)
	}
	evs := e.changes()
	if len(evs) != 1 {
		t.Fatalf("%d policy_changed events, want 1", len(evs))
	}
	ev := evs[0]
	if ev.Actor != "u-admin" || ev.Outcome != model.OutcomeSuccess || ev.Data["version"] != "1" || ev.Data["added"] != "p-a,p-b" ||
		ev.Data["policies"] != "2" || ev.Data["digest"] != vs[0].Digest || ev.Data["comment"] != "first" ||
		ev.Data["locations_changed"] != "true" || ev.Data["updated"] != "" || ev.Data["removed"] != "" {
		t.Errorf("event %+v", ev)
	}
	cur, v, err := e.svc.Current(ctx)
	if err != nil || v != 1 || len(cur.Policies) != 2 || cur.Policies[0].ID != "p-a" || len(cur.Locations) != 1 {
		t.Fatalf("Current: %+v %d %v", cur, v, err)
	}
	pv, vdoc, err := e.svc.Version(ctx, 1)
	if err != nil || pv.Version != 1 || len(vdoc.Policies) != 2 || vdoc.Policies[1].Grant.Block != true {
		t.Fatalf("Version(1): %+v %+v %v", pv, vdoc, err)
	}

	// The same document again (from YAML, and from its own JSON) stores
	// nothing and publishes nothing.
	same, _ := json.Marshal(doc(t, docV1))
	sameJSON, err := policy.DecodeJSON(strings.NewReader(string(same)))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []*policy.Document{doc(t, docV1), sameJSON} {
		res = apply(t, e.svc, d, access.ApplyOptions{Actor: "u-admin", ExpectVersion: 1})
		if res.Changed || res.Version != 1 || res.Added != nil || res.Updated != nil || res.Removed != nil || res.LocationsChanged {
			t.Errorf("identical apply: %+v", res)
		}
	}
	if n := e.versions(t); n != 1 {
		t.Errorf("%d versions after identical applies, want 1", n)
	}
	if n := len(e.changes()); n != 1 {
		t.Errorf("%d events after identical applies, want 1", n)
	}

	// Update p-a, remove p-b, add p-c; p-b's exclude list is empty
	// and must not count as a change to anything.
	res = apply(t, e.svc, doc(t, `
locations:
  - {id: corp, trusted: true, ip_ranges: [203.0.113.0/24, "2001:db8:100::/48"]}
policies:
  - id: p-c
    state: enabled
    assignments: {users: {include: [u-bob]}, applications: {include: [all]}}
    session: {access_token_lifetime: 10m}
  - id: p-a
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [web, spa]}}
    grant: {controls: [mfa]}
`), access.ApplyOptions{Actor: "u-admin", ExpectVersion: 1})
	if res.Version != 2 || !res.Changed || fmt.Sprint(res.Added) != "[p-c]" || fmt.Sprint(res.Updated) != "[p-a]" ||
		fmt.Sprint(res.Removed) != "[p-b]" || res.LocationsChanged {
		t.Fatalf("update: %+v", res)
	}
	ev = e.changes()[1]
	if ev.Data["version"] != "2" || ev.Data["added"] != "p-c" || ev.Data["updated"] != "p-a" || ev.Data["removed"] != "p-b" ||
		ev.Data["locations_changed"] != "" || ev.Data["comment"] != "" || ev.Data["policies"] != "2" {
		t.Errorf("update event %+v", ev.Data)
	}

	// A policy that differs only by an empty list is not updated.
	res = apply(t, e.svc, doc(t, `
locations:
  - {id: corp, trusted: true, ip_ranges: [203.0.113.0/24, "2001:db8:100::/48"]}
policies:
  - id: p-c
    state: enabled
    assignments: {users: {include: [u-bob]}, applications: {include: [all]}}
    session: {access_token_lifetime: 10m}
  - id: p-a
    state: enabled
    assignments: {users: {include: [all], exclude: []}, applications: {include: [web, spa]}, client_types: []}
    grant: {controls: [mfa]}
`), anyVersion)
	if res.Changed || res.Version != 2 || res.Updated != nil {
		t.Errorf("apply differing by empty lists: %+v", res)
	}

	// Locations only.
	res = apply(t, e.svc, doc(t, `
locations:
  - {id: corp, trusted: true, ip_ranges: [203.0.113.0/24]}
policies:
  - id: p-c
    state: enabled
    assignments: {users: {include: [u-bob]}, applications: {include: [all]}}
    session: {access_token_lifetime: 10m}
  - id: p-a
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [web, spa]}}
    grant: {controls: [mfa]}
`), anyVersion)
	if res.Version != 3 || !res.Changed || !res.LocationsChanged || res.Added != nil || res.Updated != nil || res.Removed != nil {
		t.Fatalf("locations change: %+v", res)
	}
	if ev := e.changes()[2]; ev.Data["locations_changed"] != "true" || ev.Data["added"]+ev.Data["updated"]+ev.Data["removed"] != "" {
		t.Errorf("locations event %+v", ev.Data)
	}

	// A stale ExpectVersion is a conflict; nothing is stored or published.
	_, err = e.svc.Apply(ctx, doc(t, docV1), access.ApplyOptions{Actor: "u-admin", ExpectVersion: 2})
	if !errors.Is(err, access.ErrConflict) {
		t.Fatalf("stale ExpectVersion: %v", err)
	}
	_, err = e.svc.Apply(ctx, doc(t, docV1), access.ApplyOptions{ExpectVersion: 0})
	if !errors.Is(err, access.ErrConflict) {
		t.Fatalf("ExpectVersion 0 with versions stored: %v", err)
	}
	if n := e.versions(t); n != 3 {
		t.Errorf("%d versions after conflicts, want 3", n)
	}
	if n := len(e.changes()); n != 3 {
		t.Errorf("%d events after conflicts, want 3", n)
	}
	if _, v, _ := e.svc.Current(ctx); v != 3 {
		t.Errorf("version in force %d after conflicts, want 3", v)
	}

	// An empty document is a valid version (no policies); nil is not.
	res = apply(t, e.svc, &policy.Document{}, access.ApplyOptions{ExpectVersion: 3})
	if res.Version != 4 || fmt.Sprint(res.Removed) != "[p-a p-c]" || !res.LocationsChanged {
		t.Errorf("empty document: %+v", res)
	}
	if r := evaluate(t, e.svc, access.Request{Flow: policy.FlowInteractive, User: e.user(t, "u-bob"), Client: e.client(t, "web")}); r.Outcome != policy.OutcomeAllow || r.Version != 4 {
		t.Errorf("no policies: %+v", r)
	}
	if _, err := e.svc.Apply(ctx, nil, anyVersion); !errors.Is(err, access.ErrInvalid) {
		t.Errorf("nil document: %v", err)
	}
	if vs, _ := e.svc.Versions(ctx, 2); len(vs) != 2 || vs[0].Version != 4 || vs[1].Version != 3 {
		t.Errorf("Versions(2): %+v", vs)
	}
}

func TestApplyInvalidListsEveryProblem(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	apply(t, e.svc, doc(t, docV1), anyVersion)
	before, _, _ := e.svc.Current(ctx)
	beforeJSON, _ := json.Marshal(before)

	bad := doc(t, `
locations:
  - {id: lab, ip_ranges: [10.0.0.0/33]}
policies:
  - id: p-bad
    state: enabled
    assignments: {users: {include: [all], exclude: [all]}, applications: {include: [all]}}
    conditions:
      locations: {include: [mars]}
    grant: {block: true}
  - id: p-cel
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions:
      device_filter: {mode: include, rule: "device.platform == "}
    grant: {controls: [mfa]}
`)
	_, err := e.svc.Apply(ctx, bad, access.ApplyOptions{Actor: "u-admin", ExpectVersion: 1})
	if !errors.Is(err, access.ErrInvalid) {
		t.Fatalf("invalid document: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		`locations[0].ip_ranges[0]: invalid CIDR "10.0.0.0/33"`,
		`policies[0].assignments.users.exclude: excluding "all" leaves nobody`,
		`policies[0].conditions.locations.include[0]: unknown location "mars"`,
		`policies[1].conditions.device_filter.rule: invalid CEL`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if n := e.versions(t); n != 1 {
		t.Errorf("%d versions after an invalid apply, want 1", n)
	}
	if n := len(e.changes()); n != 1 {
		t.Errorf("%d events after an invalid apply, want 1", n)
	}
	after, v, err := e.svc.Current(ctx)
	afterJSON, _ := json.Marshal(after)
	if err != nil || v != 1 || string(afterJSON) != string(beforeJSON) {
		t.Errorf("current set changed by an invalid apply: %d %v\n%s\n%s", v, err, beforeJSON, afterJSON)
	}
	// The version in force still decides.
	r := evaluate(t, e.svc, access.Request{Flow: policy.FlowInteractive, User: e.user(t, "u-bob"), Client: e.client(t, "web"), AMR: []string{"pwd"}})
	if r.Version != 1 || r.Outcome != policy.OutcomeAllowWithControls || fmt.Sprint(r.Controls) != "[mfa]" {
		t.Errorf("after an invalid apply: %+v", r)
	}
}

// Two instances on one store: B sees what A applied once its poll
// interval has passed, and not before.
func TestTwoInstancesPoll(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, b := e.svc, e.newService(t)
	bob, web := e.user(t, "u-bob"), e.client(t, "web")
	req := access.Request{Flow: policy.FlowInteractive, User: bob, Client: web, AMR: []string{"pwd"}}

	e.clock.Advance(pollInterval / 2) // B's last check was at Load
	apply(t, a, doc(t, docV1), anyVersion)
	if r := evaluate(t, a, req); r.Version != 1 || r.Outcome != policy.OutcomeAllowWithControls {
		t.Fatalf("A after its own apply: %+v", r)
	}
	// B checked at Load; a poll is due pollInterval later.
	e.clock.Advance(pollInterval/2 - time.Nanosecond)
	if r := evaluate(t, b, req); r.Version != 0 || r.Outcome != policy.OutcomeAllow {
		t.Fatalf("B before the poll interval: %+v", r)
	}
	if _, v, _ := b.Current(ctx); v != 0 {
		t.Fatalf("B Current before the poll interval: %d", v)
	}
	e.clock.Advance(time.Nanosecond)
	if r := evaluate(t, b, req); r.Version != 1 || r.Outcome != policy.OutcomeAllowWithControls {
		t.Fatalf("B after the poll interval: %+v", r)
	}

	// A second change: B's next check is a full interval after its last.
	e.clock.Advance(time.Second)
	apply(t, a, &policy.Document{}, anyVersion)
	e.clock.Advance(pollInterval - 2*time.Second)
	if _, v, _ := b.Current(ctx); v != 1 {
		t.Fatalf("B picked up version %d early", v)
	}
	e.clock.Advance(time.Second)
	if r := evaluate(t, b, req); r.Version != 2 || r.Outcome != policy.OutcomeAllow {
		t.Fatalf("B after the second change: %+v", r)
	}

	// Writes are checked against the store, not against what an instance
	// has loaded: a change made from a stale view is a conflict.
	apply(t, a, doc(t, docV1), access.ApplyOptions{ExpectVersion: 2})
	if _, err := b.Apply(ctx, &policy.Document{}, access.ApplyOptions{ExpectVersion: 2}); !errors.Is(err, access.ErrConflict) {
		t.Fatalf("B applying from a stale version: %v", err)
	}
	if n := e.versions(t); n != 3 {
		t.Errorf("%d versions, want 3", n)
	}
}

// hookStore runs a hook once, the first time LatestPolicyVersion is
// called after arm.
type hookStore struct {
	store.Store
	mu   sync.Mutex
	hook func()
}

func (h *hookStore) arm(f func()) { h.mu.Lock(); h.hook = f; h.mu.Unlock() }

func (h *hookStore) LatestPolicyVersion(ctx context.Context) (*model.PolicyVersion, error) {
	v, err := h.Store.LatestPolicyVersion(ctx)
	h.mu.Lock()
	f := h.hook
	h.hook = nil
	h.mu.Unlock()
	if f != nil {
		f()
	}
	return v, err
}

// A poll that read a version before this instance applied a newer one
// must not install the older version over it.
func TestPollDoesNotUndoApply(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	hs := &hookStore{Store: e.st}
	b := access.New(access.Options{Store: hs, Bus: e.bus, Now: e.clock.Now, PollInterval: pollInterval})
	if err := b.Load(ctx); err != nil {
		t.Fatal(err)
	}
	apply(t, e.svc, doc(t, docV1), anyVersion) // version 1, through another instance
	e.clock.Advance(pollInterval)
	// B's poll reads version 1; before it installs it, B applies version 2.
	hs.arm(func() { apply(t, b, &policy.Document{}, access.ApplyOptions{ExpectVersion: 1}) })
	if _, err := b.Evaluate(ctx, access.Request{Flow: policy.FlowInteractive}); err != nil {
		t.Fatal(err)
	}
	if _, v, _ := b.Current(ctx); v != 2 {
		t.Errorf("B serves version %d after applying version 2", v)
	}
}

// Refresh (run when another process's access.policy_changed arrives)
// installs the stored version at once, without waiting for the poll; a
// repeat changes nothing, and a refresh that read a version before this
// instance applied a newer one does not install the older over it.
func TestRefresh(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	hs := &hookStore{Store: e.st}
	b := access.New(access.Options{Store: hs, Bus: e.bus, Now: e.clock.Now, PollInterval: pollInterval})
	if err := b.Load(ctx); err != nil {
		t.Fatal(err)
	}
	bob, web := e.user(t, "u-bob"), e.client(t, "web")
	req := access.Request{Flow: policy.FlowInteractive, User: bob, Client: web, AMR: []string{"pwd"}}
	apply(t, e.svc, doc(t, docV1), anyVersion) // through another instance
	if r := evaluate(t, b, req); r.Version != 0 {
		t.Fatalf("B before Refresh (no poll due): version %d", r.Version)
	}
	for range 2 {
		if err := b.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if r := evaluate(t, b, req); r.Version != 1 || r.Outcome != policy.OutcomeAllowWithControls {
			t.Fatalf("B after Refresh: %+v", r)
		}
	}

	apply(t, e.svc, &policy.Document{}, anyVersion) // version 2
	hs.arm(func() { apply(t, b, doc(t, docV1), access.ApplyOptions{ExpectVersion: 2}) })
	if err := b.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, v, _ := b.Current(ctx); v != 3 {
		t.Errorf("B serves version %d after applying version 3", v)
	}
}

// A stored version that no longer compiles fails closed until a valid one
// is applied.
func TestStoredVersionDoesNotCompile(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	badDoc := `{"policies":[{"id":"p-old","state":"enabled","assignments":{"users":{"include":["all"]},"applications":{"include":["all"]}},` +
		`"conditions":{"device_filter":{"mode":"include","rule":"device.gone == 'x'"}},"grant":{"block":true}}]}`
	if err := e.st.CreatePolicyVersion(ctx, &model.PolicyVersion{Version: 1, Document: []byte(badDoc), Digest: "bad", CreatedAt: e.clock.Now()}); err != nil {
		t.Fatal(err)
	}
	other := e.svc // loaded before the bad version was stored
	s := access.New(access.Options{Store: e.st, Bus: e.bus, Now: e.clock.Now, PollInterval: pollInterval})
	if err := s.Load(ctx); err != nil {
		t.Fatalf("Load of a version that does not compile: %v", err)
	}
	req := access.Request{Flow: policy.FlowInteractive, User: e.user(t, "u-bob"), Client: e.client(t, "spa"), AMR: []string{"pwd"}}
	if r, err := s.Evaluate(ctx, req); !errors.Is(err, access.ErrUnavailable) || r != nil {
		t.Fatalf("Evaluate with a broken version: %+v %v", r, err)
	}
	if _, err := s.Explain(ctx, access.WhatIf{User: "bob", App: "spa"}); !errors.Is(err, access.ErrUnavailable) {
		t.Errorf("Explain with a broken version: %v", err)
	}
	if _, v, err := s.Set(ctx); v != 1 || !errors.Is(err, access.ErrUnavailable) {
		t.Errorf("Set with a broken version: %d %v", v, err)
	}
	// What is stored is shown, so that it can be fixed.
	cur, v, err := s.Current(ctx)
	if err != nil || v != 1 || len(cur.Policies) != 1 || cur.Policies[0].ID != "p-old" {
		t.Errorf("Current with a broken version: %+v %d %v", cur, v, err)
	}
	// Another instance finds it by polling, and fails closed too.
	e.clock.Advance(pollInterval)
	if _, err := other.Evaluate(ctx, req); !errors.Is(err, access.ErrUnavailable) {
		t.Errorf("polling instance: %v", err)
	}

	// A valid version fixes it, on this instance at once and on the other
	// after its interval.
	res := apply(t, s, doc(t, `
policies:
  - id: p-new
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    grant: {controls: [mfa]}
`), access.ApplyOptions{Actor: "u-admin", ExpectVersion: 1})
	if res.Version != 2 || !res.Changed || fmt.Sprint(res.Added) != "[p-new]" || fmt.Sprint(res.Removed) != "[p-old]" {
		t.Fatalf("fixing apply: %+v", res)
	}
	if r := evaluate(t, s, req); r.Version != 2 || r.Outcome != policy.OutcomeAllowWithControls {
		t.Errorf("after the fix: %+v", r)
	}
	e.clock.Advance(pollInterval)
	if r := evaluate(t, other, req); r.Version != 2 || r.Outcome != policy.OutcomeAllowWithControls {
		t.Errorf("other instance after the fix: %+v", r)
	}

	// A stored document that is not even JSON is also replaceable.
	if err := e.st.CreatePolicyVersion(ctx, &model.PolicyVersion{Version: 3, Document: []byte("not json"), Digest: "garbage"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Evaluate(ctx, req); !errors.Is(err, access.ErrUnavailable) {
		t.Errorf("Evaluate with a garbage version: %v", err)
	}
	if _, _, err := s.Current(ctx); !errors.Is(err, access.ErrUnavailable) {
		t.Errorf("Current with a garbage version: %v", err)
	}
	res = apply(t, s, &policy.Document{}, access.ApplyOptions{ExpectVersion: 3})
	if res.Version != 4 || !res.Changed {
		t.Errorf("replacing a garbage version: %+v", res)
	}
	if r := evaluate(t, s, req); r.Outcome != policy.OutcomeAllow || r.Version != 4 {
		t.Errorf("after replacing the garbage version: %+v", r)
	}
}

func TestEvaluateInput(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	alice, bob := e.user(t, "u-alice"), e.user(t, "u-bob")
	spa, cli := e.client(t, "spa"), e.client(t, "cli")
	dev := e.device(t, "d-active")

	// No policy uses groups: they are not looked up.
	apply(t, e.svc, doc(t, docV1), anyVersion)
	r := evaluate(t, e.svc, access.Request{Flow: policy.FlowInteractive, User: bob, Client: spa})
	if len(r.Input.User.Groups) != 0 {
		t.Errorf("groups looked up without a policy using them: %v", r.Input.User.Groups)
	}

	// Groups by name and by id.
	for _, g := range []string{"ops", "g-ops"} {
		apply(t, e.svc, doc(t, `
locations:
  - {id: corp, trusted: true, ip_ranges: [203.0.113.0/24, "2001:db8:100::/48"]}
policies:
  - id: block-untrusted
    state: enabled
    assignments: {users: {include: [all]}, groups: {exclude: [`+g+`]}, applications: {include: [all]}}
    conditions: {locations: {include: [all], exclude: [trusted]}}
    grant: {block: true}
  - id: high-user-risk
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {user_risk: [high]}
    grant: {controls: [mfa, password_change]}
`), anyVersion)
		r = evaluate(t, e.svc, access.Request{Flow: policy.FlowInteractive, User: bob, Client: spa, IP: "198.51.100.9"})
		if p := policyResult(t, r, "block-untrusted"); r.Outcome != policy.OutcomeAllow || p.Reason != policy.ReasonUserExcluded {
			t.Errorf("bob excluded through group %q: %+v", g, r)
		}
		if !slices.Contains(r.Input.User.Groups, "g-ops") || !slices.Contains(r.Input.User.Groups, "ops") {
			t.Errorf("bob's groups: %v", r.Input.User.Groups)
		}
		r = evaluate(t, e.svc, access.Request{Flow: policy.FlowInteractive, User: alice, Client: spa, IP: "198.51.100.9"})
		if r.Outcome != policy.OutcomeBlock || fmt.Sprint(r.BlockedBy) != "[block-untrusted]" || len(r.Input.User.Groups) != 0 {
			t.Errorf("alice (no group) with %q: %+v", g, r)
		}
	}

	// Addresses: IPv4, IPv4-mapped IPv6 (unmapped), IPv6, garbage.
	for _, tc := range []struct {
		ip, want string
		outcome  policy.Outcome
	}{
		{"203.0.113.7", "203.0.113.7", policy.OutcomeAllowWithControls},
		{"::ffff:203.0.113.7", "203.0.113.7", policy.OutcomeAllowWithControls},
		{"2001:db8:100::5", "2001:db8:100::5", policy.OutcomeAllowWithControls},
		{"198.51.100.9", "198.51.100.9", policy.OutcomeBlock},
		{"::ffff:198.51.100.9", "198.51.100.9", policy.OutcomeBlock},
		{"not-an-ip", "invalid IP", policy.OutcomeBlock}, // "all" includes an unknown address
	} {
		r = evaluate(t, e.svc, access.Request{Flow: policy.FlowInteractive, User: alice, Client: spa, IP: tc.ip, AMR: []string{"pwd"}})
		if r.Input.IP.String() != tc.want || r.Outcome != tc.outcome {
			t.Errorf("ip %q: input %v outcome %s, want %s %s", tc.ip, r.Input.IP, r.Outcome, tc.want, tc.outcome)
		}
	}

	// User risk: stored, overridden; password change after the risk was
	// raised remediates.
	trusted := "203.0.113.7"
	r = evaluate(t, e.svc, access.Request{Flow: policy.FlowInteractive, User: alice, Client: spa, IP: trusted, AMR: []string{"pwd"}})
	if r.Input.User.Risk != policy.RiskHigh || r.Input.Auth.PasswordChanged || fmt.Sprint(r.Controls) != "[mfa password_change]" {
		t.Errorf("alice at high risk: %+v", r)
	}
	r = evaluate(t, e.svc, access.Request{Flow: policy.FlowInteractive, User: alice, Client: spa, IP: trusted, UserRisk: policy.RiskLow})
	if r.Input.User.Risk != policy.RiskLow || r.Outcome != policy.OutcomeAllow || policyResult(t, r, "high-user-risk").Reason != policy.ReasonUserRisk {
		t.Errorf("user risk override: %+v", r)
	}
	r = evaluate(t, e.svc, access.Request{Flow: policy.FlowInteractive, User: bob, Client: spa, IP: trusted, UserRisk: policy.RiskHigh})
	if r.Input.User.Risk != policy.RiskHigh || r.Outcome != policy.OutcomeAllowWithControls {
		t.Errorf("user risk override on bob: %+v", r)
	}
	for _, tc := range []struct {
		changed time.Time
		want    bool
	}{
		{time.Time{}, false},
		{e.riskAt.Add(-time.Minute), false},
		{e.riskAt, false},
		{e.riskAt.Add(time.Minute), true},
	} {
		u := *alice
		u.PasswordChangedAt = tc.changed
		r = evaluate(t, e.svc, access.Request{Flow: policy.FlowInteractive, User: &u, Client: spa, IP: trusted, AMR: []string{"pwd", "otp"}})
		if r.Input.Auth.PasswordChanged != tc.want {
			t.Errorf("password changed at %v (risk at %v): PasswordChanged %v", tc.changed, e.riskAt, r.Input.Auth.PasswordChanged)
		}
		if tc.want && r.Outcome != policy.OutcomeAllow {
			t.Errorf("remediated high risk with MFA: %+v", r)
		}
	}
	// Through the store: a password change recorded on the user.
	if _, err := e.st.UpdateUser(ctx, "u-alice", func(u *model.User) error { u.PasswordChangedAt = e.clock.Now(); return nil }); err != nil {
		t.Fatal(err)
	}
	r = evaluate(t, e.svc, access.Request{Flow: policy.FlowInteractive, User: e.user(t, "u-alice"), Client: spa, IP: trusted})
	if !r.Input.Auth.PasswordChanged {
		t.Errorf("stored password change: %+v", r.Input.Auth)
	}

	// Authentication strength from amr.
	for _, tc := range []struct {
		amr      []string
		strength string
		mfa      bool
	}{
		{nil, "", false},
		{[]string{"pwd"}, policy.StrengthPassword, false},
		{[]string{"pwd", "otp"}, policy.StrengthPasswordTOTP, true},
		{[]string{"pwd", "otp", "mfa"}, policy.StrengthPasswordTOTP, true},
		{[]string{"hwk", "user", "mfa"}, policy.StrengthPhishingResistant, true},
	} {
		r = evaluate(t, e.svc, access.Request{Flow: policy.FlowInteractive, User: bob, Client: spa, IP: trusted, AMR: tc.amr})
		a := r.Input.Auth
		if a.Strength != tc.strength || a.MFA != tc.mfa || !slices.Equal(a.Methods, tc.amr) {
			t.Errorf("amr %v: %+v, want strength %q mfa %v", tc.amr, a, tc.strength, tc.mfa)
		}
		if got := access.Strength(tc.amr); got != tc.strength {
			t.Errorf("Strength(%v) = %q, want %q", tc.amr, got, tc.strength)
		}
	}

	// Device, client, flow, sign-in risk and token protection.
	r = evaluate(t, e.svc, access.Request{Flow: policy.FlowRefresh, User: bob, Client: cli, Device: dev, IP: trusted,
		TokenProtected: true, SignInRisk: policy.RiskMedium})
	want := policy.DeviceInput{ID: "d-active", Registered: true, Compliance: model.Compliant, Platform: "linux", OSVersion: "12.1",
		TrustType: model.TrustManaged, Status: model.DeviceActive, Hostname: "bob-laptop"}
	if r.Input.Device == nil || *r.Input.Device != want {
		t.Errorf("device input %+v, want %+v", r.Input.Device, want)
	}
	if r.Input.App != (policy.AppInput{ClientID: "cli", Public: true, Native: true}) || r.Input.Flow != policy.FlowRefresh ||
		!r.Input.Auth.TokenProtected || r.Input.SignInRisk != policy.RiskMedium || r.Input.User.ID != "u-bob" {
		t.Errorf("input %+v", r.Input)
	}
	r = evaluate(t, e.svc, access.Request{Flow: policy.FlowInteractive, User: bob, Client: e.client(t, "web"), IP: trusted})
	if r.Input.App != (policy.AppInput{ClientID: "web"}) || r.Input.Device != nil {
		t.Errorf("confidential client, no device: %+v", r.Input)
	}
	// client_credentials: no user, no authentication.
	r = evaluate(t, e.svc, access.Request{Flow: policy.FlowClientCredentials, Client: e.client(t, "service"), IP: "198.51.100.9"})
	if r.Input.User.ID != "" || r.Input.Auth.Strength != "" || r.Outcome != policy.OutcomeBlock {
		t.Errorf("client_credentials: %+v", r)
	}
}

func TestExplain(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	apply(t, e.svc, doc(t, `
locations:
  - {id: corp, trusted: true, ip_ranges: [203.0.113.0/24]}
policies:
  - id: docs-mfa
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {flows: [interactive, device_code]}
    grant: {controls: [mfa]}
  - id: block-untrusted-workloads
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [service]}}
    conditions: {flows: [client_credentials], locations: {include: [all], exclude: [trusted]}}
    grant: {block: true}
`), anyVersion)

	// Every problem at once, each naming its field.
	_, err := e.svc.Explain(ctx, access.WhatIf{User: "nobody", App: "nope", Device: "no-device", IP: "1.2.3",
		SignInRisk: "extreme", UserRisk: "bad", Flow: "implicit"})
	if !errors.Is(err, access.ErrWhatIf) {
		t.Fatalf("bad what-if: %v", err)
	}
	for _, want := range []string{`user "nobody"`, `app "nope"`, `device "no-device"`, `ip "1.2.3"`, "sign_in_risk", "user_risk", "flow"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("what-if error lacks %q: %v", want, err)
		}
	}
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown names should wrap store.ErrNotFound: %v", err)
	}
	if _, err := e.svc.Explain(ctx, access.WhatIf{User: "bob"}); !errors.Is(err, access.ErrWhatIf) || !strings.Contains(err.Error(), "app is required") {
		t.Errorf("what-if without app: %v", err)
	}

	// Username (any case) and id both resolve; the default flow is
	// interactive, the default authentication a password.
	for _, u := range []string{"bob", "BOB", "u-bob"} {
		r, err := e.svc.Explain(ctx, access.WhatIf{User: u, App: "spa", IP: "203.0.113.7"})
		if err != nil {
			t.Fatalf("what-if for %q: %v", u, err)
		}
		if r.Input.User.ID != "u-bob" || r.Input.Flow != policy.FlowInteractive || r.Input.Auth.Strength != policy.StrengthPassword ||
			r.Outcome != policy.OutcomeAllowWithControls || fmt.Sprint(r.Controls) != "[mfa]" || r.Version != 1 {
			t.Errorf("what-if for %q: %+v", u, r)
		}
	}
	r, err := e.svc.Explain(ctx, access.WhatIf{User: "bob", App: "spa", MFA: true, Flow: policy.FlowDeviceCode, SignInRisk: policy.RiskHigh, UserRisk: policy.RiskMedium})
	if err != nil || !r.Input.Auth.MFA || r.Input.Auth.Strength != policy.StrengthPasswordTOTP || r.Outcome != policy.OutcomeAllow ||
		r.Input.Flow != policy.FlowDeviceCode || r.Input.SignInRisk != policy.RiskHigh || r.Input.User.Risk != policy.RiskMedium {
		t.Errorf("what-if with MFA: %+v %v", r, err)
	}

	// Without a user: client_credentials.
	r, err = e.svc.Explain(ctx, access.WhatIf{App: "service", IP: "198.51.100.1"})
	if err != nil || r.Input.Flow != policy.FlowClientCredentials || r.Input.User.ID != "" || r.Outcome != policy.OutcomeBlock ||
		fmt.Sprint(r.BlockedBy) != "[block-untrusted-workloads]" || policyResult(t, r, "docs-mfa").Reason != policy.ReasonFlow {
		t.Errorf("what-if for a workload: %+v %v", r, err)
	}
	r, err = e.svc.Explain(ctx, access.WhatIf{App: "service", IP: "203.0.113.1"})
	if err != nil || r.Outcome != policy.OutcomeAllow || policyResult(t, r, "block-untrusted-workloads").Reason != policy.ReasonLocationExcluded {
		t.Errorf("what-if for a workload at a trusted address: %+v %v", r, err)
	}

	// Token protection defaults to the device being active.
	no := false
	for _, tc := range []struct {
		device string
		tp     *bool
		want   bool
	}{
		{"", nil, false},
		{"d-active", nil, true},
		{"d-lost", nil, false},
		{"d-active", &no, false},
	} {
		r, err := e.svc.Explain(ctx, access.WhatIf{User: "bob", App: "cli", Device: tc.device, TokenProtected: tc.tp})
		if err != nil {
			t.Fatalf("what-if with device %q: %v", tc.device, err)
		}
		if r.Input.Auth.TokenProtected != tc.want || (tc.device != "") != (r.Input.Device != nil) {
			t.Errorf("device %q token_protected %v: input %+v", tc.device, tc.tp, r.Input)
		}
		if tc.device != "" && r.Input.Device.ID != tc.device {
			t.Errorf("device input %+v", r.Input.Device)
		}
	}
}

func TestNative(t *testing.T) {
	for _, tc := range []struct {
		name   string
		auth   string
		uris   []string
		grants []string
		want   bool
	}{
		{"public loopback", model.AuthNone, []string{"http://127.0.0.1/cb"}, nil, true},
		{"public loopback with port", model.AuthNone, []string{"http://127.0.0.1:8400/cb"}, nil, true},
		{"public ipv6 loopback", model.AuthNone, []string{"http://[::1]:8400/cb"}, nil, true},
		{"public localhost", model.AuthNone, []string{"http://localhost:8400/cb"}, nil, true},
		{"public custom scheme", model.AuthNone, []string{"com.example.app:/oauth2redirect"}, nil, true},
		{"public loopback and custom scheme", model.AuthNone, []string{"http://127.0.0.1/cb", "com.example.app:/cb"}, nil, true},
		{"public https", model.AuthNone, []string{"https://app.example/cb"}, nil, false},
		{"public http non-loopback", model.AuthNone, []string{"http://app.example/cb"}, nil, false},
		{"public loopback and https", model.AuthNone, []string{"http://127.0.0.1/cb", "https://app.example/cb"}, nil, false},
		{"public upper-case HTTPS", model.AuthNone, []string{"HTTPS://app.example/cb"}, nil, false},
		{"public host that starts like localhost", model.AuthNone, []string{"http://localhost.attacker.example/cb"}, nil, false},
		{"public host that starts like 127.0.0.1", model.AuthNone, []string{"http://127.0.0.1.nip.example/cb"}, nil, false},
		{"confidential loopback", model.AuthClientSecretBasic, []string{"http://127.0.0.1/cb"}, nil, false},
		{"confidential https", model.AuthClientSecretBasic, []string{"https://web.example/cb"}, nil, false},
		{"device code only", model.AuthNone, nil, []string{model.GrantDeviceCode}, true},
		{"device code only, confidential", model.AuthClientSecretBasic, nil, []string{model.GrantDeviceCode, model.GrantRefreshToken}, true},
		{"client credentials only", model.AuthClientSecretBasic, nil, []string{model.GrantClientCredentials}, false},
		// A registered application_type wins over the inference.
		{"web: public loopback", model.AuthNone, []string{"web", "http://127.0.0.1/cb"}, nil, false},
		{"native: confidential https", model.AuthClientSecretBasic, []string{"native", "https://web.example/cb"}, nil, true},
	} {
		c := &model.Client{ID: "c", TokenEndpointAuthMethod: tc.auth, RedirectURIs: tc.uris, GrantTypes: tc.grants}
		if len(tc.uris) > 0 && (tc.uris[0] == "web" || tc.uris[0] == "native") {
			c.ApplicationType, c.RedirectURIs = tc.uris[0], tc.uris[1:]
		}
		if got := access.Native(c); got != tc.want {
			t.Errorf("%s: Native = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestEventData(t *testing.T) {
	r := &access.Result{Version: 7, Decision: policy.Decision{
		Outcome:   policy.OutcomeBlock,
		BlockedBy: []string{"b1", "b2"},
		Controls:  []string{"mfa", "token_protection"},
		Policies: []policy.PolicyResult{
			{ID: "b1", Result: policy.ResultApplied, Outcome: policy.OutcomeBlock},
			{ID: "n1", Result: policy.ResultNotApplied, Reason: policy.ReasonFlow},
			{ID: "r1", Result: policy.ResultReportOnly, Outcome: policy.OutcomeAllowWithControls, Unmet: []string{"mfa", "compliant_device"}},
			{ID: "b2", Result: policy.ResultApplied, Outcome: policy.OutcomeBlock},
			{ID: "r2", Result: policy.ResultReportOnly, Outcome: policy.OutcomeBlock},
		},
	}}
	m := map[string]string{"other": "kept"}
	r.EventData(m)
	want := map[string]string{
		"other":          "kept",
		"ca_version":     "7",
		"ca_outcome":     "block",
		"ca_applied":     "b1,b2",
		"ca_report_only": "r1=allow_with_controls:mfa+compliant_device,r2=block",
		"ca_blocked_by":  "b1,b2",
		"ca_controls":    "mfa,token_protection",
	}
	if fmt.Sprint(m) != fmt.Sprint(want) {
		t.Errorf("EventData:\n got %v\nwant %v", m, want)
	}

	// An allow with nothing applied records only the version and outcome.
	m = map[string]string{}
	(&access.Result{Decision: policy.Decision{Outcome: policy.OutcomeAllow}}).EventData(m)
	if fmt.Sprint(m) != "map[ca_outcome:allow ca_version:0]" {
		t.Errorf("EventData of a plain allow: %v", m)
	}
	// nil receiver or map: nothing, no panic.
	(*access.Result)(nil).EventData(m)
	r.EventData(nil)

	// From a real evaluation.
	e := newEnv(t)
	apply(t, e.svc, doc(t, docV1), anyVersion)
	res := evaluate(t, e.svc, access.Request{Flow: policy.FlowRefresh, User: e.user(t, "u-bob"), Client: e.client(t, "web"),
		IP: "198.51.100.1", AMR: []string{"pwd"}})
	m = map[string]string{}
	res.EventData(m)
	if m["ca_version"] != "1" || m["ca_outcome"] != "allow_with_controls" || m["ca_applied"] != "p-a" ||
		m["ca_report_only"] != "p-b=block" || m["ca_controls"] != "mfa" || m["ca_blocked_by"] != "" {
		t.Errorf("EventData of an evaluation: %v", m)
	}
}

// The service is safe for concurrent evaluation while policies change
// and instances poll (run with -race).
func TestConcurrentEvaluateAndApply(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	b := e.newService(t)
	req := access.Request{Flow: policy.FlowInteractive, User: e.user(t, "u-bob"), Client: e.client(t, "web"), AMR: []string{"pwd"}}
	docs := []*policy.Document{doc(t, docV1), {}}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, s := range []*access.Service{e.svc, b} {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Evaluate(ctx, req); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := range 10 {
		if _, err := e.svc.Apply(ctx, docs[i%2], anyVersion); err != nil {
			t.Fatal(err)
		}
		e.clock.Advance(pollInterval)
	}
	close(stop)
	wg.Wait()
	if n := e.versions(t); n != 10 {
		t.Errorf("%d versions, want 10", n)
	}
}

// ---- Benchmarks ----

func benchEnv(b *testing.B, d *policy.Document) (*access.Service, access.Request) {
	b.Helper()
	e := newEnv(b)
	if d != nil {
		apply(b, e.svc, d, anyVersion)
	}
	req := access.Request{Flow: policy.FlowInteractive, User: e.user(b, "u-bob"), Client: e.client(b, "cli"),
		Device: e.device(b, "d-active"), IP: "203.0.113.7", AMR: []string{"pwd", "otp"}, TokenProtected: true}
	return e.svc, req
}

func BenchmarkEvaluateNoPolicies(b *testing.B) {
	s, req := benchEnv(b, nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Evaluate(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEvaluateExamplePolicies evaluates against the shipped example
// (which excludes a group, so each evaluation looks up the user's groups
// in the store).
func BenchmarkEvaluateExamplePolicies(b *testing.B) {
	data, err := os.ReadFile("../../examples/policies/policies.yaml")
	if err != nil {
		b.Fatal(err)
	}
	d, err := policy.DecodeYAML(data)
	if err != nil {
		b.Fatal(err)
	}
	s, req := benchEnv(b, d)
	ctx := context.Background()
	if r, err := s.Evaluate(ctx, req); err != nil || r.Outcome != policy.OutcomeAllow || len(r.Input.User.Groups) == 0 {
		b.Fatalf("example policies: %+v %v", r, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Evaluate(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// The device filter sees whether the device key is attested (never the
// key storage the agent reports): a policy can block devices whose key
// Ward has not verified to be in a TPM.
func TestDeviceFilterKeyAttested(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	apply(t, e.svc, doc(t, `
policies:
  - id: hardware-keys-only
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {device_filter: {mode: include, rule: "!device.key_attested"}}
    grant: {block: true}
`), anyVersion)
	req := func() access.Request {
		return access.Request{Flow: policy.FlowRefresh, User: e.user(t, "u-bob"), Client: e.client(t, "cli"), Device: e.device(t, "d-active"),
			IP: "203.0.113.7", TokenProtected: true}
	}
	r := evaluate(t, e.svc, req())
	if r.Input.Device.KeyAttested || r.Outcome != policy.OutcomeBlock || fmt.Sprint(r.BlockedBy) != "[hardware-keys-only]" {
		t.Fatalf("unattested key: %+v", r)
	}
	// Reported as a TPM key: still not attested, still blocked.
	if _, err := e.st.UpdateDevice(ctx, "d-active", func(d *model.Device) error { d.KeyStorage = "tpm"; return nil }); err != nil {
		t.Fatal(err)
	}
	if r := evaluate(t, e.svc, req()); r.Outcome != policy.OutcomeBlock {
		t.Fatalf("a claimed TPM key: %+v", r)
	}
	if _, err := e.st.UpdateDevice(ctx, "d-active", func(d *model.Device) error {
		d.KeyAttested, d.KeyAttestation = true, []byte(`{"method":"tpm2"}`)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r = evaluate(t, e.svc, req())
	if !r.Input.Device.KeyAttested || r.Outcome != policy.OutcomeAllow || policyResult(t, r, "hardware-keys-only").Reason != policy.ReasonFilterNotMatched {
		t.Fatalf("attested key: %+v", r)
	}
}
