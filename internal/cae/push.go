package cae

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// pusher is the RFC 8935 push worker of one instance. It holds leases on
// push streams (renewed in the background), and for every leased stream
// with queued SETs runs one goroutine that POSTs them one at a time in
// sequence order: the next SET of a stream goes out only after the
// previous one was answered, so order holds, and a failing receiver
// blocks only its own stream.
type pusher struct {
	s      *Service
	client *http.Client

	mu    sync.Mutex
	owned map[string]*pushState

	wakeCh    chan struct{}
	claimReq  atomic.Bool
	lastClaim atomic.Int64 // unix nanos of the last on-demand claim
	// claimedOnce: the loop (the only caller of claim) has claimed.
	claimedOnce bool
	stopping    atomic.Bool
	sem         chan struct{}
	drains      sync.WaitGroup

	acks    chan ackMsg
	acksWG  sync.WaitGroup
	started atomic.Bool
	cancel  context.CancelFunc
	done    chan struct{}

	lastPurge time.Time

	// Fair share (share.go), used by the loop only: this instance's
	// membership slot (-1: none) and its lease.
	slot      int
	slotUntil time.Time
	unlisten  func()
	// claimMu orders a claim and the release of surplus streams: a
	// claim that renewed a stream being released must not take it back
	// into owned after the release (it would push a stream another
	// instance holds). releasing (under mu) are those given up.
	claimMu   sync.Mutex
	releasing map[string]bool
	// abandon (tests) makes stop keep the leases, like a crash.
	abandon atomic.Bool
}

// ackMsg is a delivered SET to delete, or streams to give up once the
// deletions before it are written (so the next holder does not push
// them again).
type ackMsg struct {
	key     store.SETKey
	release []string
}

type pushState struct {
	id         string
	leaseUntil time.Time
	running    bool
	dirty      bool
	cursor     int64 // the last seq delivered or refused by this instance
	retryAt    time.Time
	failures   int
	// hints are SETs this instance queued on the stream, in seq order:
	// when the first follows cursor directly, the worker pushes them
	// without reading the queue back (a gap means another instance wrote
	// rows in between: then it reads the queue).
	hints []*store.SETEntry
	// needRead: the queue may hold SETs the hints do not cover (written
	// by another instance, left by a failure, or past a gap).
	needRead bool
	// direct is the event whose direct push (direct.go) holds the stream
	// until its unacknowledged SETs are written; sent are rows delivered
	// directly that may still be read back before their delete.
	direct *directBatch
	sent   map[int64]bool
	// early is the event with direct pushes that has not yet written its
	// SET for this stream, which it does not push (direct.go).
	early *directBatch
	// lastSET is when an event last had a SET for the stream (direct.go).
	lastSET time.Time
}

// maxHints bounds the SETs remembered per stream.
const maxHints = 256

func newPusher(s *Service) *pusher {
	c := s.o.HTTPClient
	if c == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil // a proxy would dial for us, past the guard
		t.DialContext = s.guard.dialContext(30 * time.Second)
		t.MaxIdleConnsPerHost = 8
		t.MaxIdleConns = 1024
		t.ResponseHeaderTimeout = s.o.PushTimeout
		c = &http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return &pusher{s: s, client: c, owned: map[string]*pushState{}, wakeCh: make(chan struct{}, 1),
		sem: make(chan struct{}, s.o.PushConcurrency), acks: make(chan ackMsg, 4096), done: make(chan struct{}), slot: -1, releasing: map[string]bool{}}
}

