package crash

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-idp/ward/rs"
)

// The burst: admin API calls that each cause one critical domain event
// mapping to one SET, plus the calls that re-enable users between two
// disables (their user.updated maps to no SET). Calls about one user are
// made one after another by one worker, so the order of a user's events
// is the order of the calls; the workers run concurrently.
type opKind int

const (
	opDisable opKind = iota // PATCH {"disabled": true}: user.disabled, RISC account-disabled
	opRisk                  // PUT /risk: user.risk_changed, CAEP risk-level-change (risk_reason = our tag)
	opEnable                // PATCH {"disabled": false}: user.updated, no SET
	opRevoke                // POST /sessions/revoke: user.sessions_revoked, CAEP session-revoked
)

var cycle = []opKind{opDisable, opRisk, opEnable, opRevoke}

func (k opKind) String() string {
	return [...]string{"disable", "risk", "enable", "revoke-sessions"}[k]
}

// eventType is the domain event the call records in the audit log.
func (k opKind) eventType() string {
	return [...]string{"user.disabled", "user.risk_changed", "user.updated", "user.sessions_revoked"}[k]
}

// setType is the SET the event maps to ("" for none).
func (k opKind) setType() string {
	return [...]string{rs.EventAccountDisabled, rs.EventRiskLevelChange, "", rs.EventSessionRevoked}[k]
}

var auditTypes = []string{"user.disabled", "user.risk_changed", "user.updated", "user.sessions_revoked"}

// call is one admin API call of the burst.
type call struct {
	op     opKind
	level  string // opRisk: the level set
	reason string // opRisk: a unique tag, carried into the SET's risk_reason
	res    apiResult
	acked  bool      // answered 2xx
	before userState // what the worker knew before the call
	// A call without an answer (or with an error answer) is checked once
	// the server answers again: after is the user's state then.
	checked bool
	after   userState
}

// subject is one user of the burst and its calls in order.
type subject struct {
	name, id string
	quota    int // SET-producing calls to make
	made     int
	state    userState
	calls    []*call
}

type burst struct {
	base  string
	token string       // the administrator's
	done  atomic.Int64 // SET-producing calls finished (answered or not)
	acked atomic.Int64 // SET-producing calls answered 2xx
	// phase: 0 before the kill, 1 from just before SIGKILL until the
	// restarted server is healthy, 2 after; back is closed at 2.
	phase atomic.Int32
	back  chan struct{}

	mu         sync.Mutex
	unexpected []string // failures not explained by the kill
}

func (b *burst) unexpectedf(format string, a ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.unexpected = append(b.unexpected, fmt.Sprintf(format, a...))
}

// nextLevel picks a risk level different from the current one, so that
// every acknowledged risk call is a change (and publishes an event).
func nextLevel(cur string, n int) string {
	levels := []string{"high", "medium", "low"}
	for i := range levels {
		l := levels[(n+i)%len(levels)]
		if l != cur {
			return l
		}
	}
	return "high"
}

// run makes the calls of the worker's subjects, interleaving subjects
// and keeping each subject's calls sequential.
func (b *burst) run(ctx context.Context, subs []*subject) {
	for {
		busy := false
		for _, s := range subs {
			if s.made >= s.quota {
				continue
			}
			busy = true
			b.step(ctx, s)
		}
		if !busy || ctx.Err() != nil {
			return
		}
	}
}

