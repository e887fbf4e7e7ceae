package rs

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"
)

// Defaults for PollConfig fields left zero.
const (
	DefaultPollMaxEvents      = 100
	DefaultPollInterval       = 5 * time.Second
	DefaultPollRequestTimeout = 2 * time.Minute
	DefaultPollMinBackoff     = time.Second
	DefaultPollMaxBackoff     = 5 * time.Minute
)

// maxPollResponse bounds a poll response body.
const maxPollResponse = 16 << 20

// PollConfig configures a Poller. Endpoint and Token are required.
type PollConfig struct {
	// Endpoint is the stream's poll URL (delivery.endpoint_url).
	Endpoint string
	// Token returns the access token for Endpoint; it is called for every
	// request, so it should cache and refresh (an oauth2.TokenSource
	// wrapped in a func works).
	Token func(ctx context.Context) (string, error)
	// TokenType is the Authorization scheme ("Bearer" if empty). For
	// "DPoP", give HTTPClient a dpop.Transport.
	TokenType string
	// HTTPClient sends the requests (http.DefaultClient if nil).
	HTTPClient *http.Client
	// MaxEvents is the most SETs asked for per request
	// (DefaultPollMaxEvents if zero).
	MaxEvents int
	// ReturnImmediately asks the transmitter not to hold the request
	// (RFC 8936 §2.4); then Interval separates empty polls. By default
	// the poller long-polls: the transmitter answers when it has events
	// or its own timeout ends.
	ReturnImmediately bool
	Interval          time.Duration
	// RequestTimeout bounds one request including the long-poll wait
	// (DefaultPollRequestTimeout if zero); keep it above the
	// transmitter's long-poll timeout.
	RequestTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait after a failed request
	// (exponential with jitter).
	MinBackoff, MaxBackoff time.Duration
	// Logger receives request failures (nil logs nothing).
	Logger *slog.Logger
}

// Poller fetches SETs from an RFC 8936 poll endpoint, applies them with a
// Receiver and acknowledges them in its next request. SETs that are
// refused are reported in setErrs; SETs that could not be processed for a
// temporary reason are neither acknowledged nor reported, so the
// transmitter delivers them again. A Poller is not safe for concurrent
// use: run one Run (or Once at a time) per stream.
type Poller struct {
	r   *Receiver
	cfg PollConfig

	acks    []string
	setErrs map[string]pollSetErr
}

type pollSetErr struct {
	Err         string `json:"err"`
	Description string `json:"description"`
}

// PollResult is the outcome of one poll request.
type PollResult struct {
	Received      int // SETs in the response
	Applied       int // SETs applied (or already applied)
	Refused       int // SETs reported in setErrs
	Deferred      int // SETs left for redelivery
	MoreAvailable bool
}

// NewPoller returns a Poller that applies SETs with r.
func (r *Receiver) NewPoller(cfg PollConfig) (*Poller, error) {
	if cfg.Endpoint == "" || cfg.Token == nil {
		return nil, errors.New("rs: poller needs Endpoint and Token")
	}
	if cfg.TokenType == "" {
		cfg.TokenType = "Bearer"
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = DefaultPollMaxEvents
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultPollInterval
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultPollRequestTimeout
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultPollMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultPollMaxBackoff
	}
	return &Poller{r: r, cfg: cfg, setErrs: map[string]pollSetErr{}}, nil
}

// Run polls until ctx ends, then sends the pending acknowledgements once
// more (with a short timeout of its own) and returns ctx.Err().
func (p *Poller) Run(ctx context.Context) error {
	var failures int
	for ctx.Err() == nil {
		res, err := p.Once(ctx, p.cfg.MaxEvents, p.cfg.ReturnImmediately)
		wait := time.Duration(0)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				break
			}
			failures++
			wait = backoff(p.cfg.MinBackoff, p.cfg.MaxBackoff, failures)
			if p.cfg.Logger != nil {
				p.cfg.Logger.WarnContext(ctx, "rs: SET poll failed", "err", err, "retry_in", wait)
			}
		default:
			failures = 0
			switch {
			case res.MoreAvailable || len(p.acks) > 0 || len(p.setErrs) > 0:
				// Fetch the rest, or deliver the acks, at once.
			case res.Deferred > 0:
				wait = p.cfg.MinBackoff
			case p.cfg.ReturnImmediately:
				wait = p.cfg.Interval
			}
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
	}
	if len(p.acks) > 0 || len(p.setErrs) > 0 {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, err := p.Once(fctx, 0, true)
		cancel()
		if err != nil && p.cfg.Logger != nil {
			p.cfg.Logger.Warn("rs: final SET acknowledgement failed", "err", err)
		}
	}
	return ctx.Err()
}

func backoff(lo, hi time.Duration, failures int) time.Duration {
	d := lo
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	// Full jitter in [d/2, d): receivers that failed together do not all
	// come back at the same instant.
	return d/2 + rand.N(d/2+1)
}

