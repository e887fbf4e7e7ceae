package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestThroughputPerReplicaCount measures the DPoP client-credentials token
// endpoint and requests through ward gateway with 1, 2 and 3 replicas on
// PostgreSQL and a NATS cluster behind the proxy. It reports tokens/s,
// latency percentiles, errors and the CPU seconds each replica used, so
// that figures are comparable per CPU second on a small machine. It is a
// measurement, not a check: run it with WARD_CLUSTER_SCALE=1
// (WARD_CLUSTER_SCALE_SECONDS sets each run's length, default 15).
func TestThroughputPerReplicaCount(t *testing.T) {
	if os.Getenv("WARD_CLUSTER_SCALE") == "" {
		t.Skip("set WARD_CLUSTER_SCALE=1 to measure throughput per replica count")
	}
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("WARD_TEST_POSTGRES_DSN is not set; the scale test needs PostgreSQL")
	}
	if _, err := os.Stat(natsServer); err != nil {
		t.Skipf("%s is missing; the scale test needs nats-server", natsServer)
	}
	dur := 15 * time.Second
	if s := os.Getenv("WARD_CLUSTER_SCALE_SECONDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("WARD_CLUSTER_SCALE_SECONDS=%q", s)
		}
		dur = time.Duration(n) * time.Second
	}
	const concurrency = 8
	dir := t.TempDir()
	bins := buildBinaries(t, dir)
	nc := startNATSCluster(t, filepath.Join(dir, "nats"))
	up := startUpstream(t)

	type row struct {
		n       int
		load    string
		r       scaleReport
		cpu     []float64 // per replica, seconds
		gwCPU   float64
		loadavg string
		busy    float64 // of the machine's CPUs during the run, all processes
		natsCPU float64 // the three NATS nodes, seconds
		pgCPU   float64 // the PostgreSQL backends serving this database, seconds
		// From the replicas' /metrics: tokens issued and events the relays
		// published to NATS (copies included), summed over the replicas.
		issued, relayed float64
	}
	rounds := 1
	if s := os.Getenv("WARD_CLUSTER_SCALE_ROUNDS"); s != "" {
		if rounds, _ = strconv.Atoi(s); rounds < 1 {
			t.Fatalf("WARD_CLUSTER_SCALE_ROUNDS=%q", s)
		}
	}
	var rows []row
	for i := range 3 * rounds {
		n := i%3 + 1
		sub := filepath.Join(dir, fmt.Sprintf("run%d-n%d", i, n))
		os.MkdirAll(sub, 0o700)
		db := freshDatabase(t, dsn)
		port, mport := freePort(t), freePort(t)
		issuer := fmt.Sprintf("http://127.0.0.1:%d", port)
		cfgFile := filepath.Join(sub, "ward.yaml")
		writeScaleConfig(t, cfgFile, sub, issuer, nc.clientURLs())
		env := append(childEnv(), "WARD_KEK="+testKEK, "WARD_STORAGE__POSTGRES__DSN="+db.dsn)
		var reps []*replica
		for i := range n {
			// Each replica serves its metrics on its own loopback address.
			renv := append(append([]string{}, env...), fmt.Sprintf("WARD_METRICS__LISTEN=127.0.0.%d:%d", 11+i, mport))
			reps = append(reps, &replica{t: t, bin: bins.ward, cfg: cfgFile, env: renv,
				addr: fmt.Sprintf("127.0.0.%d:%d", 11+i, port), log: filepath.Join(sub, fmt.Sprintf("ward-%d.log", i))})
		}
		reps[0].start()
		reps[0].waitHealthy(60 * time.Second)
		for _, r := range reps[1:] {
			r.start()
		}
		for _, r := range reps[1:] {
			r.waitHealthy(60 * time.Second)
		}
		startProxy(t, fmt.Sprintf("127.0.0.1:%d", port), reps)
		gw, gwURL := startScaleGateway(t, bins.ward, sub, issuer, up)

		for _, load := range []string{"client_credentials", "gateway"} {
			before := make([]float64, n)
			for i, r := range reps {
				before[i] = procCPU(t, r.cmd.Process.Pid)
			}
			gwBefore := procCPU(t, gw.Process.Pid)
			natsBefore := nc.cpu(t)
			pgBefore := backendCPU(db.dsn)
			m0 := scrapeReplicas(t, reps, mport)
			busy0, total0 := machineCPU(t)
			rep := runScaleLoad(t, bins.load, issuer, load, gwURL+"/docs/hello", dur, concurrency)
			busy1, total1 := machineCPU(t)
			cpu := make([]float64, n)
			for i, r := range reps {
				cpu[i] = procCPU(t, r.cmd.Process.Pid) - before[i]
			}
			la, _ := os.ReadFile("/proc/loadavg")
			m1 := scrapeReplicas(t, reps, mport)
			rows = append(rows, row{n: n, load: load, r: rep, cpu: cpu, gwCPU: procCPU(t, gw.Process.Pid) - gwBefore, natsCPU: nc.cpu(t) - natsBefore, pgCPU: cpuSince(backendCPU(db.dsn), pgBefore),
				issued: m1.issued - m0.issued, relayed: m1.relayed - m0.relayed,
				loadavg: strings.Join(strings.Fields(string(la))[:3], " "), busy: (busy1 - busy0) / (total1 - total0)})
			if rep.OK == 0 {
				t.Errorf("%d replicas, %s: no successful request: %v", n, load, rep.Errors)
			}
		}
		gw.Process.Signal(syscall.SIGKILL)
		for _, r := range reps {
			r.kill()
		}
		time.Sleep(time.Second)
	}

	t.Logf("measured %v per run (+2s warm-up), concurrency %d, %d CPUs, GOMAXPROCS of the replicas unset", dur, concurrency, runtime.NumCPU())
	t.Logf("%-3s %-18s %7s %7s %7s %6s %-16s %7s %8s %6s %6s %5s %s", "N", "load", "ok/s", "p50 ms", "p99 ms", "errors",
		"replica CPU s", "sum", "ok/CPU-s", "gw CPU", "gen", "busy", "loadavg")
	for _, r := range rows {
		var tot float64
		var parts []string
		for _, c := range r.cpu {
			tot += c
			parts = append(parts, fmt.Sprintf("%.1f", c))
		}
		errs := 0
		for _, v := range r.r.Errors {
			errs += v
		}
		perCPU := float64(r.r.OK) / tot
		if r.load == "gateway" {
			perCPU = float64(r.r.OK) / (tot + r.gwCPU)
		}
		t.Logf("%-3d %-18s %7.0f %7.2f %7.2f %6d %-16s %7.1f %8.0f %6.1f %6.2f %4.0f%% %s", r.n, r.load, r.r.TokensPerSec, r.r.P50ms,
			r.r.P99ms, errs, strings.Join(parts, "/"), tot, perCPU, r.gwCPU, r.r.LoadCPUCores, 100*r.busy, r.loadavg)
		if r.load == "gateway" {
			t.Logf("    NATS CPU %.1f s, PostgreSQL backends %.1f s", r.natsCPU, r.pgCPU)
		} else {
			t.Logf("    NATS CPU %.1f s, PostgreSQL backends %.1f s: %.0f tokens per CPU-second of Ward+NATS+PostgreSQL; replicas' metrics: %.0f tokens issued, %.0f relay publishes (%.2f per token)",
				r.natsCPU, r.pgCPU, float64(r.r.OK)/(tot+r.natsCPU+r.pgCPU), r.issued, r.relayed, r.relayed/max(r.issued, 1))
		}
		if errs > 0 {
			t.Logf("         errors: %v", r.r.Errors)
		}
	}
}

