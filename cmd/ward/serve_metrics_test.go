package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/metrics/metricstest"
)

// `ward serve` with metrics.listen serves /metrics there, and only there.
func TestServeMetricsListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	maddr := ln.Addr().String()
	ln.Close()
	h := newHarness(t, fmt.Sprintf("listen: 127.0.0.1:0\nmetrics: {listen: %q}\n", maddr))
	h.environ = []string{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--dev", "--config", h.cfgFile}, &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, environ: h.environ})
	}()
	re := regexp.MustCompile(`msg=listening addr=(\S+)`)
	var addr string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && addr == ""; time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(errb.String()); m != nil && strings.Contains(errb.String(), "msg=metrics addr="+maddr) {
			addr = m[1]
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited %d: %s", code, errb.String())
		default:
		}
	}
	if addr == "" {
		t.Fatalf("no listening lines: %s", errb.String())
	}
	get := func(method, u string) (int, string) {
		req, _ := http.NewRequest(method, u, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get(http.MethodGet, "http://"+addr+"/healthz"); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	code, page := get(http.MethodGet, "http://"+maddr+"/metrics")
	if code != 200 {
		t.Fatalf("metrics %d", code)
	}
	p, err := metricstest.Parse(page)
	if err != nil {
		t.Fatalf("%v\n%s", err, page)
	}
	if v, ok := p.Get("ward_http_requests_total", "route", "GET /healthz", "code", "2xx"); !ok || v < 1 {
		t.Errorf("healthz not counted: %v %v", v, ok)
	}
	if f := p.Families["ward_build_info"]; f == nil || len(f.Samples) != 1 {
		t.Errorf("build info: %+v", f)
	}
	if code, _ := get(http.MethodGet, "http://"+addr+"/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics on the issuer's listener: %d", code)
	}
	for _, c := range []struct{ method, path string }{{http.MethodPost, "/metrics"}, {http.MethodGet, "/healthz"}, {http.MethodGet, "/token"}} {
		if code, _ := get(c.method, "http://"+maddr+c.path); code != http.StatusMethodNotAllowed && code != http.StatusNotFound {
			t.Errorf("%s %s on the metrics listener: %d", c.method, c.path, code)
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d: %s", code, errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not shut down")
	}
}