func (p *pusher) start() {
	if !p.started.CompareAndSwap(false, true) {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.acksWG.Add(1)
	go p.runAcks()
	p.listen()
	go p.run(ctx)
}

// stop ends the loop, waits for the pushes in flight (each is answered or
// times out and is recorded), writes the pending acknowledgements and
// releases the leases.
func (p *pusher) stop() error {
	if !p.started.Load() {
		return nil
	}
	if !p.stopping.CompareAndSwap(false, true) {
		return nil
	}
	// Direct pushes are counted under mu after checking stopping: once
	// this returns, none is added behind the wait below.
	p.mu.Lock()
	p.mu.Unlock() //nolint:staticcheck // an empty critical section is the point
	if p.unlisten != nil {
		p.unlisten()
	}
	p.cancel()
	<-p.done
	p.drains.Wait()
	close(p.acks)
	p.acksWG.Wait()
	if p.abandon.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.s.o.Store.ReleaseSSFStreams(ctx, p.s.o.InstanceID); err != nil {
		return fmt.Errorf("cae: release push leases: %w", err)
	}
	if err := p.releaseSlot(ctx); err != nil {
		return fmt.Errorf("cae: release push membership: %w", err)
	}
	p.announce() // the others take the streams over now
	return nil
}

func (p *pusher) wake() {
	select {
	case p.wakeCh <- struct{}{}:
	default:
	}
}

// claimSoon asks the loop to claim leases now (a stream was created or
// enabled here).
func (p *pusher) claimSoon() {
	p.claimReq.Store(true)
	p.wake()
}

// markDirty notes new SETs on a stream (entries: those just queued, in
// seq order, or nil); an unleased push stream makes the loop try to claim
// it (at most every 100 ms). The caller wakes the loop. It reports
// whether the stream is a push stream this instance does not hold
// (another may: the caller notifies it).
func (p *pusher) markDirty(id string, entries []*store.SETEntry) (elsewhere bool) {
	if !p.started.Load() || p.stopping.Load() {
		st := p.s.snap.Load()
		return st != nil && st.byID[id] != nil && st.byID[id].Method == model.DeliveryPush
	}
	p.mu.Lock()
	ps, ok := p.owned[id]
	if ok {
		ps.dirty = true
		switch {
		case len(entries) == 0:
			ps.needRead = true
		case len(ps.hints)+len(entries) > maxHints:
			ps.hints, ps.needRead = nil, true // fall back to reading the queue
		default:
			ps.hints = append(ps.hints, entries...)
		}
	}
	p.mu.Unlock()
	if !ok {
		st := p.s.snap.Load()
		if st == nil || st.byID[id] == nil || st.byID[id].Method != model.DeliveryPush {
			return false
		}
		if now := time.Now().UnixNano(); now-p.lastClaim.Load() > int64(100*time.Millisecond) {
			p.lastClaim.Store(now)
			p.claimReq.Store(true)
		}
		return true
	}
	return false
}

func (p *pusher) run(ctx context.Context) {
	defer close(p.done)
	tick := time.NewTicker(p.s.o.RescanInterval)
	defer tick.Stop()
	p.rescan(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			p.rescan(ctx)
		case <-p.wakeCh:
			if p.claimReq.Swap(false) {
				if _, err := p.s.streams(ctx); err == nil {
					p.claim(ctx)
				}
			}
		}
		p.dispatch()
	}
}

// rescan renews and takes leases, reloads changed streams and marks the
// leased streams that have queued SETs (written by any instance).
func (p *pusher) rescan(ctx context.Context) {
	log := p.s.o.Log
	if _, err := p.s.streams(ctx); err != nil {
		if ctx.Err() == nil {
			log.WarnContext(ctx, "cae: push rescan: load streams", "err", err)
		}
		return
	}
	p.claim(ctx)
	ids, err := p.s.o.Store.SSFStreamsWithQueuedSETs(ctx)
	if err != nil {
		if ctx.Err() == nil {
			log.WarnContext(ctx, "cae: push rescan: queued streams", "err", err)
		}
		return
	}
	p.mu.Lock()
	for _, id := range ids {
		if ps, ok := p.owned[id]; ok && !ps.running {
			ps.dirty, ps.needRead = true, true
		}
	}
	p.mu.Unlock()
	if now := p.s.o.Now(); now.Sub(p.lastPurge) > time.Hour {
		p.lastPurge = now
		if n, err := p.s.o.Store.PurgeRefusedSETs(ctx, now.Add(-p.s.o.RefusedRetention)); err != nil {
			log.WarnContext(ctx, "cae: purge refused SETs", "err", err)
		} else if n > 0 {
			log.InfoContext(ctx, "cae: purged refused SETs", "count", n)
		}
		// The bus keeps events for at most a week; a catch-up never asks
		// about older ones.
		if _, err := p.s.o.Store.PurgeSSFHandled(ctx, now.Add(-HandledRetention)); err != nil {
			log.WarnContext(ctx, "cae: purge handled events", "err", err)
		}
	}
}

// claim renews this instance's leases that are past half their time and
// takes streams whose lease is free or expired. Lease times use the wall
// clock (they are compared across instances), not the injected clock.
func (p *pusher) claim(ctx context.Context) {
	p.claimMu.Lock()
	rel := p.claimStreams(ctx)
	p.claimMu.Unlock()
	if len(rel) > 0 {
		// Given up after the deletions of their delivered SETs (runAcks).
		p.acks <- ackMsg{release: rel}
	}
}