type scaleReport struct {
	OK           int            `json:"ok"`
	TokensPerSec float64        `json:"tokens_per_second"`
	P50ms        float64        `json:"p50_ms"`
	P99ms        float64        `json:"p99_ms"`
	Errors       map[string]int `json:"errors"`
	LoadCPUCores float64        `json:"load_cpu_cores"`
}

func runScaleLoad(t *testing.T, bin, issuer, grant, target string, d time.Duration, conc int) scaleReport {
	t.Helper()
	args := []string{"-issuer", issuer, "-grant", grant, "-concurrency", fmt.Sprint(conc), "-duration", d.String(),
		"-warmup", "2s", "-json", "-timeout", "5s", "-client", "scale-service", "-secret", svcSecret, "-scope", "docs.read"}
	if grant == "gateway" {
		args = append(args, "-target", target)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = childEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("ward-load %s: %v\n%s", grant, err, tail(errb.Bytes(), 2000))
	}
	var r scaleReport
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("ward-load %s output: %v\n%s", grant, err, out.String())
	}
	return r
}

// procCPU returns the user + system CPU seconds of a process from
// /proc/<pid>/stat (fields 14 and 15, in clock ticks of 1/100 s).
func procCPU(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return (ut + st) / 100
}

// replicaMetrics are sums over the replicas' /metrics pages.
type replicaMetrics struct{ issued, relayed float64 }

