package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/wardtest"
)

func TestGatewayCommandInvalidConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "gateway.yaml")
	os.WriteFile(file, []byte("issuer: http://ward.example.com\nroutes: []\ncolour: blue\n"), 0o600)
	var out, errb strings.Builder
	code := run(context.Background(), []string{"gateway", "--config", file}, &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, environ: []string{}})
	if code != exitUsage {
		t.Errorf("exit %d, want %d", code, exitUsage)
	}
	for _, want := range []string{"4 problems", "field colour not found", "issuer: plain http", "external_url: required", "routes: at least one route"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errb.String())
		}
	}
	// No file at all: a usage error naming both ways to give one. The
	// IdP's $WARD_CONFIG is not the gateway's.
	errb.Reset()
	code = run(context.Background(), []string{"gateway"}, &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, environ: []string{"WARD_CONFIG=" + file}})
	if code != exitUsage || !strings.Contains(errb.String(), "--config") || !strings.Contains(errb.String(), "WARD_GATEWAY_CONFIG") {
		t.Errorf("no config: exit %d %q", code, errb.String())
	}
}

func TestGatewayCommandServesAndReloadsOnSIGHUP(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{RealClock: true})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "up") }))
	defer up.Close()
	file := filepath.Join(t.TempDir(), "gateway.yaml")
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
issuer: %s
external_url: http://127.0.0.1:8800
log: {format: text, level: info}
ssf: {mode: push, audience: http://127.0.0.1:8800, push_bearer_env: PUSH}
routes:
  - {path_prefix: /docs, upstream: %s, audience: https://docs.example, scopes: [docs.read]}
`, in.URL, up.URL)
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"gateway", "--config", file}, &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb,
			environ: []string{"PUSH=push-secret-123456"}})
	}()
	re := regexp.MustCompile(`msg=listening addr=(\S+)`)
	var addr string
	for deadline := time.Now().Add(20 * time.Second); addr == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(errb.String()); m != nil {
			addr = m[1]
		}
		select {
		case code := <-done:
			t.Fatalf("gateway exited %d: %s", code, errb.String())
		default:
		}
	}
	if addr == "" {
		t.Fatalf("no listening line: %s", errb.String())
	}
	base := "http://" + addr
	status := func(path string) int {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := status("/healthz"); s != 200 {
		t.Errorf("healthz %d", s)
	}
	deadline := time.Now().Add(10 * time.Second)
	for status("/readyz") != 200 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if s := status("/readyz"); s != 200 {
		t.Errorf("readyz %d", s)
	}
	resp, err := http.Get(base + "/.well-known/ward/gateway-jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	var jwks struct{ Keys []map[string]any }
	json.NewDecoder(resp.Body).Decode(&jwks)
	resp.Body.Close()
	if len(jwks.Keys) != 1 || jwks.Keys[0]["alg"] != "ES256" || jwks.Keys[0]["d"] != nil {
		t.Errorf("jwks %v", jwks)
	}
	if s := status("/docs/x"); s != 401 {
		t.Errorf("/docs without a token: %d", s)
	}
	if s := status("/more/x"); s != 404 {
		t.Errorf("/more before reload: %d", s)
	}

	// Add a route and send SIGHUP (the gateway has registered for it
	// before it logged "listening").
	cfg += fmt.Sprintf("  - {path_prefix: /more, upstream: %s, audience: https://docs.example, scopes: []}\n", up.URL)
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(errb.String(), "trigger=sighup") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(errb.String(), `msg="gateway: configuration reloaded" trigger=sighup`) {
		t.Errorf("no SIGHUP reload logged:\n%s", errb.String())
	}
	if s := status("/more/x"); s != 401 {
		t.Errorf("/more after reload: %d, want 401 (routed, no token)", s)
	}
	if strings.Contains(errb.String(), "push-secret-123456") {
		t.Error("the push secret reached the log")
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d: %s", code, errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("gateway did not shut down")
	}
	if !strings.Contains(errb.String(), "msg=stopped") {
		t.Errorf("no clean stop:\n%s", errb.String())
	}
}