// claimStreams claims (claim) and returns the surplus streams to give up.
func (p *pusher) claimStreams(ctx context.Context) (release []string) {
	now := time.Now()
	d := p.s.o.LeaseDuration
	until := now.Add(d)
	renew := now.Add(d / 2)
	if !p.claimedOnce {
		// The first claim also takes back leases this instance id still
		// holds from a predecessor that stopped without releasing them (a
		// crash, with a stable id): otherwise they would wait for half
		// their time.
		renew = until
	}
	// At most this instance's share (share.go); all streams when the
	// membership cannot be read (the per-stream leases still hold).
	take, limit := -1, -1
	live, joined, err := p.members(ctx, now)
	if err != nil {
		if ctx.Err() == nil {
			p.s.o.Log.WarnContext(ctx, "cae: push membership", "err", err)
		}
	} else if snap := p.s.snap.Load(); snap != nil {
		limit = share(pushStreams(snap), live)
		held := 0
		p.mu.Lock()
		for _, ps := range p.owned {
			if now.Before(ps.leaseUntil) {
				held++
			}
		}
		p.mu.Unlock()
		take = max(limit-held, 0)
	}
	if joined {
		p.announce() // the others give up their surplus
	}
	ids, err := p.s.o.Store.ClaimSSFStreams(ctx, p.s.o.InstanceID, now, renew, until, take)
	if err != nil {
		if ctx.Err() == nil {
			p.s.o.Log.WarnContext(ctx, "cae: claim push streams", "err", err)
		}
		return
	}
	p.claimedOnce = true
	p.mu.Lock()
	defer p.mu.Unlock()
	defer func() {
		// Give up what exceeds the share: idle streams only (never one
		// being pushed).
		if limit >= 0 && len(p.owned) > limit {
			release = p.surplus(len(p.owned) - limit)
		}
	}()
	for _, id := range ids {
		if p.releasing[id] {
			continue // renewed just before its release
		}
		ps, ok := p.owned[id]
		if !ok || (!ps.running && now.After(ps.leaseUntil)) {
			// Newly ours: start from the head of its queue.
			ps = &pushState{id: id, needRead: true}
			p.owned[id] = ps
		}
		ps.leaseUntil = until
		ps.dirty = true
	}
	for id, ps := range p.owned {
		if !ps.running && now.After(ps.leaseUntil) {
			delete(p.owned, id)
		}
	}
	return release // set by the deferred surplus check
}

// leaseValid reports whether this instance may push the stream now: its
// lease has a safety margin left.
func (p *pusher) leaseValid(ps *pushState) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return time.Now().Add(p.s.o.LeaseDuration / 5).Before(ps.leaseUntil)
}

func (p *pusher) dispatch() {
	if p.stopping.Load() {
		return
	}
	snap := p.s.snap.Load()
	if snap == nil {
		return
	}
	now := time.Now()
	margin := p.s.o.LeaseDuration / 5
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, ps := range p.owned {
		if !ps.dirty || ps.running || now.Before(ps.retryAt) || !now.Add(margin).Before(ps.leaseUntil) {
			continue
		}
		st := snap.byID[id]
		if st == nil || st.Method != model.DeliveryPush || st.Status != model.StreamEnabled {
			ps.dirty = false
			continue
		}
		ps.running, ps.dirty = true, false
		p.drains.Add(1)
		go p.drain(ps)
	}
}

