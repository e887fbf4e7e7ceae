package cluster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ward-idp/ward/dpop"
)

const (
	natsServer = "/usr/sbin/nats-server"
	testKEK    = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	svcSecret  = "cluster-service-secret-0123456789-abcdefgh"
	webSecret  = "cluster-web-secret-0123456789-abcdefghijkl"
	userPass   = "cluster-user-password-0123"
	appSecret  = "cluster-app-secret-0123456789-abcdefghijkl"
	rxSecret   = "cluster-receiver-secret-0123456789-abcdefgh"
	gwAudience = "https://docs.cluster.example"
)

// natsServerPath is the nats-server the cluster runs (buildBinaries may
// replace the distribution's with the version Ward embeds).
var natsServerPath = natsServer

// plan is what a run does: the reduced run in CI, the full one with
// WARD_CLUSTER_FULL=1.
type plan struct {
	load        time.Duration
	concurrency int
	gwWorkers   int // gateway clients (one user each)
	faults      []fault
}

// fault is one injected failure: at is its start (from the load's start),
// downed how long the component stays down (or stopped).
type fault struct {
	at     time.Duration
	what   string // see the faultXxx constants
	index  int
	downed time.Duration
}

const (
	faultReplica    = "replica"     // SIGKILL of a ward serve replica, restarted after downed
	faultStall      = "stall"       // SIGSTOP of a replica, SIGCONT after downed
	faultNATS       = "nats"        // SIGKILL of a NATS node that is not the JetStream meta leader
	faultNATSLeader = "nats-leader" // SIGKILL of the JetStream meta leader
	faultGateway    = "gateway"     // SIGKILL of a ward gateway, restarted after downed
	faultPostgres   = "postgres"    // immediate stop of PostgreSQL (crash recovery at start)
)

func (f fault) String() string {
	switch f.what {
	case faultNATS, faultNATSLeader, faultPostgres:
		return f.what
	}
	return fmt.Sprintf("%s %d", f.what, f.index)
}

func runPlan() plan {
	if os.Getenv("WARD_CLUSTER_FULL") != "" {
		return plan{load: 130 * time.Second, concurrency: 8, gwWorkers: 6, faults: []fault{
			{8 * time.Second, faultReplica, 1, 5 * time.Second},
			{22 * time.Second, faultNATS, 0, 5 * time.Second},
			{36 * time.Second, faultGateway, 1, 4 * time.Second},
			{48 * time.Second, faultStall, 2, 6 * time.Second},
			{64 * time.Second, faultNATSLeader, 0, 5 * time.Second},
			{78 * time.Second, faultPostgres, 0, 3 * time.Second},
			{94 * time.Second, faultReplica, 0, 5 * time.Second},
			{108 * time.Second, faultGateway, 0, 4 * time.Second},
		}}
	}
	return plan{load: 32 * time.Second, concurrency: 4, gwWorkers: 4, faults: []fault{
		{4 * time.Second, faultReplica, 1, 3 * time.Second},
		{11 * time.Second, faultNATSLeader, 0, 3 * time.Second},
		{17 * time.Second, faultGateway, 1, 2 * time.Second},
		{22 * time.Second, faultPostgres, 0, 2 * time.Second},
	}}
}

