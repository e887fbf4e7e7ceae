package gateway

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

const reloadBase = `issuer: {{.Issuer}}
external_url: {{.URL}}
log: {level: debug}
routes:
  - name: docs
    path_prefix: /docs
    upstream: {{.Docs}}
    audience: https://docs.example
    scopes: [docs.read]
`

const reloadExtra = reloadBase + `  - name: extra
    path_prefix: /extra
    upstream: {{.Admin}}
    audience: https://docs.example
    scopes: [docs.write]
`

// Three problems at once: an unknown key, a bad upstream, no audience.
const reloadBroken = reloadBase + `  - name: broken
    path_prefix: /broken
    upstream: ftp://files.example
    scopes: []
    timeout: 5s
`

func TestGatewayReloadOnFileChange(t *testing.T) {
	in := startWard(t)
	docs, admin := newUpstream(t, "docs"), newUpstream(t, "admin")
	g := startGateway(t, reloadBase, map[string]any{"Issuer": in.URL, "Docs": docs.URL, "Admin": admin.URL}, gwOptions{watch: 20 * time.Millisecond})
	s := newSigner(t)
	tok := serviceToken(t, in, s, "")
	getAs := func(path string) response { return g.do(req{path: path, token: tok, signer: s}) }
	metrics := func() string { return get(t, g.URL+PathMetrics).Body }

	if r := getAs("/extra/x"); r.Status != 404 {
		t.Fatalf("before reload: /extra %d", r.Status)
	}
	g.write(reloadExtra)
	waitFor(t, "the new route", func() bool { return getAs("/extra/x").Status == 200 })
	if admin.last(t).Path != "/extra/x" {
		t.Errorf("admin saw %q", admin.last(t).Path)
	}
	if v := metric(t, metrics(), MetricReloads+`{result="success"}`); v != 1 {
		t.Errorf("reload success = %v, want 1", v)
	}

	// A broken file: every problem logged, the running routes stay.
	g.write(reloadBroken)
	waitFor(t, "the failed reload", func() bool { return metric(t, metrics(), MetricReloads+`{result="failure"}`) == 1 })
	if r := getAs("/extra/x"); r.Status != 200 {
		t.Errorf("after a failed reload /extra answers %d: the old table must stay", r.Status)
	}
	if r := getAs("/broken/x"); r.Status != 404 {
		t.Errorf("/broken %d", r.Status)
	}
	logs := g.Logs.String()
	for _, want := range []string{"configuration reload failed", `"problems":3`, "field timeout not found", "routes[1].upstream", "routes[1].audience: required"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q", want)
		}
	}
	// The watcher does not retry the same broken content every tick.
	time.Sleep(100 * time.Millisecond)
	if v := metric(t, metrics(), MetricReloads+`{result="failure"}`); v != 1 {
		t.Errorf("failure count %v after waiting: the same broken file was retried", v)
	}

	// Fixed again; then a SIGHUP-style reload of an unchanged file.
	g.write(reloadBase)
	waitFor(t, "the route removal", func() bool { return getAs("/extra/x").Status == 404 })
	used, proof := g.doProof(req{path: "/docs/once", token: tok, signer: s})
	if used.Status != 200 {
		t.Fatalf("/docs/once: %d", used.Status)
	}
	if err := g.G.Reload("sighup"); err != nil {
		t.Fatal(err)
	}
	// The replay cache outlives the table: a reload is no way to reuse a proof.
	if r := g.do(req{path: "/docs/once", token: tok, proof: proof}); r.Status != 401 || !strings.Contains(r.Header.Get("WWW-Authenticate"), "invalid_dpop_proof") {
		t.Errorf("proof replayed after a reload: %d %s", r.Status, r.Body)
	}
	m := metrics()
	if v := metric(t, m, MetricReloads+`{result="success"}`); v != 3 {
		t.Errorf("reload success = %v, want 3", v)
	}
	// Counters of a removed route survive (they never go backwards).
	if v := metric(t, m, MetricRequests+`{route="extra",result="allowed",reason="ok"}`); v < 2 {
		t.Errorf("extra's counter = %v", v)
	}
	if r := getAs("/docs/x"); r.Status != 200 {
		t.Errorf("/docs %d", r.Status)
	}
}

func TestGatewayReloadKeepsInFlightRequests(t *testing.T) {
	in := startWard(t)
	docs, admin := newUpstream(t, "docs"), newUpstream(t, "admin")
	docs.hold = make(chan struct{})
	g := startGateway(t, reloadExtra, map[string]any{"Issuer": in.URL, "Docs": docs.URL, "Admin": admin.URL}, gwOptions{})
	s := newSigner(t)
	tok := serviceToken(t, in, s, "")

	var wg sync.WaitGroup
	var slow response
	wg.Go(func() { slow = g.do(req{path: "/docs/slow", token: tok, signer: s}) })
	select {
	case <-docs.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request never reached the upstream")
	}
	// Replace the table: /docs now goes to the admin upstream under
	// another name, while the slow request is still on the old table.
	g.write(strings.Replace(reloadBase, "{{.Docs}}", "{{.Admin}}", 1))
	if err := g.G.Reload("sighup"); err != nil {
		t.Fatal(err)
	}
	if r := g.do(req{path: "/docs/fast", token: tok, signer: s}); r.Status != 200 || r.Body != "admin /docs/fast" {
		t.Errorf("new request after reload: %d %q, want the new upstream", r.Status, r.Body)
	}
	if r := g.do(req{path: "/extra/x", token: tok, signer: s}); r.Status != 404 {
		t.Errorf("removed route: %d", r.Status)
	}
	close(docs.hold)
	wg.Wait()
	if slow.Status != http.StatusOK || slow.Body != "docs /docs/slow" {
		t.Errorf("in-flight request: %d %q, want 200 from the old upstream", slow.Status, slow.Body)
	}
}

func TestGatewayReloadRestartOnlyKeys(t *testing.T) {
	in := startWard(t)
	docs := newUpstream(t, "docs")
	g := startGateway(t, reloadBase, map[string]any{"Issuer": in.URL, "Docs": docs.URL, "Admin": docs.URL}, gwOptions{})
	g.write(strings.Replace(reloadBase, "log: {level: debug}", "log: {level: debug}\nlisten: 127.0.0.1:9\nmax_token_lifetime: 1h", 1))
	if err := g.G.Reload("sighup"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(g.Logs.String(), `"keys":["listen","max_token_lifetime"]`) {
		t.Errorf("no restart warning naming the keys:\n%s", g.Logs.String())
	}
}
