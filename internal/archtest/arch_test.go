// Package archtest enforces the arrows of Ward's architecture
// (docs/architecture.md) on the real package graph. `go list -deps`
// reports, for every package of the module, its direct imports and its
// transitive dependencies: Ward's own packages, third-party modules and
// the standard library. The rules below are the single description of
// what may depend on what; every Ward package must have one, and a rule
// for a package that does not exist fails as well.
package archtest

import (
	"path/filepath"
	"sync"
	"testing"
)

const module = "github.com/ward-idp/ward"

// Layer lists, from the top down. A rule's never list says which of
// them a package must stay clear of.
var (
	// wiring assembles Ward: the commands, the application (config ->
	// store -> bus -> services) and the HTTP assembly. Nothing below it
	// may depend on it, or a part could no longer be built without all.
	wiring = []string{"internal/app", "internal/server", "internal/demo", "cmd/..."}
	// testOnly are helpers for tests; production code never uses them.
	testOnly = []string{"internal/wardtest", "internal/store/storetest", "internal/store/backendtest", "internal/clock", "internal/bus/bustest", "internal/geo/geotest", "internal/identity/webauthntest", "internal/metrics/metricstest"}
	// storeImpls are the storage backends: only the wiring chooses one.
	storeImpls = []string{"internal/store/sqlite", "internal/store/postgres"}
	// handlers speak HTTP (or answer it: the token grants); services
	// never call back into them.
	handlers = []string{"internal/oauth", "internal/oauth/grant", "internal/signin", "internal/admin", "internal/console", "internal/deviceapi", "internal/ssf", "internal/web"}
	// services hold Ward's domain logic over the store and bus
	// interfaces; they meet only through leaf packages, never directly.
	services = []string{"internal/identity", "internal/clients", "internal/tokens", "internal/device", "internal/access", "internal/cae",
		"internal/session", "internal/audit", "internal/risk", "internal/incident", "internal/graph"}

	notWiring  = join(wiring, testOnly)
	notHandler = join(notWiring, storeImpls)
	notService = join(notHandler, handlers, services)
	// serverSide is Ward's server: everything internal but the strict
	// JSON reader and the TLS loader, which public packages may share.
	serverSide = join(notService, []string{"internal/bus", "internal/store/...", "internal/model", "internal/secret",
		"internal/config", "internal/policy", "internal/ratelimit"})
	// anything: no Ward package at all.
	anything = []string{"..."}
	// public: what the public packages (the SDK) stay clear of: all of
	// Ward's internals and commands.
	public = []string{"internal/...", "cmd/..."}
)

// layers, strictest first, for the rule suggested to a new package.
var layers = []struct {
	name  string
	never []string
}{{"anything", anything}, {"serverSide", serverSide}, {"notService", notService}, {"notHandler", notHandler}, {"notWiring", notWiring}}

// Third-party modules of the public packages, listed exactly: they may
// one day have a go.mod of their own, and every module they pull in is a
// dependency of every resource server and device that uses them.
const (
	goJose = "github.com/go-jose/go-jose/v4"
	xCrypt = "golang.org/x/crypto"
	xSys   = "golang.org/x/sys"
	goTPM  = "github.com/google/go-tpm"
	xOAuth = "golang.org/x/oauth2"
)

// natsClient is the NATS client with what it needs (rs/caenats only).
var natsClient = []string{"github.com/nats-io/nats.go", "github.com/nats-io/nkeys", "github.com/nats-io/nuid",
	"github.com/klauspost/compress", xCrypt, xSys}