func TestCluster(t *testing.T) {
	if _, err := os.Stat(natsServer); err != nil {
		t.Skipf("%s is missing; the cluster test needs nats-server (Debian package nats-server)", natsServer)
	}
	p := runPlan()
	dir := t.TempDir()

	// PostgreSQL: an instance of the test's own (initdb, pg_ctl) so that
	// it can be restarted without disturbing anything else on the
	// machine; the shared one of WARD_TEST_POSTGRES_DSN otherwise, and
	// then without the PostgreSQL fault.
	pg := startOwnPostgres(t)
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if pg != nil {
		dsn = pg.dsn()
	} else if dsn == "" {
		t.Skip("no PostgreSQL: neither initdb/pg_ctl under /usr/lib/postgresql nor WARD_TEST_POSTGRES_DSN")
	}
	testStart := time.Now()
	phase := func(what string) { t.Logf("%6.1fs %s", time.Since(testStart).Seconds(), what) }
	bins := buildBinaries(t, dir)
	phase("binaries built")
	db := freshDatabase(t, dsn)
	keepLogs(t, dir)

	// NATS JetStream cluster.
	nc := startNATSCluster(t, filepath.Join(dir, "nats"))

	// Ward replicas: the same port on three loopback addresses, so the
	// issuer (the proxy on 127.0.0.1) names the same port.
	port := freePort(t)
	issuer := fmt.Sprintf("http://127.0.0.1:%d", port)
	cfgFile := filepath.Join(dir, "ward.yaml")
	writeConfig(t, cfgFile, dir, issuer, nc.clientURLs())
	env := append(childEnv(), "WARD_KEK="+testKEK, "WARD_STORAGE__POSTGRES__DSN="+db.dsn)
	var reps []*replica
	for i := range 3 {
		reps = append(reps, &replica{t: t, bin: bins.ward, cfg: cfgFile, env: env,
			addr: fmt.Sprintf("127.0.0.%d:%d", 11+i, port), log: filepath.Join(dir, fmt.Sprintf("ward-%d.log", i))})
	}
	reps[0].start() // migrates the schema
	reps[0].waitHealthy(60 * time.Second)
	reps[1].start()
	reps[2].start()
	reps[1].waitHealthy(60 * time.Second)
	reps[2].waitHealthy(60 * time.Second)
	t.Cleanup(func() {
		for _, r := range reps {
			r.kill()
		}
	})

	px := startProxy(t, fmt.Sprintf("127.0.0.1:%d", port), reps)
	phase("NATS cluster and replicas serving")

	// The gateways in front of a small upstream, following the CAE
	// stream in the NATS cluster; the SSF receivers (push and poll).
	gws := startGateways(t, bins.ward, dir, issuer, nc.clientURLs())
	rx := startReceivers(t, issuer, db)
	phase("gateways ready, SSF streams created; the load starts")

	// The mixed load: DPoP client credentials and sign-in + refresh
	// chains (ward-load), gateway requests with DPoP-bound tokens (the
	// test's clients), admin changes (users added, sessions revoked)
	// through the command line.
	ctx, cancel := context.WithTimeout(context.Background(), p.load+2*time.Minute)
	defer cancel()
	var loads sync.WaitGroup
	reports := make([]loadReport, 2)
	for i, grant := range []string{"client_credentials", "refresh"} {
		loads.Add(1)
		go func() {
			defer loads.Done()
			reports[i] = runLoad(ctx, t, bins.load, issuer, grant, p)
		}()
	}
	start := time.Now()
	gl := startGatewayLoad(ctx, issuer, gws, p.gwWorkers, start.Add(p.load))
	adm := &admin{t: t, bin: bins.ward, cfg: cfgFile, env: env, gwUsers: p.gwWorkers}
	var admWG sync.WaitGroup
	admWG.Add(1)
	go func() {
		defer admWG.Done()
		adm.loop(ctx, start.Add(p.load))
	}()

	// Faults.
	var done []fault
	for _, f := range p.faults {
		time.Sleep(time.Until(start.Add(f.at)))
		at := func() string {
			return fmt.Sprintf("%5.1fs (%s)", time.Since(start).Seconds(), time.Now().Format("15:04:05.0"))
		}
		switch f.what {
		case faultReplica:
			t.Logf("%s kill -9 replica %d", at(), f.index)
			reps[f.index].kill()
			time.Sleep(f.downed)
			reps[f.index].start()
			reps[f.index].waitHealthy(60 * time.Second)
			t.Logf("%s replica %d serving again", at(), f.index)
		case faultStall:
			t.Logf("%s SIGSTOP replica %d", at(), f.index)
			reps[f.index].signal(syscall.SIGSTOP)
			time.Sleep(f.downed)
			reps[f.index].signal(syscall.SIGCONT)
			t.Logf("%s SIGCONT replica %d", at(), f.index)
		case faultNATS, faultNATSLeader:
			leader := nc.metaLeader()
			n := nc.nonLeader(leader, f.index)
			if f.what == faultNATSLeader {
				n = leader
			}
			if n < 0 {
				t.Errorf("%s no JetStream meta leader known: the NATS fault is skipped", at())
				continue
			}
			t.Logf("%s kill -9 NATS node %s (meta leader: %s)", at(), nc.nodes[n].name, nc.leaderName())
			nc.nodes[n].kill()
			time.Sleep(f.downed)
			nc.nodes[n].start(t)
			t.Logf("%s NATS node %s restarted; meta leader now %s", at(), nc.nodes[n].name, nc.leaderName())
		case faultGateway:
			t.Logf("%s kill -9 gateway %d", at(), f.index)
			gws[f.index].kill()
			time.Sleep(f.downed)
			gws[f.index].start()
			gws[f.index].waitReady(60 * time.Second)
			t.Logf("%s gateway %d ready again (CAE stream replayed)", at(), f.index)
		case faultPostgres:
			if pg == nil {
				t.Logf("%s PostgreSQL restart SKIPPED: the test does not own its PostgreSQL (no initdb/pg_ctl under /usr/lib/postgresql)", at())
				continue
			}
			t.Logf("%s PostgreSQL stopped (immediate: no checkpoint)", at())
			pg.stopImmediate(t)
			time.Sleep(f.downed)
			pg.start(t)
			t.Logf("%s PostgreSQL started (crash recovery)", at())
			for _, r := range reps {
				r.waitHealthy(60 * time.Second)
			}
			t.Logf("%s every replica healthy again", at())
		}
		done = append(done, f)
	}
	loads.Wait()
	admWG.Wait()
	t.Logf("JetStream consumers' backlog at the end of the load: %s", nc.consumerBacklog())
	db.reconnect(t)
	t.Logf("relay backlog at the end of the load: %s", relayBacklog(t, db, nc))
	gl.wait()
	phase("load done")

	// Invariants.
	db.reconnect(t)
	checkDPoPReplayAcrossReplicas(t, issuer, reps)
	totp := checkTOTPReplayAcrossReplicas(t, adm, issuer, reps)
	lock := checkLockoutAcrossReplicas(t, issuer, reps, db)
	gwInv := checkGatewaysConverged(t, db, gws, gl, adm)
	ssfInv := rx.check(t, db)
	time.Sleep(3 * time.Second) // the sealer's round (audit.seal_interval 1s)
	inv := checkInvariants(t, db, adm)
	verify := adm.verifyLog()
	phase("invariants checked")

	var total, errs int
	t.Logf("load %v, concurrency %d per grant, %d gateway clients, %d faults", p.load, p.concurrency, p.gwWorkers, len(done))
	for i, r := range reports {
		grant := []string{"client_credentials", "refresh"}[i]
		n := 0
		for _, c := range r.Errors {
			n += c
		}
		total += r.OK
		errs += n
		t.Logf("%-18s ok %6d (%.0f/s)  errors %d %v  broken chains %d", grant, r.OK, r.TokensPerSec, n, r.Errors, r.BrokenChains)
		if r.OK == 0 {
			t.Errorf("%s: no successful request", grant)
		}
	}
	t.Logf("gateway clients: %s", gl.summary())
	lags, unseen, slow := caeLag(adm, gl, start.Add(p.load))
	// Reported, not failed on: every revocation must be enforced by the
	// end (checkGatewaysConverged), the delay is what the load allows.
	t.Logf("CAE delay at the gateways (revocation command returned → the client's next request refused): %s; %d revocations made 10 s or more before the load ended not yet enforced when it ended",
		durations(lags), unseen)
	if len(slow) > 0 {
		t.Logf("CAE delays over 3 s (load started %s): %s", start.Format("15:04:05.0"), strings.Join(slow, "; "))
	}
	if gl.ok.Load() == 0 {
		t.Errorf("gateway clients: no successful request")
	}
	t.Logf("proxy: %d requests, %d failed (%d answered 502: a replica died under them)", px.requests.Load(), px.errs.count(), px.failed.Load())
	t.Logf("admin: %d users added (%d failed), %d sessions revoked (%d failed), %d gateway users' revocations (%d failed)",
		len(adm.users), adm.userFail, len(adm.revoked), adm.revokeFail, len(adm.gwRevoked), adm.gwRevokeFail)
	t.Logf("invariants: %s", inv)
	t.Logf("gateways: %s", gwInv)
	t.Logf("SSF receivers: %s", ssfInv)
	t.Logf("TOTP: %s", totp)
	t.Logf("lockout: %s", lock)
	t.Logf("ward logs verify: %s", verify)
	t.Logf("client-visible errors: %d of %d token requests (%.2f%%)", errs, total+errs, 100*float64(errs)/float64(max(1, total+errs)))
	reportFaultErrors(t, start, p, done, px.errs, gl.errs)
}

