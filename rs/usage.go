package rs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// Usage results.
const (
	ResultAllowed  = "allowed"
	ResultRejected = "rejected"
)

// Defaults for UsageConfig fields left zero.
const (
	DefaultUsageFlushInterval = time.Second
	DefaultUsageMaxBatch      = 100
	DefaultUsageMaxBuffered   = 10000
	DefaultUsageMaxBackoff    = time.Minute
)

// maxUserAgent bounds the user agent kept per record, so buffered records
// have a bounded size.
const maxUserAgent = 256

// Proof statuses of a usage record: what the request proved about the key
// its token is bound to.
const (
	// ProofOK: a valid DPoP proof by the token's key.
	ProofOK = "ok"
	// ProofMissing: a bound token without a proof (or with the Bearer
	// scheme).
	ProofMissing = "missing"
	// ProofWrongKey: a proof whose signature holds, by another key than
	// the token's (JKT is that key): a copied token.
	ProofWrongKey = "wrong_key"
	// ProofInvalid: a proof that was refused (malformed, bad signature,
	// replayed, stale, for another request).
	ProofInvalid = "invalid"
	// ProofNone: the token is not bound; no proof was needed.
	ProofNone = "none"
)

// UsageRecord is one use of an access token at this resource, as reported
// to the IdP's risk engine, or Count uses of one token from one context
// (client IP, user agent, proof key) with one result within one flush
// window. It never holds the token or the proof: only identifiers and
// request metadata.
type UsageRecord struct {
	// Time is when the (first) use happened.
	Time      time.Time `json:"time"`
	TokenID   string    `json:"jti,omitempty"`
	SessionID string    `json:"sid,omitempty"`
	Subject   string    `json:"sub,omitempty"`
	ClientID  string    `json:"client_id,omitempty"`
	DeviceID  string    `json:"did,omitempty"`
	// JKT is the thumbprint of the key that made the request's DPoP proof
	// (known when its signature held) and BoundJKT that of the key the
	// token is bound to (cnf.jkt).
	JKT       string `json:"jkt,omitempty"`
	BoundJKT  string `json:"bound_jkt,omitempty"`
	Proof     string `json:"proof,omitempty"` // a Proof… status
	Audience  string `json:"aud,omitempty"`
	ClientIP  string `json:"client_ip,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
	Result    string `json:"result"`           // ResultAllowed or ResultRejected
	Reason    string `json:"reason,omitempty"` // rejection reason code
	// Count is how many uses the record stands for (0 or absent: one).
	Count int `json:"count,omitempty"`
}

// usageKey is what makes two records the same use: everything but the
// time and the count.
func usageKey(r UsageRecord) UsageRecord {
	r.Time, r.Count = time.Time{}, 0
	return r
}

// UsageConfig configures a UsageReporter.
type UsageConfig struct {
	// Endpoint receives POSTs of {"records": [...], "dropped": n}.
	Endpoint string
	// Token returns the access token for Endpoint (called for every
	// POST; cache and refresh it there).
	Token func(ctx context.Context) (string, error)
	// TokenType is the Authorization scheme ("Bearer" if empty). For
	// "DPoP", give HTTPClient a dpop.Transport.
	TokenType string
	// HTTPClient sends the reports (http.DefaultClient if nil).
	HTTPClient *http.Client
	// FlushInterval: a batch is sent at most this long after its first
	// record (DefaultUsageFlushInterval if zero) ...
	FlushInterval time.Duration
	// MaxBatch: ... or as soon as this many records wait
	// (DefaultUsageMaxBatch if zero); no POST holds more.
	MaxBatch int
	// MaxBuffered bounds the records kept while the IdP is unreachable
	// (DefaultUsageMaxBuffered if zero); beyond it the oldest are
	// dropped and counted.
	MaxBuffered int
	// MaxBackoff caps the wait between failed POSTs
	// (DefaultUsageMaxBackoff if zero).
	MaxBackoff time.Duration
	// Logger receives send failures (nil logs nothing).
	Logger *slog.Logger
}

// UsageStats are counters of a UsageReporter.
type UsageStats struct {
	Buffered int    // records waiting
	Sent     uint64 // records the IdP accepted
	Dropped  uint64 // records dropped because the buffer was full
	Failures uint64 // failed POSTs
	// Merged counts uses added to a waiting record of the same token,
	// context and result instead of taking a record of their own.
	Merged uint64
}

// UsageReporter batches usage records and POSTs them to the IdP in the
// background. Report never blocks; memory is bounded by MaxBuffered.
type UsageReporter struct {
	cfg UsageConfig

	mu      sync.Mutex
	buf     []UsageRecord // ring buffer of MaxBuffered
	head, n int
	headSeq uint64 // sequence number of buf[head]
	unsent  uint64 // drops not yet reported to the IdP
	// index finds the waiting record of a use (its sequence number), to
	// merge a repeat into it; records from sendingEnd back are in a POST
	// and take no more merges.
	index      map[UsageRecord]uint64
	sendingEnd uint64
	stats      UsageStats
	closed     bool
	wake       chan struct{}
	done       chan struct{}
	stopOnce   sync.Once
	stop       chan struct{}
	ctx        context.Context
	cancel     context.CancelFunc
}

// NewUsageReporter starts a reporter; stop it with Close.
func NewUsageReporter(cfg UsageConfig) (*UsageReporter, error) {
	if cfg.Endpoint == "" || cfg.Token == nil {
		return nil, errors.New("rs: usage reporter needs Endpoint and Token")
	}
	if cfg.TokenType == "" {
		cfg.TokenType = "Bearer"
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = DefaultUsageFlushInterval
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultUsageMaxBatch
	}
	if cfg.MaxBuffered <= 0 {
		cfg.MaxBuffered = DefaultUsageMaxBuffered
	}
	if cfg.MaxBuffered < cfg.MaxBatch {
		cfg.MaxBuffered = cfg.MaxBatch
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultUsageMaxBackoff
	}
	u := &UsageReporter{
		cfg:   cfg,
		buf:   make([]UsageRecord, cfg.MaxBuffered),
		index: make(map[UsageRecord]uint64),
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
		stop:  make(chan struct{}),
	}
	u.ctx, u.cancel = context.WithCancel(context.Background())
	go u.run()
	return u, nil
}

// Report queues rec without blocking. A use of the same token from the
// same context with the same result as a record still waiting (not yet
// in a POST) is merged into it: its Count grows, so that a busy resource
// reports one record per token and context per flush window instead of
// one per request. When the buffer is full the oldest record is dropped.
func (u *UsageReporter) Report(rec UsageRecord) {
	if len(rec.UserAgent) > maxUserAgent {
		rec.UserAgent = rec.UserAgent[:maxUserAgent]
	}
	uses := max(rec.Count, 1)
	key := usageKey(rec)
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		return
	}
	if seq, ok := u.index[key]; ok && seq >= u.sendingEnd && seq >= u.headSeq {
		r := &u.buf[(u.head+int(seq-u.headSeq))%len(u.buf)]
		r.Count = max(r.Count, 1) + uses
		u.stats.Merged += uint64(uses)
		u.mu.Unlock()
		return
	}
	if u.n == len(u.buf) {
		u.forget(u.headSeq, u.buf[u.head])
		u.buf[u.head] = UsageRecord{}
		u.head = (u.head + 1) % len(u.buf)
		u.n--
		u.headSeq++
		u.stats.Dropped++
		u.unsent++
	}
	u.buf[(u.head+u.n)%len(u.buf)] = rec
	u.index[key] = u.headSeq + uint64(u.n)
	u.n++
	full := u.n >= u.cfg.MaxBatch
	u.mu.Unlock()
	if full {
		select {
		case u.wake <- struct{}{}:
		default:
		}
	}
}

// forget removes record rec of sequence number seq from the index (u.mu
// held).
func (u *UsageReporter) forget(seq uint64, rec UsageRecord) {
	key := usageKey(rec)
	if s, ok := u.index[key]; ok && s == seq {
		delete(u.index, key)
	}
}

// Stats returns the current counters.
func (u *UsageReporter) Stats() UsageStats {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.stats
	s.Buffered = u.n
	return s
}

// Close stops accepting records, tries to send what is buffered until ctx
// ends, and stops the reporter.
func (u *UsageReporter) Close(ctx context.Context) error {
	u.mu.Lock()
	u.closed = true
	u.mu.Unlock()
	u.stopOnce.Do(func() { close(u.stop) })
	select {
	case <-u.done:
		return nil
	case <-ctx.Done():
		u.cancel()
		<-u.done
		return ctx.Err()
	}
}

func (u *UsageReporter) run() {
	defer close(u.done)
	defer u.cancel()
	backoff := time.Duration(0)
	timer := time.NewTimer(u.cfg.FlushInterval)
	defer timer.Stop()
	stopping := false
	for {
		if !stopping {
			select {
			case <-timer.C:
			case <-u.wake:
				if backoff > 0 {
					continue // the timer runs the retry
				}
				u.mu.Lock()
				full := u.n >= u.cfg.MaxBatch
				u.mu.Unlock()
				if !full {
					// A stale wake: Report signals every record past a full
					// batch, and the batch it announced has left. The
					// remainder waits for the interval.
					continue
				}
			case <-u.stop:
				stopping = true
			}
		}
		err := u.flush()
		u.mu.Lock()
		left := u.n
		u.mu.Unlock()
		if stopping {
			if left == 0 || u.ctx.Err() != nil {
				return
			}
			if err != nil {
				select {
				case <-time.After(min(u.cfg.FlushInterval, time.Second)):
				case <-u.ctx.Done():
					return
				}
			}
			continue
		}
		next := u.cfg.FlushInterval
		if err != nil {
			backoff = max(backoff*2, u.cfg.FlushInterval)
			backoff = min(backoff, u.cfg.MaxBackoff)
			next = backoff
			if u.cfg.Logger != nil {
				u.cfg.Logger.Warn("rs: usage report failed", "err", err, "retry_in", backoff)
			}
		} else {
			backoff = 0
			if left >= u.cfg.MaxBatch {
				next = 0 // more full batches waiting
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// flush sends one batch of up to MaxBatch records.
func (u *UsageReporter) flush() error {
	u.mu.Lock()
	k := min(u.n, u.cfg.MaxBatch)
	dropped := u.unsent
	if k == 0 && dropped == 0 {
		u.mu.Unlock()
		return nil
	}
	batch := make([]UsageRecord, k)
	for i := range k {
		batch[i] = u.buf[(u.head+i)%len(u.buf)]
	}
	start := u.headSeq
	// What is copied into the POST takes no more merges: a repeat now
	// starts a record of its own.
	u.sendingEnd = start + uint64(k)
	u.mu.Unlock()

	err := u.post(batch, dropped)

	u.mu.Lock()
	defer u.mu.Unlock()
	if err != nil {
		u.stats.Failures++
		u.sendingEnd = start // the batch waits again and takes merges
		return err
	}
	u.stats.Sent += uint64(k)
	u.unsent -= dropped
	// Remove what was sent, unless newer drops already pushed it out.
	end := start + uint64(k)
	for u.headSeq < end && u.n > 0 {
		u.forget(u.headSeq, u.buf[u.head])
		u.buf[u.head] = UsageRecord{}
		u.head = (u.head + 1) % len(u.buf)
		u.n--
		u.headSeq++
	}
	return nil
}

func (u *UsageReporter) post(batch []UsageRecord, dropped uint64) error {
	body, err := json.Marshal(struct {
		Records []UsageRecord `json:"records"`
		Dropped uint64        `json:"dropped"`
	}{batch, dropped})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(u.ctx, 30*time.Second)
	defer cancel()
	tok, err := u.cfg.Token(ctx)
	if err != nil {
		return fmt.Errorf("usage token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.cfg.Endpoint, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", u.cfg.TokenType+" "+tok)
	resp, err := u.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("usage endpoint answered %d", resp.StatusCode)
	}
	return nil
}