func (b *burst) step(ctx context.Context, s *subject) {
	c := &call{op: cycle[len(s.calls)%len(cycle)], before: s.state}
	phase := b.phase.Load()
	s.calls = append(s.calls, c)
	u := b.base + adminAPI + "/users/" + s.id
	switch c.op {
	case opDisable:
		c.res = request(ctx, http.MethodPatch, u, b.token, map[string]any{"disabled": true})
	case opEnable:
		c.res = request(ctx, http.MethodPatch, u, b.token, map[string]any{"disabled": false})
	case opRisk:
		c.level = nextLevel(s.state.RiskLevel, len(s.calls))
		c.reason = fmt.Sprintf("crash-test %s call %d", s.name, len(s.calls)-1)
		c.res = request(ctx, http.MethodPut, u+"/risk", b.token, map[string]any{"level": c.level, "reason": c.reason})
	case opRevoke:
		c.res = request(ctx, http.MethodPost, u+"/sessions/revoke", b.token, nil)
	}
	if c.op.setType() != "" {
		s.made++
		defer b.done.Add(1)
	}
	if c.res.ok() {
		c.acked = true
		if c.op.setType() != "" {
			b.acked.Add(1)
		}
		switch c.op {
		case opDisable:
			s.state.Disabled = true
		case opEnable:
			s.state.Disabled = false
		case opRisk:
			s.state.RiskLevel = c.level
		}
		return
	}
	// No answer (the kill) or an error answer: wait for the server, then
	// learn whether the change was made.
	if c.res.err != nil {
		if phase == 2 || b.phase.Load() == 0 {
			b.unexpectedf("%s %s: no answer from a running server: %v", s.name, c.op, c.res.err)
		}
		select {
		case <-b.back:
		case <-ctx.Done():
			return
		}
	} else {
		b.unexpectedf("%s %s: %v", s.name, c.op, c.res)
	}
	for range 50 {
		r := request(ctx, http.MethodGet, u, b.token, nil)
		if r.ok() {
			json.Unmarshal(r.body, &c.after)
			c.checked = true
			s.state = c.after
			return
		}
		if r.err == nil {
			b.unexpectedf("%s: GET user after a failed call: %v", s.name, r)
			return
		}
		time.Sleep(100 * time.Millisecond) // the keep-alive connection died with the old process
	}
	b.unexpectedf("%s: the user cannot be read after a failed call", s.name)
}

// committed reports whether a failed call's change is visible in the
// user's state afterwards: true, false, or unknown (ok false) when the
// state cannot tell (revoking the sessions of a user without sessions
// changes nothing but the audit log; disabling a disabled user neither).
func (c *call) committed() (committed, ok bool) {
	if !c.checked {
		return false, false
	}
	switch c.op {
	case opDisable:
		if c.before.Disabled {
			return false, false
		}
		return c.after.Disabled, true
	case opEnable:
		if !c.before.Disabled {
			return false, false
		}
		return !c.after.Disabled, true
	case opRisk:
		return levelOf(c.after.RiskLevel) == c.level, true
	}
	return false, false
}

func levelOf(l string) string {
	if l == "" {
		return "none"
	}
	return l
}

func burstSize() (events, users int) {
	events, users = 10000, 250
	if testing.Short() {
		events, users = 2000, 100
	}
	if v, err := strconv.Atoi(os.Getenv("WARD_CRASH_EVENTS")); err == nil && v > 0 {
		events = v
		users = min(users, max(1, v/8))
	}
	return events, users
}