// --- binaries, database ---------------------------------------------------

type binaries struct{ ward, load string }

func buildBinaries(t *testing.T, dir string) binaries {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH (the test builds ./cmd/ward)")
	}
	out, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	b := binaries{ward: filepath.Join(dir, "ward"), load: filepath.Join(dir, "ward-load")}
	for bin, pkg := range map[string]string{b.ward: "./cmd/ward", b.load: "./cmd/ward-load"} {
		cmd := exec.Command(goBin, "build", "-o", bin, pkg)
		cmd.Dir = root
		if o, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, o)
		}
	}
	// nats-server: the version Ward embeds (go.mod), built from the module
	// cache, unless WARD_CLUSTER_NATS names a binary (for example the
	// distribution's /usr/sbin/nats-server); the distribution's when the
	// build fails (offline without the module).
	if p := os.Getenv("WARD_CLUSTER_NATS"); p != "" {
		natsServerPath = p
	} else {
		bin := filepath.Join(dir, "nats-server")
		cmd := exec.Command(goBin, "build", "-o", bin, "github.com/nats-io/nats-server/v2")
		cmd.Dir = root
		if o, err := cmd.CombinedOutput(); err != nil {
			t.Logf("go build nats-server failed, using %s: %v\n%s", natsServer, err, tail(o, 500))
		} else {
			natsServerPath = bin
		}
	}
	if v, err := exec.Command(natsServerPath, "--version").Output(); err == nil {
		t.Logf("NATS: %s (%s)", strings.TrimSpace(string(v)), natsServerPath)
	}
	return b
}

