package cluster

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// errLog records client-visible errors with their time, so that they can
// be charged to the fault during which they happened.
type errLog struct {
	mu   sync.Mutex
	at   []time.Time
	what []string
}

func (l *errLog) add(what string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.at = append(l.at, time.Now())
	l.what = append(l.what, what)
}

func (l *errLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.at)
}

// between returns the errors in [from, to): their number, the time of
// the last one and the most frequent kinds.
func (l *errLog) between(from, to time.Time) (n int, last time.Time, kinds map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	kinds = map[string]int{}
	for i, at := range l.at {
		if !at.Before(from) && at.Before(to) {
			n++
			if at.After(last) {
				last = at
			}
			kinds[l.what[i]]++
		}
	}
	return n, last, kinds
}

// faultBound is the most client-visible errors a fault may cause (at the
// proxy and at the gateways together), and how long after the fault's
// start they may go on. Each kind's count is what the requests in flight
// plus those routed during the detection can amount to at the plan's
// concurrency; docs/deploy.md gives the measured figures.
func faultBound(f fault, p plan) (maxErrors int, maxSpan time.Duration) {
	const unbounded = math.MaxInt
	workers := 2*p.concurrency + p.gwWorkers + 2 // ward-load, gateway clients, the SSF poller and the admin
	switch f.what {
	case faultReplica:
		// Requests in flight on the replica plus those the proxy sends it
		// before its health check (every 200 ms) takes it out.
		return 40 * workers, f.downed + 10*time.Second
	case faultStall:
		// Each request on the stalled replica waits for its client's
		// timeout (5 s) — one per worker at most, a few rounds while the
		// health check (1 s timeout) notices.
		return 10 * workers, f.downed + 10*time.Second
	case faultNATS, faultNATSLeader:
		// Events are stored first and relayed later: invisible to clients.
		return 2 * workers, f.downed + 10*time.Second
	case faultGateway:
		// The gateway clients' requests to the dead gateway (connection
		// refused, then 503 while the restarted gateway replays the CAE
		// stream) until the clients' next round.
		return 200 * p.gwWorkers, f.downed + 15*time.Second
	case faultPostgres:
		// Every request that needs the database fails while it is down
		// (the replicas leave the pool; the proxy answers 502 at once), so
		// the count is the clients' retry rate times the outage (tens of
		// thousands here, more on a faster machine): only the span is
		// bounded.
		return unbounded, f.downed + 15*time.Second
	}
	return 0, 0
}

// reportFaultErrors charges the errors to the faults (each fault's
// window runs to the next fault's start, the last one's to the end of
// the load plus 5 s), logs them per fault and fails the test when a
// bound is exceeded or errors happened outside every fault.
func reportFaultErrors(t *testing.T, start time.Time, p plan, done []fault, sources ...*errLog) {
	t.Helper()
	names := []string{"proxy", "gateways"}
	// The last window ends with the load: the load generators' requests
	// cut off when they stop are not a fault's.
	end := start.Add(p.load)
	if len(done) > 0 {
		var base []string
		total := 0
		for i, l := range sources {
			n, _, kinds := l.between(start.Add(-time.Minute), start.Add(done[0].at))
			total += n
			if n > 0 {
				base = append(base, fmt.Sprintf("%s %d %s", names[i], n, topKinds(kinds)))
			}
		}
		t.Logf("errors before the first fault: %d %s", total, strings.Join(base, "; "))
		if total > 0 {
			t.Errorf("%d client-visible errors before any fault", total)
		}
	}
	for i, f := range done {
		from := start.Add(f.at)
		to := end
		if i+1 < len(done) {
			to = start.Add(done[i+1].at)
		}
		var parts []string
		total := 0
		var last time.Time
		for k, l := range sources {
			n, lt, kinds := l.between(from, to)
			total += n
			if lt.After(last) {
				last = lt
			}
			parts = append(parts, fmt.Sprintf("%s %d %s", names[k], n, topKinds(kinds)))
		}
		span := time.Duration(0)
		if total > 0 {
			span = last.Sub(from)
		}
		maxN, maxSpan := faultBound(f, p)
		bound := "any number"
		if maxN != math.MaxInt {
			bound = fmt.Sprint(maxN)
		}
		t.Logf("fault %-12s at %5.1fs (down %v): %5d errors within %5.1fs of its start (bound %s within %v): %s",
			f, f.at.Seconds(), f.downed, total, span.Seconds(), bound, maxSpan, strings.Join(parts, "; "))
		if total > maxN {
			t.Errorf("fault %s: %d client-visible errors, more than the bound %d", f, total, maxN)
		}
		if span > maxSpan {
			t.Errorf("fault %s: errors went on for %v after its start, longer than the bound %v", f, span.Round(100*time.Millisecond), maxSpan)
		}
	}
}

func topKinds(kinds map[string]int) string {
	type kv struct {
		k string
		n int
	}
	var all []kv
	for k, n := range kinds {
		all = append(all, kv{k, n})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n || all[i].n == all[j].n && all[i].k < all[j].k })
	var out []string
	for i, e := range all {
		if i == 4 {
			out = append(out, "…")
			break
		}
		out = append(out, fmt.Sprintf("%s×%d", e.k, e.n))
	}
	if len(out) == 0 {
		return ""
	}
	return "(" + strings.Join(out, ", ") + ")"
}