// TestCrashDuringBurst: `ward serve` (the real binary, SQLite and the
// embedded NATS server in a temporary data directory) gets a burst of
// 10,000 admin API calls that each cause a critical domain event mapped
// to a SET, is killed with SIGKILL while the burst runs, and is started
// again on the same data directory and address while the burst goes on.
// Then every event whose call was acknowledged, and every event whose
// change is in the database, must reach the SSF receivers, in order per
// subject. Duplicates (at-least-once) are allowed and counted.
//
// Two streams of one receiver get every SET:
//   - a push stream (RFC 8935) to an httptest receiver, delivering while
//     the burst runs, so the kill also interrupts pushes in flight; Ward
//     promises queue order for push (one SET in flight per stream), so
//     its arrival order is checked directly;
//   - a poll stream (RFC 8936) drained only after the burst, with acks:
//     it shows exactly what the durable outbox holds, independent of
//     delivery timing. (It is not polled during the kill on purpose: a
//     poll answer lost with the process holds its SETs back for
//     ssf.poll_hold while later ones are handed out, which RFC 8936
//     allows; see the report in docs/ssf.md.)
func TestCrashDuringBurst(t *testing.T) {
	dir := t.TempDir()
	bin := buildWard(t)
	w := newWard(t, bin, dir)
	testStart := time.Now()

	// Setup with the real CLI while the server is down: the receiver
	// (client credentials with the SSF scopes), the administrator's
	// client and the administrator. Secrets stay in variables only.
	out, err := w.cli("", "client", "add", "crash-receiver", "--name", "crash test receiver",
		"--auth-method", "client_secret_basic", "--grant-type", "client_credentials", "--scope", "ssf.manage", "--scope", "ssf.poll")
	if err != nil {
		t.Fatal(err)
	}
	recvSecret, err := parseField(out, "client_secret")
	if err != nil {
		t.Fatalf("ward client add crash-receiver: %v", err)
	}
	const redirectURI = "http://127.0.0.1/callback"
	out, err = w.cli("", "client", "add", "crash-admin", "--name", "crash test admin console",
		"--auth-method", "client_secret_basic", "--grant-type", "authorization_code", "--redirect-uri", redirectURI,
		"--scope", "openid", "--scope", "ward:admin")
	if err != nil {
		t.Fatal(err)
	}
	adminSecret, err := parseField(out, "client_secret")
	if err != nil {
		t.Fatalf("ward client add crash-admin: %v", err)
	}
	adminPassword := randomString(18)
	if _, err := w.cli(adminPassword+"\n", "user", "add", "crash-admin", "--role", "admin", "--password-stdin"); err != nil {
		t.Fatal(err)
	}

	w.serve()
	adminToken := adminLogin(t, w.url, "crash-admin", adminSecret, redirectURI, "crash-admin", adminPassword)
	recvToken := clientToken(t, w.url, "crash-receiver", recvSecret, "ssf.manage ssf.poll")

	// The streams.
	pushed, polled := newSetLog(), newSetLog()
	verifier := newVerifier(t, w.url, "crash-receiver")
	pushBearer := randomString(24)
	recvSrv := pushReceiver(t, verifier, pushBearer, pushed)
	r := request(context.Background(), http.MethodPost, w.url+"/ssf/stream", recvToken, map[string]any{
		"delivery": map[string]any{"method": "urn:ietf:rfc:8935", "endpoint_url": recvSrv.URL + "/ssf/events",
			"authorization_header": "Bearer " + pushBearer},
		"description": "crash test: push"})
	if r.status != http.StatusCreated {
		t.Fatalf("create push stream: %v", r)
	}
	r = request(context.Background(), http.MethodPost, w.url+"/ssf/stream", recvToken, map[string]any{"description": "crash test: poll"})
	if r.status != http.StatusCreated {
		t.Fatalf("create poll stream: %v", r)
	}
	var pollStream struct {
		Delivery struct {
			EndpointURL string `json:"endpoint_url"`
		} `json:"delivery"`
	}
	if err := json.Unmarshal(r.body, &pollStream); err != nil || pollStream.Delivery.EndpointURL == "" {
		t.Fatalf("poll stream without endpoint_url: %s", r.body)
	}

	// The users, through the admin API.
	total, nUsers := burstSize()
	subs := make([]*subject, nUsers)
	var wg sync.WaitGroup
	var createErr atomic.Value
	sem := make(chan struct{}, 8)
	for i := range subs {
		s := &subject{name: fmt.Sprintf("crash-u%04d", i), quota: total / nUsers, state: userState{RiskLevel: "none"}}
		if i < total%nUsers {
			s.quota++
		}
		subs[i] = s
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r := request(context.Background(), http.MethodPost, w.url+adminAPI+"/users", adminToken,
				map[string]any{"username": s.name, "password": randomString(18)})
			if r.status != http.StatusCreated {
				createErr.Store(fmt.Sprintf("create %s: %v", s.name, r))
				return
			}
			json.Unmarshal(r.body, &s.state)
			s.id = s.state.ID
		}()
	}
	wg.Wait()
	if e := createErr.Load(); e != nil {
		t.Fatal(e)
	}
	t.Logf("setup (CLI, start, sign-in, streams, %d users) took %v", nUsers, time.Since(testStart).Round(time.Millisecond))

	// The burst, and the kill in the middle of it.
	b := &burst{base: w.url, token: adminToken, back: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const workers = 25
	burstStart := time.Now()
	var workersDone sync.WaitGroup
	for i := range workers {
		var mine []*subject
		for j := i; j < len(subs); j += workers {
			mine = append(mine, subs[j])
		}
		workersDone.Add(1)
		go func() {
			defer workersDone.Done()
			b.run(ctx, mine)
		}()
	}
	killAt := int64(total * 2 / 5)
	for b.done.Load() < killAt {
		time.Sleep(time.Millisecond)
	}
	b.phase.Store(1)
	killedAfter := time.Since(burstStart)
	ackedAtKill, pushedAtKill := b.acked.Load(), pushed.unique()
	w.kill()
	killedAt := time.Now()
	httpClient.Transport.(*http.Transport).CloseIdleConnections()
	w.serve()
	restartedAt := time.Now()
	restart := restartedAt.Sub(killedAt)
	b.phase.Store(2)
	close(b.back)
	workersDone.Wait()
	burstTime := time.Since(burstStart)
	if ctx.Err() != nil {
		t.Fatalf("the burst did not finish in time: %d of %d calls made", b.done.Load(), total)
	}
	t.Logf("burst: %d SET-producing calls on %d users by %d workers in %v; SIGKILL after %v with %d calls acknowledged (%d SETs pushed by then); restart took %v",
		total, nUsers, workers, burstTime.Round(time.Millisecond), killedAfter.Round(time.Millisecond), ackedAtKill, pushedAtKill, restart.Round(time.Millisecond))

	// What the database says happened.
	byID := map[string]*subject{}
	for _, s := range subs {
		byID[s.id] = s
	}
	var events []*auditEvent
	for _, e := range auditLog(t, w.url, adminToken, auditTypes) {
		if byID[e.UserID] != nil {
			events = append(events, e)
		}
	}

	// Drain: the poll stream at once (everything is queued by now), then
	// wait for the push stream to have every SET the poll stream had.
	drainStart := time.Now()
	drainPoll(t, verifier, w.url, pollStream.Delivery.EndpointURL, recvToken, polled)
	pollDrain := time.Since(drainStart)
	want := polled.unique()
	deadline := time.Now().Add(60 * time.Second)
	for pushed.unique() < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	pushDrain := time.Since(drainStart)
	if n := pushed.unique(); n < want {
		t.Errorf("push: only %d of the %d SETs the poll stream had arrived within 60 s (the ones missing are listed as lost below)", n, want)
	}
	time.Sleep(300 * time.Millisecond) // anything extra would arrive now

	checkExport(t, w, events)

	c := check(t, subs, events, map[string]*setLog{"push": pushed, "poll": polled})
	c.unexpected = b.unexpected
	t.Logf("calls: %d SET-producing + %d enable, %d without an answer or with an error: %d of them committed, %d not, %d undecidable from the state; audit log: %d events of the burst, %d mapping to SETs",
		c.setCalls, c.enableCalls, c.failed, c.failedCommitted, c.failedNotCommitted, c.failedUnknown, len(events), c.expected)
	resumed := "never"
	if at := pushed.firstAfter(restartedAt); !at.IsZero() {
		resumed = at.Sub(restartedAt).Round(time.Millisecond).String()
	}
	t.Logf("push: %d distinct SETs, %d duplicate deliveries, first push %s after the restart, drained %v after the burst; poll: %d distinct, %d duplicates, drained in %v; total test time %v",
		pushed.unique(), c.dups["push"], resumed, pushDrain.Round(time.Millisecond), polled.unique(), c.dups["poll"], pollDrain.Round(time.Millisecond),
		time.Since(testStart).Round(time.Millisecond))
	c.report(t)
}

