package interop

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/wardtest"
)

// TestOAuth4WebAPI runs oauth4webapi.mjs (Node.js, oauth4webapi) against a
// real Ward: once with the default configuration (the library picks up
// DPoP-Nonce from responses on its own) and once with dpop.require_nonce,
// where every first proof of a key is refused with use_dpop_nonce and the
// library must retry.
func TestOAuth4WebAPI(t *testing.T) {
	node := requireNode(t)
	for _, tc := range []struct {
		name          string
		requireNonce  bool
		nonceLifetime time.Duration
	}{
		{"default", false, 0},
		{"require_nonce", true, 0},
		// Nonces that expire during the run: userinfo must ask for a
		// fresh one the RFC 9449 §9 way.
		{"nonce_expiry", false, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := wardtest.Start(t, wardtest.Options{RealClock: true, Configure: func(c *config.Config) {
				c.DPoP.RequireNonce = tc.requireNonce
				if tc.nonceLifetime > 0 {
					c.DPoP.NonceLifetime = tc.nonceLifetime
				}
			}})
			env := []string{
				"WARD_ISSUER=" + in.URL,
				"WARD_SPA_CLIENT_ID=spa",
				"WARD_SERVICE_CLIENT_ID=service",
				"WARD_SERVICE_SECRET=" + wardtest.ServiceSecret,
				"WARD_REDIRECT_URI=" + wardtest.RedirectURI,
				"WARD_USERNAME=bob",
				"WARD_PASSWORD=" + wardtest.BobPassword,
			}
			if tc.requireNonce {
				env = append(env, "WARD_EXPECT_NONCE_RETRY=1")
			}
			if tc.nonceLifetime > 0 {
				env = append(env, fmt.Sprintf("WARD_NONCE_LIFETIME_MS=%d", tc.nonceLifetime.Milliseconds()))
			}
			if !runNode(t, node, "oauth4webapi.mjs", env) {
				logTail(t, in.LogText(), 40)
			}
		})
	}
}

// requireNode returns the path of node, or skips the test (fails it under
// CI) when node or the npm dependencies are missing.
func requireNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	var missing string
	switch {
	case err != nil:
		missing = "node (Node.js 20 or later) is not on PATH"
	default:
		if _, err := os.Stat(filepath.Join("node_modules", "oauth4webapi", "package.json")); err != nil {
			missing = "test/interop/node_modules is missing"
		}
	}
	if missing == "" {
		return node
	}
	const fix = "run: (cd test/interop && npm ci --no-audit --no-fund)"
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; CI must run the Node.js interop tests; %s", missing, fix)
	}
	t.Skipf("%s; %s", missing, fix)
	return ""
}

var summaryRE = regexp.MustCompile(`(?m)^(\d+) passed, (\d+) failed`)

// runNode runs a script in this directory with env added, streams its
// output into the test log line by line and fails the test on a non-zero
// exit or a missing/failing summary line. It reports success.
func runNode(t *testing.T, node, script string, env []string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, script)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	var out strings.Builder
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			t.Log(sc.Text())
			out.WriteString(sc.Text() + "\n")
		}
		io.Copy(io.Discard, pr)
	}()
	err := cmd.Run()
	pw.Close()
	wg.Wait()
	if err != nil {
		t.Errorf("node %s: %v", script, err)
		return false
	}
	m := summaryRE.FindStringSubmatch(out.String())
	if m == nil || m[2] != "0" || m[1] == "0" {
		t.Errorf("node %s exited 0 but its summary is %q", script, m)
		return false
	}
	return true
}

// logTail logs the last n lines of Ward's log (to see why a request failed).
func logTail(t *testing.T, logs string, n int) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("last %d lines of Ward's log:\n%s", len(lines), strings.Join(lines, "\n"))
}