type database struct {
	dsn  string
	conn *pgx.Conn
}

func freshDatabase(t *testing.T, admin string) *database {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("WARD_TEST_POSTGRES_DSN is set but unreachable: %v", err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	name := "ward_cluster_" + hex.EncodeToString(b)
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	db := &database{dsn: u.String()}
	db.conn, err = pgx.Connect(ctx, db.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		db.conn.Close(ctx)
		conn.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`)
		conn.Close(ctx)
	})
	return db
}

// reconnect replaces the test's connection (PostgreSQL may have been
// restarted under it).
func (db *database) reconnect(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	db.conn.Close(ctx)
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if db.conn, err = pgx.Connect(ctx, db.dsn); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("reconnect to PostgreSQL: %v", err)
		}
	}
}

// --- NATS cluster -----------------------------------------------------------

type natsNode struct {
	name, conf  string
	client, mon int
	cmd         *exec.Cmd
	log         string
}

type natsCluster struct{ nodes []*natsNode }

func (c *natsCluster) clientURLs() string {
	var u []string
	for _, n := range c.nodes {
		u = append(u, fmt.Sprintf("nats://127.0.0.1:%d", n.client))
	}
	return strings.Join(u, ",")
}

func startNATSCluster(t *testing.T, dir string) *natsCluster {
	t.Helper()
	c := &natsCluster{}
	routes := make([]int, 3)
	for i := range 3 {
		routes[i] = freePort(t)
	}
	var rl []string
	for _, r := range routes {
		rl = append(rl, fmt.Sprintf("nats-route://127.0.0.1:%d", r))
	}
	for i := range 3 {
		n := &natsNode{name: fmt.Sprintf("n%d", i), client: freePort(t), mon: freePort(t)}
		store := filepath.Join(dir, n.name)
		os.MkdirAll(store, 0o700)
		n.conf = filepath.Join(dir, n.name+".conf")
		n.log = filepath.Join(dir, n.name+".log")
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream { store_dir: %q }
cluster {
  name: wardtest
  listen: 127.0.0.1:%d
  routes: [%s]
}
`, n.name, n.client, n.mon, store, routes[i], strings.Join(rl, ", "))
		if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		n.start(t)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.kill()
		}
	})
	// JetStream is ready when a meta leader is elected.
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		var jsz struct {
			Meta struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
		}
		if getJSON(fmt.Sprintf("http://127.0.0.1:%d/jsz", c.nodes[0].mon), &jsz) == nil && jsz.Meta.Leader != "" {
			return c
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("the NATS cluster elected no JetStream meta leader")
	return nil
}

// metaLeader returns the index of the JetStream meta leader, as the
// nodes' monitoring endpoints (/jsz) report it, or -1.
func (c *natsCluster) metaLeader() int {
	name := c.leaderName()
	for i, n := range c.nodes {
		if n.name == name {
			return i
		}
	}
	return -1
}

// leaderName asks each node's /jsz for the meta leader's name (the
// first node that answers and knows one).
func (c *natsCluster) leaderName() string {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		for _, n := range c.nodes {
			var jsz struct {
				Meta struct {
					Leader string `json:"leader"`
				} `json:"meta_cluster"`
			}
			if getJSON(fmt.Sprintf("http://127.0.0.1:%d/jsz", n.mon), &jsz) == nil && jsz.Meta.Leader != "" {
				return jsz.Meta.Leader
			}
		}
	}
	return ""
}