// drain pushes a stream's queued SETs in order until the queue is empty,
// a push fails (then it schedules a retry), the lease runs short or the
// worker stops.
func (p *pusher) drain(ps *pushState) {
	defer p.drains.Done()
	p.sem <- struct{}{}
	defer func() { <-p.sem }()
	ctx := context.Background()
	finish := func(retryIn time.Duration) {
		p.mu.Lock()
		ps.running = false
		if retryIn > 0 {
			// The SETs not pushed yet may have been taken from the hints.
			ps.retryAt, ps.dirty, ps.needRead = time.Now().Add(retryIn), true, true
		}
		p.mu.Unlock()
		if retryIn > 0 {
			time.AfterFunc(retryIn, p.wake)
		} else {
			p.wake() // dirty may have been set while running
		}
	}
	for {
		snap := p.s.snap.Load()
		st := snap.byID[ps.id]
		if p.stopping.Load() || st == nil || st.Method != model.DeliveryPush || st.Status != model.StreamEnabled || !p.leaseValid(ps) {
			finish(0)
			return
		}
		rows, read := p.takeHints(ps)
		var err error
		if read {
			rows, err = p.s.o.Store.QueuedSETs(ctx, ps.id, ps.cursor, queueBatch)
			if err == nil && len(rows) == queueBatch {
				p.mu.Lock()
				ps.needRead = true // more behind these
				p.mu.Unlock()
			}
		}
		if err != nil {
			p.s.o.Log.WarnContext(ctx, "cae: read push queue", "stream_id", ps.id, "err", err)
			finish(p.s.o.MinBackoff)
			return
		}
		if len(rows) == 0 {
			p.mu.Lock()
			if ps.dirty {
				ps.dirty = false
				p.mu.Unlock()
				continue
			}
			ps.running = false
			p.mu.Unlock()
			return
		}
		for i, r := range rows {
			if p.stopping.Load() || !p.leaseValid(ps) {
				if i < len(rows) && !read {
					p.mu.Lock()
					ps.needRead = true
					p.mu.Unlock()
				}
				finish(0)
				return
			}
			// The status is read from the store before every push: a
			// stream paused or disabled a moment ago, by this instance or
			// another, transmits nothing more (SSF 1.0 §8.1.2), whatever
			// the snapshot (reloaded every rescan) still says.
			if cur := p.s.snap.Load().byID[ps.id]; cur == nil || cur.Status != model.StreamEnabled || cur.Method != model.DeliveryPush || !p.stillEnabled(ctx, ps.id) {
				p.mu.Lock()
				ps.needRead = true
				p.mu.Unlock()
				finish(0)
				return
			} else {
				st = cur
			}
			key := store.SETKey{StreamID: ps.id, Seq: r.Seq}
			if p.wasSent(ps, r.Seq) {
				ps.cursor = r.Seq // delivered directly, its delete pending
				continue
			}
			res := p.post(st, r)
			switch res.kind {
			case delivered:
				ps.cursor, ps.failures = r.Seq, 0
				p.s.stats.Delivered.Add(1)
				p.acks <- ackMsg{key: key}
			case refused:
				ps.cursor, ps.failures = r.Seq, 0
				p.s.stats.Refused.Add(1)
				p.s.o.Log.WarnContext(ctx, "cae: receiver refused a SET", "stream_id", ps.id, "jti", r.JTI, "reason", res.reason)
				if err := p.s.o.Store.RefuseSET(ctx, key, res.reason); err != nil {
					p.s.o.Log.WarnContext(ctx, "cae: record refused SET", "stream_id", ps.id, "err", err)
				}
			default:
				ps.failures++
				p.s.stats.Retried.Add(1)
				wait := backoff(p.s.o.MinBackoff, p.s.o.MaxBackoff, ps.failures)
				if res.retryAfter > wait {
					wait = min(res.retryAfter, p.s.o.MaxBackoff)
				}
				p.s.o.Log.WarnContext(ctx, "cae: push failed; will retry", "stream_id", ps.id, "jti", r.JTI,
					"reason", res.reason, "attempt", ps.failures, "retry_in", wait)
				if err := p.s.o.Store.RecordSETFailure(ctx, key, res.reason); err != nil {
					p.s.o.Log.WarnContext(ctx, "cae: record push failure", "stream_id", ps.id, "err", err)
				}
				finish(wait)
				return
			}
		}
	}
}

// stillEnabled reports whether the stream is enabled for push in the
// store now (currentStream); a stream that cannot be read is treated as
// not enabled (its SETs wait in the queue).
func (p *pusher) stillEnabled(ctx context.Context, id string) bool {
	st, err := p.s.currentStream(ctx, id)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			p.s.o.Log.WarnContext(ctx, "cae: read stream status before a push", "stream_id", id, "err", err)
		}
		return false
	}
	return st.Status == model.StreamEnabled && st.Method == model.DeliveryPush
}

// queueBatch is how many queued SETs the worker reads at a time.
const queueBatch = 32

// takeHints returns the remembered SETs that directly follow the
// stream's cursor, or read true when the queue must be read instead. With
// neither (no hints, nothing else known to be queued) the stream is done.
func (p *pusher) takeHints(ps *pushState) (rows []*store.SETEntry, read bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := ps.hints
	for len(h) > 0 && h[0].Seq <= ps.cursor {
		h = h[1:]
	}
	ps.hints = h
	if ps.needRead || (len(h) > 0 && (h[0].Seq != ps.cursor+1 || ps.cursor == 0)) {
		ps.needRead = false
		return nil, true
	}
	if len(h) == 0 {
		return nil, false
	}
	n := 1
	for n < len(h) && h[n].Seq == h[n-1].Seq+1 {
		n++
	}
	ps.hints = h[n:]
	return h[:n:n], false
}