// checker collects the verdict.
type checker struct {
	setCalls, enableCalls                                      int
	failed, failedCommitted, failedNotCommitted, failedUnknown int
	expected                                                   int
	dups, lost, outOfOrder                                     map[string]int // per stream
	lostCommitted                                              int

	problems   map[string][]string // category -> examples
	counts     map[string]int
	unexpected []string
}

func (c *checker) add(category, format string, a ...any) {
	c.counts[category]++
	if len(c.problems[category]) < 10 {
		c.problems[category] = append(c.problems[category], fmt.Sprintf(format, a...))
	}
}

// Problem categories. The first two are the losses a crash can cause
// when a change, its audit event and its SETs are written in separate
// transactions (see docs/ssf.md, Crash durability).
const (
	catLostCommitted = "LOST: change committed, but neither its event nor its SET exists " +
		"(the process died after the change's transaction and before the audit event's: " +
		"the services store the change, then bus.Publish appends the event in a transaction of its own)"
	catLostSET = "LOST: event in the audit log, SET never delivered " +
		"(the process died after the audit persister's AppendEvent and before the CAE transmitter's EnqueueSETs, " +
		"two transactions; nothing derives SSF SETs from stored events after a restart)"
	catAuditCommitted = "audit record missing: change committed without its event (maps to no SET)"
	catOrder          = "OUT OF ORDER for a subject"
)