// consumerBacklog reports each durable consumer's undelivered messages
// (num_pending) as the nodes' /jsz reports them: a consumer that cannot
// keep up with the event rate shows here.
func (c *natsCluster) consumerBacklog() string {
	var jsz struct {
		Accounts []struct {
			Streams []struct {
				Name      string `json:"name"`
				Consumers []struct {
					Name       string `json:"name"`
					NumPending int64  `json:"num_pending"`
				} `json:"consumer_detail"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	out := map[string]int64{}
	for _, n := range c.nodes {
		if getJSON(fmt.Sprintf("http://127.0.0.1:%d/jsz?accounts=true&consumers=true", n.mon), &jsz) != nil {
			continue
		}
		for _, a := range jsz.Accounts {
			for _, st := range a.Streams {
				for _, co := range st.Consumers {
					k := st.Name + "/" + co.Name
					out[k] = max(out[k], co.NumPending)
				}
			}
		}
	}
	var parts []string
	for k, v := range out {
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// relayBacklog compares the events stored in the database with the
// messages of the event stream (WARD_EVENTS): the difference is what the
// relay has not published yet. The stream is read first: an event stored
// and relayed between the two reads then counts as not relayed yet, never
// as a message too many, so a negative difference would mean a duplicate.
func relayBacklog(t *testing.T, db *database, c *natsCluster) string {
	var jsz struct {
		Accounts []struct {
			Streams []struct {
				Name  string `json:"name"`
				State struct {
					Msgs int64 `json:"messages"`
				} `json:"state"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	var msgs int64 = -1
	for _, n := range c.nodes {
		if getJSON(fmt.Sprintf("http://127.0.0.1:%d/jsz?accounts=true&streams=true", n.mon), &jsz) != nil {
			continue
		}
		for _, a := range jsz.Accounts {
			for _, st := range a.Streams {
				if st.Name == "WARD_EVENTS" {
					msgs = max(msgs, st.State.Msgs)
				}
			}
		}
	}
	var stored int64
	if err := db.conn.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&stored); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d events stored, %d in the event stream (%d not relayed yet)", stored, msgs, stored-msgs)
}

// nonLeader returns the index-th node (modulo) that is not the leader.
func (c *natsCluster) nonLeader(leader, index int) int {
	var others []int
	for i := range c.nodes {
		if i != leader {
			others = append(others, i)
		}
	}
	return others[index%len(others)]
}

func (n *natsNode) start(t *testing.T) {
	f, err := os.OpenFile(n.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	n.cmd = exec.Command(natsServerPath, "-c", n.conf)
	n.cmd.Stdout, n.cmd.Stderr = f, f
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func(cmd *exec.Cmd, f *os.File) { cmd.Wait(); f.Close() }(n.cmd, f)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", n.client)); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("NATS node %s did not start", n.name)
}

func (n *natsNode) kill() {
	if n.cmd != nil && n.cmd.Process != nil {
		n.cmd.Process.Signal(syscall.SIGKILL)
	}
}

// --- Ward replicas ------------------------------------------------------------

func writeConfig(t *testing.T, path, dir, issuer, natsURLs string) {
	t.Helper()
	cfg := fmt.Sprintf(`issuer: %s
data_dir: %s
log: {level: warn, format: json}
trusted_proxies: [127.0.0.1/32]
storage:
  driver: postgres
  postgres: {max_conns: 8}
bus:
  driver: nats
  nats: {url: %q, replicas: 3}
kek: {env: WARD_KEK}
passwords: {argon2_time: 1, argon2_memory_kib: 1024, max_concurrent: 4, max_queue: 32}
lockout: {ip_failures_per_minute: 100000, global_failures_per_minute: 100000}
static_clients:
  - id: cluster-service
    name: Cluster service
    auth_method: client_secret_basic
    secret: %s
    grant_types: [client_credentials]
    scopes: [docs.read]
    dpop_bound_access_tokens: true
  - id: cluster-web
    name: Cluster web
    auth_method: client_secret_basic
    secret: %s
    redirect_uris: [https://app.example/callback]
    grant_types: [authorization_code, refresh_token]
    scopes: [openid, profile, offline_access, docs.read]
    dpop_bound_access_tokens: true
  - id: cluster-app
    name: Cluster app behind the gateways
    auth_method: client_secret_basic
    secret: %s
    redirect_uris: [https://app.example/callback]
    grant_types: [authorization_code, refresh_token]
    scopes: [openid, offline_access]
    audience: [%s]
    dpop_bound_access_tokens: true
    cae_capable: true
  - id: cluster-receiver
    name: Cluster SSF receiver
    auth_method: client_secret_basic
    secret: %s
    grant_types: [client_credentials]
    scopes: [ssf.manage, ssf.poll]
ssf:
  push_allowed_networks: [127.0.0.0/8]
  long_poll_timeout: 5s
  push_min_backoff: 100ms
  push_max_backoff: 2s
  rescan_interval: 1s
static_users:
  - username: loaduser
    email: load@example.com
    display_name: Load User
    password: %s
  - username: totpuser
    password: %s
  - username: lockuser
    password: %s
`, issuer, filepath.Join(dir, "data"), natsURLs, svcSecret, webSecret, appSecret, gwAudience, rxSecret, userPass, userPass, userPass)
	for i := range maxGatewayUsers {
		cfg += fmt.Sprintf("  - username: %s\n    password: %s\n", gwUser(i), userPass)
	}
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

type replica struct {
	t              *testing.T
	bin, cfg, addr string
	log            string
	env            []string
	mu             sync.Mutex
	cmd            *exec.Cmd
}

func (r *replica) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, err := os.OpenFile(r.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		r.t.Fatal(err)
	}
	r.cmd = exec.Command(r.bin, "serve", "--config", r.cfg)
	r.cmd.Env = append(append([]string{}, r.env...), "WARD_LISTEN="+r.addr)
	r.cmd.Stdout, r.cmd.Stderr = f, f
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	go func(cmd *exec.Cmd, f *os.File) { cmd.Wait(); f.Close() }(r.cmd, f)
}

func (r *replica) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Signal(syscall.SIGKILL)
	}
}

// signal sends sig to the running process (SIGSTOP/SIGCONT: a stall).
func (r *replica) signal(sig syscall.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Signal(sig)
	}
}