// scrapeReplicas reads every replica's metrics (metrics.listen) and sums
// the series the report needs.
func scrapeReplicas(t *testing.T, reps []*replica, port int) replicaMetrics {
	t.Helper()
	var m replicaMetrics
	c := http.Client{Timeout: 5 * time.Second}
	for i := range reps {
		resp, err := c.Get(fmt.Sprintf("http://127.0.0.%d:%d/metrics", 11+i, port))
		if err != nil {
			t.Fatalf("replica %d metrics: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m.issued += sampleValue(t, b, `ward_token_requests_total{grant_type="client_credentials",result="issued"}`)
		m.relayed += sampleValue(t, b, `ward_bus_relay_published_total`)
	}
	return m
}

// sampleValue returns the value of one sample of a Prometheus text page
// (0 when absent: a counter not yet created). The test reads the page as
// an operator's scraper would, from outside; internal/server's tests
// check the format strictly.
func sampleValue(t *testing.T, page []byte, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(string(page), "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			if err != nil {
				t.Fatalf("%s: %q", series, line)
			}
			return v
		}
	}
	return 0
}

// backendCPU returns the CPU seconds of the PostgreSQL backends connected
// to the database of dsn, by pid: their process title names the database.
func backendCPU(dsn string) map[int]float64 {
	u, err := url.Parse(dsn)
	if err != nil {
		return nil
	}
	name := " " + strings.TrimPrefix(u.Path, "/") + " "
	out := map[int]float64{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.HasPrefix(cmd, []byte("postgres:")) || !bytes.Contains(cmd, []byte(name)) {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		out[pid] = (ut + st) / 100
	}
	return out
}

// cpuSince sums what each process used since before (0 for new ones).
func cpuSince(after, before map[int]float64) float64 {
	var s float64
	for pid, v := range after {
		s += v - before[pid]
	}
	return s
}

// cpu returns the CPU seconds the NATS nodes used so far.
func (c *natsCluster) cpu(t *testing.T) float64 {
	var s float64
	for _, n := range c.nodes {
		s += procCPU(t, n.cmd.Process.Pid)
	}
	return s
}

// machineCPU returns the busy and total jiffies of all CPUs (/proc/stat):
// how much of the machine every process together used.
func machineCPU(t *testing.T) (busy, total float64) {
	t.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, s := range f[1:] {
		v, _ := strconv.ParseFloat(s, 64)
		if i >= 8 { // guest time is already in user
			break
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// startUpstream serves a tiny fixed answer, the app behind the gateway.
func startUpstream(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("hello\n"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// startScaleGateway runs `ward gateway` with one route to upstream, waits
// until it is ready (JWKS fetched from the issuer) and returns it and its URL.
func startScaleGateway(t *testing.T, bin, dir, issuer, upstream string) (*exec.Cmd, string) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := fmt.Sprintf(`listen: %s
issuer: %s
external_url: http://%s
log: {level: warn, format: json}
routes:
  - name: docs
    path_prefix: /docs
    upstream: %s
    audience: https://docs.example
    scopes: [docs.read]
    strip_prefix: true
`, addr, issuer, addr, upstream)
	file := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "gateway.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "gateway", "--config", file)
	cmd.Env = childEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); logf.Close() }()
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGKILL) })
	c := http.Client{Timeout: time.Second}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if resp, err := c.Get("http://" + addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cmd, "http://" + addr
			}
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "gateway.log"))
	t.Fatalf("ward gateway is not ready:\n%s", tail(b, 3000))
	return nil, ""
}

// writeScaleConfig is the replicas' configuration: one DPoP-bound service
// client whose tokens name the gateway's audience.
func writeScaleConfig(t *testing.T, path, dir, issuer, natsURLs string) {
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
static_clients:
  - id: scale-service
    name: Scale service
    auth_method: client_secret_basic
    secret: %s
    grant_types: [client_credentials]
    scopes: [docs.read]
    audience: [https://docs.example]
    dpop_bound_access_tokens: true
`, issuer, filepath.Join(dir, "data"), natsURLs, svcSecret)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}