// backoff is min·2^(failures-1) capped at max, with jitter in [d/2, d].
func backoff(lo, hi time.Duration, failures int) time.Duration {
	d := lo
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + rand.N(d/2+1)
}

type outcome int

const (
	retry outcome = iota
	delivered
	refused
)

type pushResult struct {
	kind       outcome
	reason     string
	retryAfter time.Duration
}

// maxPushResponse bounds how much of a receiver's answer is read.
const maxPushResponse = 64 << 10

// post delivers one SET (RFC 8935 §2): 2xx is delivered (202 is the
// standard answer), 400 refused for good, anything else — network
// errors, 401/403 (a credential problem on the receiver's side must not
// lose events), 404, 429, 5xx — is retried.
func (p *pusher) post(st *stream, e *store.SETEntry) pushResult {
	ctx, cancel := context.WithTimeout(context.Background(), p.s.o.PushTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, st.EndpointURL, strings.NewReader(e.SET))
	if err != nil {
		return pushResult{kind: retry, reason: "bad endpoint URL"}
	}
	req.Header.Set("Content-Type", "application/secevent+jwt")
	req.Header.Set("Accept", "application/json")
	if h := st.authHeader.Reveal(); h != "" {
		req.Header.Set("Authorization", h)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return pushResult{kind: retry, reason: "network: " + netReason(err)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxPushResponse))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return pushResult{kind: delivered}
	case resp.StatusCode == http.StatusBadRequest:
		var e struct {
			Err         string `json:"err"`
			Description string `json:"description"`
		}
		_ = json.Unmarshal(body, &e)
		r := "status 400"
		if e.Err != "" {
			r = truncate(e.Err, 64) + ": " + truncate(e.Description, 256)
		}
		return pushResult{kind: refused, reason: r}
	}
	res := pushResult{kind: retry, reason: "status " + strconv.Itoa(resp.StatusCode)}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if secs, err := strconv.Atoi(strings.TrimSpace(s)); err == nil && secs >= 0 {
			res.retryAfter = time.Duration(min(secs, 3600)) * time.Second
		}
	}
	return res
}

// netReason names a transport failure without the URL (which the
// receiver chose and might embed anything in).
func netReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Op + " failed"
	}
	return "request failed"
}

// runAcks deletes delivered SETs in batches: pushes to many streams
// finish close together, and one transaction for all of them keeps the
// database writer free for new events.
func (p *pusher) runAcks() {
	defer p.acksWG.Done()
	batch := make([]store.SETKey, 0, 512)
	var release []string
	flush := func() {
		if len(batch) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := p.s.o.Store.DeleteSETs(ctx, batch)
			cancel()
			if err != nil {
				// The rows stay queued and are pushed again: at least once.
				p.s.o.Log.Warn("cae: delete delivered SETs", "count", len(batch), "err", err)
			}
			batch = batch[:0]
		}
		if len(release) > 0 {
			p.releaseStreams(release)
			release = nil
		}
	}
	for m := range p.acks {
		if m.release != nil {
			release = m.release
			flush()
			continue
		}
		batch = append(batch, m.key)
	more:
		for len(batch) < cap(batch) {
			select {
			case m, ok := <-p.acks:
				if !ok {
					break more
				}
				if m.release != nil {
					release = m.release
					break more
				}
				batch = append(batch, m.key)
			default:
				break more
			}
		}
		flush()
	}
	flush()
}

// releaseStreams ends this instance's leases on ids (its surplus) and
// wakes the others to take them.
func (p *pusher) releaseStreams(ids []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p.claimMu.Lock()
	err := p.s.o.Store.ReleaseSSFStreams(ctx, p.s.o.InstanceID, ids...)
	p.mu.Lock()
	for _, id := range ids {
		// On an error the leases stay this instance's: a later claim
		// renews them and takes them back.
		delete(p.releasing, id)
	}
	p.mu.Unlock()
	p.claimMu.Unlock()
	if err != nil {
		// They expire instead; the others take them over then.
		p.s.o.Log.Warn("cae: release surplus push streams", "count", len(ids), "err", err)
		return
	}
	p.s.o.Log.Debug("cae: released surplus push streams", "count", len(ids))
	p.announce()
}