func (r *replica) healthy() bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + r.addr + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (r *replica) waitHealthy(d time.Duration) {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if r.healthy() {
			return
		}
	}
	b, _ := os.ReadFile(r.log)
	r.t.Fatalf("replica %s is not healthy:\n%s", r.addr, tail(b, 3000))
}

// --- the proxy ----------------------------------------------------------------

type proxy struct {
	reps     []*replica
	healthy  []atomic.Bool
	next     atomic.Uint64
	requests atomic.Int64
	failed   atomic.Int64
	// errs: every request answered 5xx or not at all (the client went
	// away, for example after its timeout during a stall), with its time.
	errs *errLog
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush keeps long polls and streamed answers working through the proxy.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// startProxy serves a round-robin reverse proxy on addr over the healthy
// replicas (checked every 200 ms on /healthz, as a load balancer does).
func startProxy(t *testing.T, addr string, reps []*replica) *proxy {
	t.Helper()
	p := &proxy{reps: reps, healthy: make([]atomic.Bool, len(reps)), errs: &errLog{}}
	stop := make(chan struct{})
	go func() {
		for {
			for i, r := range reps {
				p.healthy[i].Store(r.healthy())
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	for i := range reps {
		p.healthy[i].Store(true)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetXForwarded()
			n := len(p.reps)
			for range n {
				i := int(p.next.Add(1) % uint64(n))
				if p.healthy[i].Load() {
					pr.Out.URL.Scheme, pr.Out.URL.Host = "http", p.reps[i].addr
					break
				}
			}
			pr.Out.Host = pr.In.Host
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.failed.Add(1)
			http.Error(w, "bad gateway", http.StatusBadGateway)
		},
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		sw := &statusWriter{ResponseWriter: w}
		rp.ServeHTTP(sw, r)
		if sw.status >= 500 || sw.status == 0 || r.Context().Err() != nil {
			p.errs.add(fmt.Sprintf("%s %d", r.URL.Path, sw.status))
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { close(stop); srv.Close() })
	return p
}

// --- load and admin ---------------------------------------------------------------

type loadReport struct {
	OK           int            `json:"ok"`
	TokensPerSec float64        `json:"tokens_per_second"`
	Errors       map[string]int `json:"errors"`
	BrokenChains int            `json:"broken_chains"`
}

func runLoad(ctx context.Context, t *testing.T, bin, issuer, grant string, p plan) loadReport {
	args := []string{"-issuer", issuer, "-grant", grant, "-concurrency", fmt.Sprint(p.concurrency),
		"-duration", p.load.String(), "-warmup", "0s", "-json", "-timeout", "5s", "-resign-in"}
	if grant == "refresh" {
		args = append(args, "-client", "cluster-web", "-secret", webSecret, "-username", "loaduser", "-password", userPass)
	} else {
		args = append(args, "-client", "cluster-service", "-secret", svcSecret, "-scope", "docs.read")
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = childEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Errorf("ward-load %s: %v\n%s", grant, err, tail(errb.Bytes(), 2000))
		return loadReport{}
	}
	var r loadReport
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Errorf("ward-load %s output: %v\n%s", grant, err, out.String())
	}
	return r
}

type admin struct {
	t              *testing.T
	bin, cfg       string
	env            []string
	users, revoked []string
	revokedAt      map[string]time.Time
	userFail       int
	revokeFail     int
	// The gateway clients' users (gwUser(0..gwUsers-1)): their sessions
	// revoked one at a time or all at once ("user:NAME").
	gwUsers       int
	gwRevoked     []string
	gwRevocations []gwRevocation
	gwRevokeFail  int
}

// gwRevocation is one revocation of a gateway client's session(s): the
// session id or "user:NAME", when the command started and returned.
type gwRevocation struct {
	target    string
	begun, at time.Time
}

func (a *admin) ward(stdin string, args ...string) (string, error) {
	cmd := exec.Command(a.bin, append([]string{"--config", a.cfg}, args...)...)
	cmd.Env = a.env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%v: %s", err, errb.String())
	}
	return out.String(), nil
}

// revokeEvery: one of loaduser's active sessions is revoked every this
// many rounds (its refresh worker then sees invalid_grant for good).
const revokeEvery = 12

// loop adds a user about every 700 ms until end and now and then revokes
// one of loaduser's active sessions.
func (a *admin) loop(ctx context.Context, end time.Time) {
	a.revokedAt = map[string]time.Time{}
	for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
		name := fmt.Sprintf("cluster-user-%03d", i)
		if _, err := a.ward("correct horse battery staple\n", "user", "add", name, "--password-stdin"); err != nil {
			a.userFail++
		} else {
			a.users = append(a.users, name)
		}
		if i%revokeEvery == revokeEvery-1 {
			out, err := a.ward("", "session", "list", "--user", "loaduser", "--active", "--limit", "5")
			if err == nil {
				for _, line := range strings.Split(out, "\n") {
					f := strings.Fields(line)
					if len(f) > 1 && f[1] == "loaduser" && f[0] != "ID" {
						if _, err := a.ward("", "session", "revoke", f[0]); err != nil {
							a.revokeFail++
						} else {
							a.revoked = append(a.revoked, f[0])
						}
						break
					}
				}
			}
		}
		if a.gwUsers > 0 && i%3 == 1 {
			a.revokeGatewayUser(i/3%a.gwUsers, i/3/a.gwUsers%2 == 1)
		}
		time.Sleep(700 * time.Millisecond)
	}
}

// revokeGatewayUser revokes one active session of a gateway client's
// user, or with all every session of the user (a user-level CAE event).
func (a *admin) revokeGatewayUser(k int, all bool) {
	name := gwUser(k)
	if all {
		begun := time.Now()
		if _, err := a.ward("", "user", "revoke-sessions", name); err != nil {
			a.gwRevokeFail++
		} else {
			a.gwRevoked = append(a.gwRevoked, "user:"+name)
			a.gwRevocations = append(a.gwRevocations, gwRevocation{"user:" + name, begun, time.Now()})
		}
		return
	}
	out, err := a.ward("", "session", "list", "--user", name, "--active", "--limit", "5")
	if err != nil {
		a.gwRevokeFail++
		return
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && f[1] == name && f[0] != "ID" {
			begun := time.Now()
			if _, err := a.ward("", "session", "revoke", f[0]); err != nil {
				a.gwRevokeFail++
			} else {
				a.gwRevoked = append(a.gwRevoked, f[0])
				a.gwRevocations = append(a.gwRevocations, gwRevocation{f[0], begun, time.Now()})
			}
			return
		}
	}
}

func (a *admin) verifyLog() string {
	out, err := a.ward("", "logs", "verify", "--json")
	var rep struct {
		OK      bool  `json:"ok"`
		Records int64 `json:"records"`
	}
	if jerr := json.Unmarshal([]byte(out), &rep); err != nil || jerr != nil || !rep.OK || rep.Records == 0 {
		a.t.Errorf("ward logs verify: %v %v\n%s", err, jerr, out)
	}
	return fmt.Sprintf("ok=%v, %d records", rep.OK, rep.Records)
}

// --- invariants -------------------------------------------------------------------

// checkDPoPReplayAcrossReplicas sends one DPoP proof to one replica and
// then, replayed, to the others: only the first is accepted.
func checkDPoPReplayAcrossReplicas(t *testing.T, issuer string, reps []*replica) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	s, err := dpop.NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	proof, err := s.Proof(http.MethodPost, issuer+"/token", "", "")
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(issuer, "http://")
	for i, r := range reps {
		req, _ := http.NewRequest(http.MethodPost, "http://"+r.addr+"/token", strings.NewReader("grant_type=client_credentials&scope=docs.read"))
		req.Host = host
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("DPoP", proof)
		req.SetBasicAuth("cluster-service", svcSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if i == 0 && resp.StatusCode != http.StatusOK {
			t.Errorf("fresh proof at replica 0: %d %s", resp.StatusCode, body)
		}
		if i > 0 && (resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "invalid_dpop_proof")) {
			t.Errorf("proof replayed at replica %d: %d %s (want 400 invalid_dpop_proof)", i, resp.StatusCode, body)
		}
	}
}