// rules: one per Ward package, true today. To add a package, add one
// line here (the test's message for an uncovered package prints it).
var rules = map[string]rule{
	// Leaves: the standard library only, no Ward package, so anything
	// may use them without pulling in anything else.
	"internal/model":     {never: anything, modules: stdOnly},
	"internal/secret":    {never: anything, modules: stdOnly},
	"internal/ratelimit": {never: anything, modules: stdOnly},
	"internal/web":       {never: anything, modules: stdOnly},
	"internal/tlsutil":   {never: anything, modules: stdOnly},
	"internal/clock":     {never: anything, modules: stdOnly}, // the tests' fake clock
	// The SSRF guard of outbound requests to URLs others choose: the
	// transmitter's pushes and the receiver's fetches share one rule.
	"internal/netguard": {never: anything, modules: stdOnly},
	// Prometheus instrumentation: counters, gauges and histograms with
	// bounded labels, written in the text format; used by the wiring and
	// the gateway, so it may use nothing of Ward itself.
	"internal/metrics": {never: anything, modules: stdOnly},
	// The strict exposition parser of the tests of /metrics endpoints.
	"internal/metrics/metricstest": {never: anything, modules: stdOnly},
	// MITRE ATT&CK techniques and tactics: data, shared by incidents and
	// the OCSF mapping.
	"internal/mitre": {never: anything, modules: stdOnly},
	// Free text made safe to store and show (details, reasons), and the
	// check of request parameters: shared by services and handlers.
	"internal/textclean": {never: anything, modules: stdOnly},
	// Client descriptions and their validation, shared by the
	// configuration, the clients service and the admin API.
	"internal/clientspec": {imports: []string{"internal/model"}, never: notService, modules: stdOnly},

	// The activity record (sign-ins, grants, token uses, signals) that
	// the risk detectors read online and in backtests: model types in,
	// documented JSON lines out, nothing else.
	"internal/activity": {imports: []string{"internal/model"}, never: notService, modules: stdOnly},

	// Places addresses with the operator's MMDB files: countries for
	// Conditional Access, whole locations for the activity record.
	"internal/geo": {imports: []string{"internal/activity"}, never: notService,
		modules: []string{"github.com/oschwald/maxminddb-golang/v2", xSys}},
	// MMDB files for tests, written with MaxMind's writer.
	"internal/geo/geotest": {never: anything},

	// Conditional Access engine: pure. Compile validates, Evaluate has no
	// I/O: no Ward package (so no store), no network, no database, no
	// processes; its third-party modules are CEL and YAML (countries are looked up
	// beforehand, by internal/geo).
	"internal/policy": {never: anything, noStd: []string{"net", "net/http", "database/sql", "os/exec"},
		modules: []string{"cel.dev/cel-go", "cel.dev/expr", "github.com/antlr4-go/antlr/v4",
			"go.yaml.in/yaml/v3", "golang.org/x/exp", "google.golang.org/genproto/googleapis/api",
			"google.golang.org/genproto/googleapis/rpc", "google.golang.org/protobuf"}},

	// Storage: one interface over model types, one shared SQL
	// implementation and two backends. Only the wiring picks a backend;
	// the interface and the shared SQL never depend on a backend.
	"internal/store":                   {imports: []string{"internal/model"}, never: join(notService, []string{"internal/bus"}), modules: stdOnly},
	"internal/store/internal/sqlstore": {imports: []string{"internal/model", "internal/store"}, never: notService, modules: stdOnly},
	"internal/store/sqlite":            {imports: []string{"internal/store", "internal/store/internal/sqlstore"}, never: notService},
	"internal/store/postgres":          {imports: []string{"internal/store", "internal/store/internal/sqlstore"}, never: notService},
	// The bus: the outbox relay reads the events table through the store
	// interface.
	"internal/bus": {imports: []string{"internal/model", "internal/store"}, never: notService},

	// Services: leaves, the store and bus interfaces, the public DPoP and
	// posture packages; never a handler, a backend, the wiring or another
	// service.
	"internal/identity": {imports: []string{"internal/bus", "internal/model", "internal/ratelimit", "internal/secret", "internal/store"}, never: notService},
	"internal/clients":  {imports: []string{"internal/bus", "internal/clientspec", "internal/model", "internal/secret", "internal/store"}, never: notService},
	"internal/tokens":   {imports: []string{"internal/bus", "internal/model", "internal/secret", "internal/store", "jsonobj", "jws"}, never: notService},
	// The device service verifies DPoP thumbprints and agent posture
	// reports with the same public packages the agent uses, and TPM key
	// attestation with its own leaf.
	"internal/device": {imports: []string{"dpop", "internal/bus", "internal/model", "internal/store", "internal/tpmattest", "jws", "posture"}, never: notService},
	// TPM 2.0 key attestation, verified on the server: the TPM's encodings
	// (go-tpm) and the standard library, nothing of Ward.
	"internal/tpmattest": {never: anything, modules: []string{goTPM, xSys}},
	// Conditional Access service: stored policy versions and the engine.
	"internal/access": {imports: []string{"internal/bus", "internal/geo", "internal/model", "internal/policy", "internal/store"}, never: notService},
	// Shared Signals transmitter: signs through a one-method interface
	// rather than importing tokens.
	"internal/cae": {imports: []string{"internal/bus", "internal/model", "internal/netguard", "internal/secret", "internal/store", "internal/textclean"}, never: notService},
	// The one owner of session revocation: every revocation commits with
	// its events here (handlers and services reach it through small
	// interfaces of their own or the wiring).
	// The session service records refresh-token reuse as attributed
	// activity (internal/activity's Data keys and proof statuses).
	"internal/session": {imports: []string{"internal/activity", "internal/bus", "internal/model", "internal/store"}, never: notService},
	// Ward as a Shared Signals receiver: stream management at other
	// transmitters and their SETs, verified with the public jws, jsonobj
	// and rs (claim rules) packages, recorded through the store and the
	// bus as signal activity; outbound requests pass the SSRF guard.
	"internal/ssfrx": {imports: []string{"httpauth", "internal/activity", "internal/bus", "internal/model", "internal/netguard", "internal/store", "jsonobj", "jws", "rs"}, never: notService},
	// Risk levels, their response and administration: revokes through a
	// small interface the session service fills (never importing it),
	// judges sign-ins through the assess contract, so any detector engine
	// plugs in from the wiring.
	"internal/risk": {imports: []string{"internal/activity", "internal/bus", "internal/model", "internal/risk/assess", "internal/store", "internal/textclean"}, never: notService},
	// The token-theft detectors: pure functions over the activity record,
	// findings in the assess contract's terms; no store, no bus, no I/O
	// but the operator's IP list files.
	"internal/risk/detect": {imports: []string{"internal/activity", "internal/risk/assess"}, never: notService, modules: stdOnly,
		noStd: []string{"net/http", "database/sql", "os/exec"}},
	// The online detectors: follow the audit log like the SIEM exporters
	// (their cursor machinery), feed the engine and record findings on
	// the bus in the risk service's event format; judge sign-ins against
	// the user's history in the store.
	"internal/risk/online": {imports: []string{"internal/activity", "internal/audit/export", "internal/bus", "internal/geo", "internal/model", "internal/risk/assess", "internal/risk/detect", "internal/store"}, never: notService},
	// The contract between the risk service and the detectors: types over
	// the activity record, and the risk.detected event a finding is.
	"internal/risk/assess": {imports: []string{"internal/activity", "internal/model"}, never: notService, modules: stdOnly},
	// The backtest: replays activity lines into the detectors, generates
	// labelled traffic and scores the detectors on it.
	"internal/risk/backtest": {imports: []string{"internal/activity", "internal/risk/detect"}, never: notService, modules: stdOnly},
	// Incidents: detections correlated under the store's lock, response
	// actions through small interfaces of its own (the wiring passes the
	// session, device, identity and risk services).
	"internal/incident": {imports: []string{"internal/bus", "internal/mitre", "internal/model", "internal/store", "internal/textclean"}, never: notService},
	// The investigation graph: reads events, detections, sessions and
	// users through the store interface and places addresses with geo;
	// it reads the activity record's Data keys. It changes nothing.
	"internal/graph": {imports: []string{"internal/activity", "internal/geo", "internal/model", "internal/store", "internal/textclean"}, never: notService},
	// The audit persister and the event-code registry (future exporters).
	"internal/audit": {imports: []string{"internal/bus", "internal/model", "internal/store"}, never: notService},
	// The OCSF mapping of audit events: the vocabulary and the record,
	// nothing else.
	"internal/audit/ocsf": {imports: []string{"internal/mitre", "internal/model", "internal/store"}, never: notService},
	// The SIEM exporters: OCSF records to files, webhooks and syslog,
	// each following the events table with a cursor of its own.
	"internal/audit/export": {imports: []string{"internal/audit/ocsf", "internal/store"}, never: notService},
	// The tamper-evident audit log: seals the events table into a hash
	// chain and verifies it; signs checkpoints through a small interface
	// (the key manager) and verifies them with the public jws codec.
	"internal/audit/chain": {imports: []string{"internal/bus", "internal/model", "internal/secret", "internal/store", "jsonobj", "jws"}, never: notService},

	// Handlers: services and leaves, never a store backend or the wiring.
	//
	// The authorization server is three packages. The protocol endpoints
	// (oauth) parse requests and write responses; the token grants
	// (oauth/grant) decide what a token request yields and import no
	// net/http (the endpoint hands them a parsed request); the sign-in
	// pages (signin) own the browser interaction. The endpoints and the
	// sign-in meet through two small interfaces the wiring connects, so
	// neither imports the other, and the sign-in never reaches the
	// grants. What they share are the leaves below, which depend on no
	// handler and no service.
	// oauth and grant record attributed activity: the Data keys and proof
	// statuses of internal/activity (a leaf over model).
	"internal/oauth": {imports: []string{"dpop", "httpauth", "internal/access", "internal/activity", "internal/bus", "internal/clients", "internal/model", "internal/oauth/authz", "internal/oauth/browser", "internal/oauth/grant", "internal/oauth/oautherr", "internal/oauth/origin", "internal/ratelimit", "internal/secret", "internal/store", "internal/tokens", "internal/web", "rs"},
		never: join(notHandler, []string{"internal/signin"})},
	"internal/oauth/grant": {imports: []string{"dpop", "internal/access", "internal/activity", "internal/bus", "internal/model", "internal/oauth/authz", "internal/oauth/explain", "internal/oauth/oautherr", "internal/oauth/origin", "internal/oauth/protection", "internal/policy", "internal/secret", "internal/store", "internal/tokens"},
		never: join(notHandler, []string{"internal/oauth", "internal/signin", "internal/web"}), noStdImports: []string{"net/http"}},
	// The sign-in gives its risk assessor the activity of the attempt.
	"internal/signin": {imports: []string{"internal/access", "internal/activity", "internal/bus", "internal/identity", "internal/model", "internal/oauth/authz", "internal/oauth/browser", "internal/oauth/explain", "internal/oauth/oautherr", "internal/oauth/origin", "internal/oauth/protection", "internal/policy", "internal/ratelimit", "internal/secret", "internal/store", "internal/web", "jsonobj", "jws"},
		never: join(notHandler, []string{"internal/oauth", "internal/oauth/grant"})},
	// The authorization server's leaves: the protocol error; the values of
	// an authorization (request, claims parameter, acr, user codes); the
	// browser's cookies and sealed state; the request origin; token
	// protection; the wording of unmet Conditional Access controls.
	"internal/oauth/oautherr":   {never: anything, modules: stdOnly},
	"internal/oauth/authz":      {imports: []string{"internal/model", "internal/oauth/oautherr"}, never: notService, modules: stdOnly},
	"internal/oauth/browser":    {imports: []string{"internal/secret"}, never: notService, modules: stdOnly},
	"internal/oauth/origin":     {imports: []string{"internal/bus", "internal/model", "internal/secret", "rs"}, never: notService},
	"internal/oauth/protection": {imports: []string{"internal/model"}, never: notService, modules: stdOnly},
	"internal/oauth/explain":    {imports: []string{"internal/policy"}, never: notService},

	"internal/deviceapi": {imports: []string{"dpop", "httpauth", "internal/device", "internal/model", "internal/oauth"}, never: notHandler},
	// The SSF HTTP layer authenticates receivers through oauth.
	"internal/ssf": {imports: []string{"dpop", "httpauth", "internal/cae", "internal/model", "internal/oauth", "internal/textclean"}, never: notHandler},

	// POST /usage: resource servers' token-use reports (the rs wire
	// format), authenticated by the provider, recorded as token.used
	// events through the bus.
	"internal/usage": {imports: []string{"dpop", "httpauth", "internal/activity", "internal/bus", "internal/model", "internal/oauth", "rs"}, never: notHandler},

	// The admin API is a handler like the others: it reaches the services
	// (and the audit record) through interfaces of its own, never the
	// store or the application.
	"internal/admin": {imports: []string{"dpop", "httpauth", "internal/access", "internal/audit", "internal/bus", "internal/clients", "internal/clientspec", "internal/device",
		"internal/graph", "internal/identity", "internal/incident", "internal/model", "internal/oauth", "internal/policy", "internal/risk", "internal/secret", "internal/session", "internal/textclean", "internal/tokens", "rs"}, never: notHandler},

	// The web console is a handler like the admin API: services through
	// interfaces of its own, the audit record's reader (the store's
	// interface, never a backend), Ward's resource check of its tokens.
	"internal/console": {imports: []string{"internal/access", "internal/audit", "internal/audit/chain", "internal/bus", "internal/clients", "internal/device", "internal/graph", "internal/identity", "internal/incident", "internal/mitre", "internal/model",
		"internal/oauth", "internal/oauth/authz", "internal/policy", "internal/risk", "internal/secret", "internal/session", "internal/store", "internal/textclean"}, never: notHandler},

	// Configuration is read by the wiring; it knows client descriptions
	// and roles, never a service.
	// It turns risk_detection into the detectors' configuration.
	"internal/config": {imports: []string{"internal/clientspec", "internal/model", "internal/risk/detect", "internal/secret"}, never: join(notService, handlers)},
	// The gateway is a resource server like any other: the public
	// packages and the TLS loader, nothing of Ward's server.
	"internal/gateway": {imports: []string{"dpop", "internal/metrics", "internal/tlsutil", "jws", "rs", "rs/caenats"}, never: serverSide,
		modules: join([]string{goJose, "go.yaml.in/yaml/v3"}, natsClient)},

	// Wiring: may use everything but test helpers; the application never
	// depends on the HTTP layer above it.
	// app: the sign-in risk hook takes the attempt's activity record.
	"internal/app": {imports: []string{"internal/access", "internal/activity", "internal/audit", "internal/audit/chain", "internal/audit/export", "internal/audit/ocsf", "internal/bus", "internal/cae", "internal/clients", "internal/clientspec", "internal/config", "internal/device", "internal/geo", "internal/graph", "internal/metrics",
		"internal/identity", "internal/incident", "internal/model", "internal/policy", "internal/risk", "internal/risk/assess", "internal/risk/detect", "internal/risk/online", "internal/secret", "internal/session", "internal/ssfrx", "internal/store", "internal/store/postgres",
		"internal/store/sqlite", "internal/tokens", "internal/tpmattest"}, never: join([]string{"internal/server", "cmd/..."}, testOnly, handlers)},
	"internal/server": {imports: []string{"dpop", "internal/admin", "internal/app", "internal/audit/chain", "internal/console", "internal/deviceapi", "internal/metrics", "internal/model", "internal/oauth", "internal/signin", "internal/ssf", "internal/ssfrx", "internal/store", "internal/usage", "internal/web"}, never: join([]string{"cmd/..."}, testOnly)},
	// cmd/ward: `ward logs export` writes activity lines.
	"cmd/ward": {imports: []string{"agent", "agent/keystore", "agent/posture", "internal/access", "internal/activity", "internal/app", "internal/audit/chain", "internal/bus", "internal/clientspec", "internal/config", "internal/geo", "internal/graph",
		"internal/device", "internal/gateway", "internal/identity", "internal/incident", "internal/model", "internal/policy", "internal/risk", "internal/risk/backtest", "internal/risk/detect", "internal/secret",
		"internal/server", "internal/store", "internal/store/sqlite", "internal/tlsutil", "internal/tokens", "internal/demo"}, never: testOnly},
	// ward demo: wiring of its own (an embedded Ward, the gateway), played
	// only through public interfaces: the agent, DPoP, rs, HTTP.
	"internal/demo": {imports: []string{"agent", "agent/keystore", "dpop", "internal/app", "internal/config", "internal/gateway", "internal/secret", "internal/server", "rs"},
		never: join([]string{"cmd/..."}, testOnly)},
	// The load generator is a client: DPoP and nothing of the server.
	"cmd/ward-load": {imports: []string{"dpop", "internal/loadgen"}, never: serverSide, modules: []string{goJose}},
	// Its HTTP client side, shared with the scale-out test: the same.
	"internal/loadgen": {imports: []string{"dpop"}, never: serverSide, modules: []string{goJose}},

	// Public packages (the SDK): the standard library, each other and
	// exactly the modules listed, never anything internal to Ward (so that
	// they can move to a module of their own), and their tests import
	// nothing internal either (see pending for the end-to-end tests that
	// still start a whole Ward).
	//
	// The leaves every other public package builds on: the strict JSON
	// object reader, the strict compact-JWS codec (the one verifier of
	// ES256 and the other algorithms: tokens, SETs, DPoP, DBSC, posture
	// reports), and the one WWW-Authenticate parser and writer.
	"jsonobj":  {never: anything, modules: stdOnly, testsNever: public},
	"jws":      {imports: []string{"jsonobj"}, never: public, modules: stdOnly, testsNever: public},
	"httpauth": {never: anything, modules: stdOnly, testsNever: public},
	// The posture report's wire format: the agent signs it, the device
	// service verifies it; neither depends on the other.
	"posture": {imports: []string{"jsonobj", "jws"}, never: public, modules: stdOnly, testsNever: public},
	"dpop":    {imports: []string{"httpauth", "jsonobj", "jws"}, never: public, modules: []string{goJose}, testsNever: public},
	// rs has no NATS client; its sub-package caenats does.
	"rs":         {imports: []string{"dpop", "httpauth", "jsonobj", "jws"}, never: public, modules: []string{goJose}, testsNever: public},
	"rs/caenats": {imports: []string{"rs"}, never: public, modules: join([]string{goJose}, natsClient), testsNever: wiring},
	"agent": {imports: []string{"agent/internal/cae", "agent/keystore", "agent/posture", "dpop", "httpauth"}, never: public,
		modules: []string{goJose, goTPM, xCrypt, xOAuth, xSys}, testsNever: wiring},
	"agent/internal/cae": {imports: []string{"rs"}, never: public, modules: []string{goJose}, testsNever: public},
	"agent/keystore":     {never: anything, modules: []string{goTPM, xCrypt, xSys}, testsNever: public},
	// Runs a software TPM (swtpm) for the tests of the TPM key store and
	// of key attestation, on both sides.
	"agent/keystore/swtpmtest": {never: anything, modules: stdOnly, testsNever: public},
	"agent/oauth2x": {imports: []string{"agent/internal/cae", "dpop"}, never: public, modules: []string{goJose, xOAuth},
		testsNever: wiring},
	// The agent's posture collectors (the wire format is package posture).
	"agent/posture": {imports: []string{"posture"}, never: public, modules: stdOnly, testsNever: public},

	// Test helpers and test-only packages. wardtest starts a whole Ward;
	// the conformance suite runs against every backend, so it depends on
	// none.
	"internal/wardtest": {imports: []string{"dpop", "internal/app", "internal/clock", "internal/config", "internal/geo/geotest", "internal/loadgen", "internal/secret", "internal/server"}, never: []string{"cmd/..."}},
	// The bus conformance suite: every bus (in-process, embedded NATS,
	// external NATS) passes it, over a real SQLite outbox.
	"internal/bus/bustest": {imports: []string{"internal/audit", "internal/bus", "internal/model", "internal/store", "internal/store/sqlite"}, never: notWiring},
	// The upgrade check both backends run (data of an older schema read
	// back after the migrations).
	"internal/store/internal/upgradetest": {imports: []string{"internal/store"}, never: join(wiring, storeImpls), modules: stdOnly},
	"internal/store/storetest":            {imports: []string{"internal/clock", "internal/model", "internal/store"}, never: join(wiring, storeImpls), modules: stdOnly},
	"internal/archtest":                   {never: anything, modules: stdOnly},
	// A software WebAuthn authenticator (real keys, CBOR and signatures)
	// for the passkey tests.
	"internal/identity/webauthntest": {never: anything, modules: stdOnly},
	// The databases of tests outside the store: both backends, a fresh
	// database or schema each.
	"internal/store/backendtest": {imports: []string{"internal/model", "internal/store", "internal/store/postgres", "internal/store/sqlite"}, never: notWiring},
	// The OCSF schema validator of the exporters' tests.
	"internal/audit/ocsf/ocsftest": {never: anything, modules: stdOnly},
	"test/crash":                   {never: anything, modules: stdOnly},
	// The check of the container image and Kubernetes manifests: it
	// validates their Ward configuration with Ward's own rules.
	"deploy": {never: anything, modules: stdOnly, testsNever: []string{"cmd/...", "internal/app", "internal/server"}},
	// The scale-out test: child processes, a proxy, PostgreSQL directly
	// for the invariants, DPoP proofs of its own.
	// Its clients are the load generator's (internal/loadgen, a client of
	// Ward's HTTP interface only).
	"test/cluster": {never: anything, modules: stdOnly, testsNever: []string{"internal/...", "cmd/..."}, testsMay: []string{"internal/loadgen"}},
	"test/interop": {never: anything, modules: stdOnly},
	"test/browser": {never: anything, modules: stdOnly},
}