func (c *checker) report(t *testing.T) {
	t.Helper()
	if len(c.counts) > 0 {
		var lost, order []string
		for _, k := range slices.Sorted(maps.Keys(c.lost)) {
			lost = append(lost, fmt.Sprintf("%s %d", k, c.lost[k]))
		}
		for _, k := range slices.Sorted(maps.Keys(c.outOfOrder)) {
			order = append(order, fmt.Sprintf("%s %d", k, c.outOfOrder[k]))
		}
		t.Errorf("crash durability violated: %d committed SET-producing changes have no event and no SET; "+
			"events without a delivered SET: %s; out of order: %s (of %d expected SETs; details below)",
			c.lostCommitted, orNone(lost), orNone(order), c.expected)
	}
	if len(c.unexpected) > 0 {
		n := len(c.unexpected)
		t.Errorf("%d calls failed for a reason other than the kill, e.g.:\n  %s", n, strings.Join(c.unexpected[:min(n, 10)], "\n  "))
	}
	cats := make([]string, 0, len(c.counts))
	for k := range c.counts {
		cats = append(cats, k)
	}
	slices.Sort(cats)
	for _, k := range cats {
		t.Errorf("%s: %d, e.g.:\n  %s", k, c.counts[k], strings.Join(c.problems[k], "\n  "))
	}
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// check matches calls, audit events and delivered SETs.
func check(t *testing.T, subs []*subject, events []*auditEvent, logs map[string]*setLog) *checker {
	t.Helper()
	c := &checker{problems: map[string][]string{}, counts: map[string]int{}, dups: map[string]int{},
		lost: map[string]int{}, outOfOrder: map[string]int{}}
	evByUser := map[string][]*auditEvent{}
	evByID := map[string]*auditEvent{}
	for _, e := range events {
		evByUser[e.UserID] = append(evByUser[e.UserID], e)
		evByID[e.ID] = e
	}
	// rank: the index of the call that caused the event, in its user's
	// call order.
	rank := map[string]int{}
	for _, s := range subs {
		evs := evByUser[s.id] // seq order
		byCorr := map[string]*auditEvent{}
		for _, e := range evs {
			if e.CorrelationID != "" {
				byCorr[e.CorrelationID] = e
			}
		}
		owner := map[string]*call{} // event id -> call
		owned := map[*call]bool{}
		lastSeq := int64(0)
		for i, cl := range s.calls {
			if cl.op == opEnable {
				c.enableCalls++
			} else {
				c.setCalls++
			}
			if !cl.acked {
				continue
			}
			e := byCorr[cl.res.corr]
			if e == nil || e.Type != cl.op.eventType() {
				c.add("LOST from the audit log (acknowledged call without its event)", "%s call %d (%s, correlation id %s)", s.name, i, cl.op, cl.res.corr)
				continue
			}
			if cl.op == opRisk && (e.Reason != cl.reason || e.Data["level"] != cl.level) {
				c.add("wrong audit event", "%s call %d: risk event %s has reason %q level %q, want %q %q", s.name, i, e.ID, e.Reason, e.Data["level"], cl.reason, cl.level)
			}
			if e.Seq <= lastSeq {
				c.add("audit log out of call order", "%s call %d: event seq %d after seq %d", s.name, i, e.Seq, lastSeq)
			}
			lastSeq = e.Seq
			owner[e.ID], rank[e.ID], owned[cl] = cl, i, true
		}
		// Events no acknowledged call explains belong to a failed call
		// between the acknowledged calls around them.
		for _, e := range evs {
			if owner[e.ID] != nil {
				continue
			}
			lo, hi := -1, len(s.calls)
			for i, cl := range s.calls {
				if !cl.acked {
					continue
				}
				ev := byCorr[cl.res.corr]
				if ev == nil {
					continue
				}
				if ev.Seq < e.Seq {
					lo = i
				} else if hi == len(s.calls) {
					hi = i
				}
			}
			found := false
			for i := lo + 1; i < hi; i++ {
				cl := s.calls[i]
				if cl.acked || owned[cl] || cl.op.eventType() != e.Type || (cl.op == opRisk && e.Reason != cl.reason) {
					continue
				}
				owner[e.ID], rank[e.ID], owned[cl], found = cl, i, true, true
				break
			}
			if !found {
				c.add("audit event no call explains", "%s: %s %s (seq %d)", s.name, e.Type, e.ID, e.Seq)
			}
		}
		// Failed calls: a change that is in the database must have its
		// event.
		for i, cl := range s.calls {
			if cl.acked {
				continue
			}
			c.failed++
			has := owned[cl]
			committed, known := cl.committed()
			switch {
			case !known:
				c.failedUnknown++
			case committed:
				c.failedCommitted++
			default:
				c.failedNotCommitted++
			}
			if known && committed && !has {
				if cl.op.setType() != "" {
					c.lostCommitted++
					c.add(catLostCommitted, "%s call %d (%s): state after the restart %+v, no %s event in the audit log, so no SET",
						s.name, i, cl.op, cl.after, cl.op.eventType())
				} else {
					c.add(catAuditCommitted, "%s call %d (%s): state after the restart %+v, no %s event in the audit log",
						s.name, i, cl.op, cl.after, cl.op.eventType())
				}
			}
		}
	}

	// Every SET-producing event must be delivered on every stream, in
	// call order per user.
	subOf := map[string]*subject{}
	for _, s := range subs {
		subOf[s.id] = s
	}
	for _, e := range events {
		if _, ok := rank[e.ID]; ok && e.Type != "user.updated" {
			c.expected++
		}
	}
	names := make([]string, 0, len(logs))
	for n := range logs {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		l := logs[name]
		first, dups := l.firstArrivals()
		c.dups[name] = dups
		for _, b := range l.bad {
			c.add(name+": SET refused by rs.Receiver", "%s", b)
		}
		got := map[string]bool{}
		last := map[string]int{}
		for _, d := range first {
			set := d.set
			if set.TXN == "" {
				continue // SSF stream events
			}
			e := evByID[set.TXN]
			if e == nil {
				c.add(name+": SET of no event of the burst", "jti %s txn %s type %s", set.JTI, set.TXN, set.Event.Type)
				continue
			}
			if got[set.TXN] {
				c.add(name+": event queued twice (second SET with a new jti)", "txn %s", set.TXN)
				continue
			}
			got[set.TXN] = true
			s := subOf[e.UserID]
			r, ok := rank[e.ID]
			if !ok {
				continue // reported above
			}
			cl := s.calls[r]
			if set.Event.Type != cl.op.setType() || set.Subject == nil || set.Subject.Format != "iss_sub" || set.Subject.Sub != s.id ||
				(cl.op == opRisk && set.Event.RiskReason != cl.reason) {
				c.add(name+": SET does not match its event", "%s call %d (%s): SET type %s subject %+v", s.name, r, cl.op, set.Event.Type, set.Subject)
			}
			if p, seen := last[s.id]; seen && r <= p {
				c.outOfOrder[name]++
				c.add(name+": "+catOrder, "%s: SET of call %d (%s) arrived after the SET of call %d (%s)", s.name, r, cl.op, p, s.calls[p].op)
			}
			last[s.id] = r
		}
		for _, e := range events {
			r, ok := rank[e.ID]
			if !ok || e.Type == "user.updated" || got[e.ID] {
				continue
			}
			s := subOf[e.UserID]
			how := "acknowledged"
			if !s.calls[r].acked {
				how = "not answered, but its event is in the audit log"
			}
			c.lost[name]++
			c.add(name+": "+catLostSET, "%s call %d (%s, %s): txn %s", s.name, r, s.calls[r].op, how, e.ID)
		}
	}
	return c
}

// checkExport: every event of the burst reaches the audit export (the
// file sink), in the audit log's order, across the SIGKILL: a record
// exported twice (the batch in flight when the process died) is a repeat
// of one already seen, never a new event after a later one.
func checkExport(t *testing.T, w *ward, events []*auditEvent) {
	t.Helper()
	want := map[string]bool{}
	for _, e := range events {
		want[e.ID] = true
	}
	var seen map[string]bool
	var dups, outOfOrder int
	deadline := time.Now().Add(60 * time.Second)
	for {
		seen, dups, outOfOrder = map[string]bool{}, 0, 0
		var maxSeq int64
		for _, rec := range exportedRecords(t, w.exportDir) {
			switch {
			case seen[rec.ID]:
				dups++
			case rec.Seq <= maxSeq:
				outOfOrder++
				seen[rec.ID] = true
			default:
				seen[rec.ID], maxSeq = true, rec.Seq
			}
		}
		missing := 0
		for id := range want {
			if !seen[id] {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("export: %d of the burst's %d events never reached the file sink", missing, len(want))
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if outOfOrder > 0 {
		t.Errorf("export: %d events arrived after a later one", outOfOrder)
	}
	t.Logf("export: %d distinct records in the file sink (every one of the burst's %d events), %d repeated across the crash", len(seen), len(want), dups)
}

// exportedRecord is what the check reads of an OCSF record: Ward's event
// id and its position in the audit log.
type exportedRecord struct {
	ID  string
	Seq int64
}

// exportedRecords reads the file sink's rotated files (oldest first:
// their names carry the rotation time) and then the active file.
func exportedRecords(t *testing.T, dir string) []exportedRecord {
	t.Helper()
	rotated, _ := filepath.Glob(filepath.Join(dir, "ocsf-*.jsonl"))
	sort.Strings(rotated)
	var out []exportedRecord
	for _, f := range append(rotated, filepath.Join(dir, "ocsf.jsonl")) {
		b, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			var r struct {
				Metadata struct {
					UID      string `json:"uid"`
					Sequence int64  `json:"sequence"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal(line, &r); err != nil || r.Metadata.UID == "" {
				t.Fatalf("export: %s: a line that is not an OCSF record of Ward's (%v): %.200s", filepath.Base(f), err, line)
			}
			out = append(out, exportedRecord{ID: r.Metadata.UID, Seq: r.Metadata.Sequence})
		}
	}
	return out
}