func checkInvariants(t *testing.T, db *database, a *admin) string {
	t.Helper()
	ctx := context.Background()
	count := func(q string, args ...any) int64 {
		var n int64
		if err := db.conn.QueryRow(ctx, q, args...).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	// Every admin change that succeeded is there.
	for _, u := range a.users {
		if count(`SELECT count(*) FROM users WHERE username = $1`, u) != 1 {
			t.Errorf("user %s was added but is missing", u)
		}
	}
	// No lost revocation: revoked sessions stay revoked, and no refresh
	// token of theirs was issued after the revocation.
	for _, id := range a.revoked {
		if count(`SELECT count(*) FROM sessions WHERE id = $1 AND revoked_at <> 0`, id) != 1 {
			t.Errorf("session %s was revoked but is not", id)
		}
		if n := count(`SELECT count(*) FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id WHERE s.id = $1 AND r.created_at > s.revoked_at`, id); n != 0 {
			t.Errorf("session %s: %d refresh tokens issued after its revocation", id, n)
		}
	}
	// Each refresh family has at most one live token.
	if n := count(`SELECT count(*) FROM (SELECT session_id FROM refresh_tokens WHERE rotated_at = 0 GROUP BY session_id, client_id HAVING count(*) > 1) x`); n != 0 {
		t.Errorf("%d refresh families with more than one live token", n)
	}
	// Every event once.
	if n := count(`SELECT count(*) FROM (SELECT id FROM events GROUP BY id HAVING count(*) > 1) x`); n != 0 {
		t.Errorf("%d events recorded more than once", n)
	}
	events := count(`SELECT count(*) FROM events`)
	sessions := count(`SELECT count(*) FROM sessions`)
	families := count(`SELECT count(DISTINCT session_id) FROM refresh_tokens`)
	return fmt.Sprintf("%d events (none twice), %d sessions, %d refresh families (none with two live tokens), %d revocations kept, %d admin-added users present",
		events, sessions, families, len(a.revoked), len(a.users))
}

// keepLogs copies the processes' logs to $WARD_CLUSTER_LOGS (if set)
// when the test ends, since dir is removed.
func keepLogs(t *testing.T, dir string) {
	out := os.Getenv("WARD_CLUSTER_LOGS")
	if out == "" {
		return
	}
	t.Cleanup(func() {
		os.MkdirAll(out, 0o700)
		logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		nats, _ := filepath.Glob(filepath.Join(dir, "nats", "*.log"))
		for _, l := range append(logs, nats...) {
			if b, err := os.ReadFile(l); err == nil {
				os.WriteFile(filepath.Join(out, filepath.Base(l)), b, 0o600)
			}
		}
		t.Logf("logs copied to %s", out)
	})
}

// durations summarises delays: count, median, 90th percentile, maximum.
func durations(d []time.Duration) string {
	if len(d) == 0 {
		return "none measured"
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	r := func(x time.Duration) string { return x.Round(10 * time.Millisecond).String() }
	return fmt.Sprintf("%d measured, median %s, p90 %s, max %s", len(s), r(s[len(s)/2]), r(s[len(s)*9/10]), r(s[len(s)-1]))
}

// --- helpers ----------------------------------------------------------------------

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func getJSON(u string, v any) error {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WARD_") {
			env = append(env, kv)
		}
	}
	return env
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