// pending: stricter rules Ward is moving to, not met yet. Each field set
// replaces that of the package's rule; known is exactly what breaks it
// today. The test fails on a new violation, and on a known one that is
// gone (remove it from known; once none is left, the rule is met: move it
// into rules and delete the entry).
var pending = map[string]pendingRule{
	// ... and neither do their tests: these start a whole Ward through
	// wardtest.
	"agent": {rule: rule{never: []string{"internal/..."}, testsNever: []string{"internal/..."}},
		known: []string{"internal/access", "internal/config", "internal/device", "internal/model", "internal/policy", "internal/store", "internal/wardtest"}},
	"agent/oauth2x": {rule: rule{never: []string{"internal/..."}, testsNever: []string{"internal/..."}},
		known: []string{"internal/config", "internal/model", "internal/secret", "internal/wardtest"}},
	"rs/caenats": {rule: rule{never: []string{"internal/..."}, testsNever: []string{"internal/..."}},
		known: []string{"internal/bus", "internal/config", "internal/model", "internal/wardtest"}},
}

func join(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// The module's graph, listed once per test binary.
var (
	graphOnce sync.Once
	theGraph  *graph
	graphErr  error
)

func moduleGraph(t *testing.T) *graph {
	t.Helper()
	graphOnce.Do(func() {
		root, err := filepath.Abs(filepath.Join("..", ".."))
		if err != nil {
			graphErr = err
			return
		}
		// The rules describe the Linux build, the one Ward ships; naming
		// it keeps the answer the same on every machine.
		theGraph, graphErr = loadGraph(root, module, "GOOS=linux", "GOARCH=amd64")
	})
	if graphErr != nil {
		t.Fatal(graphErr)
	}
	if len(theGraph.ward()) < 30 {
		t.Fatalf("only %d Ward packages listed: the test is not looking at the module", len(theGraph.ward()))
	}
	return theGraph
}

func TestRules(t *testing.T) {
	for _, p := range check(moduleGraph(t), rules) {
		t.Error(p.msg)
	}
}

func TestPendingRules(t *testing.T) {
	for _, msg := range checkPending(moduleGraph(t), rules, pending) {
		t.Error(msg)
	}
}

func TestPackageDocs(t *testing.T) {
	for _, msg := range checkDocs(moduleGraph(t)) {
		t.Error(msg)
	}
}