// Once sends one poll request carrying the pending acknowledgements and
// errors, asks for up to maxEvents SETs, and processes what comes back.
// The acknowledgements are dropped from the queue only when the request
// succeeded.
func (p *Poller) Once(ctx context.Context, maxEvents int, returnImmediately bool) (PollResult, error) {
	var res PollResult
	reqBody := struct {
		MaxEvents         int                   `json:"maxEvents"`
		ReturnImmediately bool                  `json:"returnImmediately"`
		Ack               []string              `json:"ack,omitempty"`
		SetErrs           map[string]pollSetErr `json:"setErrs,omitempty"`
	}{maxEvents, returnImmediately, p.acks, p.setErrs}
	body, err := json.Marshal(reqBody)
	if err != nil {
		return res, err
	}
	rctx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
	defer cancel()
	tok, err := p.cfg.Token(rctx)
	if err != nil {
		return res, fmt.Errorf("rs: poll token: %w", err)
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, p.cfg.Endpoint, bytes.NewReader(body))
	if err != nil {
		return res, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", p.cfg.TokenType+" "+tok)
	resp, err := p.cfg.HTTPClient.Do(req)
	if err != nil {
		return res, fmt.Errorf("rs: poll: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxPollResponse+1))
	if err != nil {
		return res, fmt.Errorf("rs: poll: read: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return res, pollError(resp.StatusCode, data)
	}
	if len(data) > maxPollResponse {
		return res, errors.New("rs: poll: response too large")
	}
	// The transmitter has the acknowledgements and errors now.
	p.acks, p.setErrs = nil, map[string]pollSetErr{}

	top, err := parseObject(data)
	if err != nil {
		return res, errors.New("rs: poll: response is not a JSON object")
	}
	if raw := top.Get("moreAvailable"); raw != nil {
		res.MoreAvailable = string(raw) == "true"
	}
	setsRaw := top.Get("sets")
	if setsRaw == nil {
		return res, errors.New("rs: poll: response without sets")
	}
	sets, err := parseObject(setsRaw) // keeps the transmitter's order
	if err != nil {
		return res, errors.New("rs: poll: sets is not a JSON object")
	}
	res.Received = len(sets)

	type verified struct {
		jti string
		set *SET
	}
	var ok []verified
	for _, m := range sets {
		compact, isStr := unquote(m.Raw)
		if !isStr {
			p.refuse(&res, m.Name, badSET("the SET is not a string"))
			continue
		}
		set, err := p.r.Verify(ctx, compact)
		var se *SETError
		switch {
		case errors.As(err, &se):
			p.r.logRefused(ctx, err)
			p.refuse(&res, m.Name, se)
		case err != nil:
			p.r.logRefused(ctx, err)
			res.Deferred++
		case set.JTI != m.Name:
			p.refuse(&res, m.Name, badSET("the SET's jti differs from its key in sets"))
		default:
			ok = append(ok, verified{m.Name, set})
		}
	}
	// Apply in issue order, so a later event about a subject wins over
	// an earlier one delivered in the same response.
	slices.SortStableFunc(ok, func(a, b verified) int { return cmp.Compare(a.set.IssuedAt.Unix(), b.set.IssuedAt.Unix()) })
	for _, v := range ok {
		if _, err := p.r.apply(ctx, v.set); err != nil {
			p.r.logRefused(ctx, err)
			res.Deferred++
			continue
		}
		p.acks = append(p.acks, v.jti)
		res.Applied++
	}
	return res, nil
}

// PollError is a transmitter's non-200 answer to a poll request. RFC 8936
// §2.5.1 leaves its body open; Code is the RFC 8935 §2.3 "err" of a
// {"err", "description"} body (Ward's), or the "error" of an OAuth-style
// one, cut to 64 printable ASCII characters. The description is not kept:
// it is the transmitter's text, of any size, and could echo a credential.
type PollError struct {
	StatusCode int
	Code       string
}

func (e *PollError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("rs: poll: status %d", e.StatusCode)
	}
	return fmt.Sprintf("rs: poll: status %d (%s)", e.StatusCode, e.Code)
}

// ParsePollError reads a transmitter's non-200 poll answer (status and
// body) as a *PollError.
func ParsePollError(status int, body []byte) error { return pollError(status, body) }

func pollError(status int, body []byte) *PollError {
	var e struct {
		Err   any `json:"err"`
		Error any `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	code, _ := e.Err.(string)
	if code == "" {
		code, _ = e.Error.(string)
	}
	return &PollError{StatusCode: status, Code: errorCode(code)}
}

// errorCode keeps an error code fit for a log line: printable ASCII
// without quotes, at most 64 bytes; anything else is dropped whole.
func errorCode(c string) string {
	if len(c) > 64 {
		return ""
	}
	for i := 0; i < len(c); i++ {
		if c[i] <= ' ' || c[i] > '~' || c[i] == '"' || c[i] == '\\' {
			return ""
		}
	}
	return c
}

func (p *Poller) refuse(res *PollResult, jti string, e *SETError) {
	p.setErrs[jti] = pollSetErr{Err: e.Code, Description: e.Description}
	res.Refused++
}
