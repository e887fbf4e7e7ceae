package rs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pollTransmitter is an RFC 8936 poll endpoint: it returns unacknowledged
// SETs in order, removes acknowledged ones, records setErrs, and holds a
// request without returnImmediately until an event arrives or its
// long-poll timeout ends.
type pollTransmitter struct {
	mu       sync.Mutex
	queue    []queued
	acked    map[string]bool
	errs     map[string]pollSetErr
	newEv    chan struct{}
	failNext atomic.Int32 // answer 500 this many times
	requests atomic.Int32
	token    string
	longPoll time.Duration
}

type queued struct{ jti, set string }

func newPollTransmitter(token string) *pollTransmitter {
	return &pollTransmitter{acked: map[string]bool{}, errs: map[string]pollSetErr{}, newEv: make(chan struct{}, 1), token: token, longPoll: 200 * time.Millisecond}
}

func (p *pollTransmitter) add(jti, set string) {
	p.mu.Lock()
	p.queue = append(p.queue, queued{jti, set})
	p.mu.Unlock()
	select {
	case p.newEv <- struct{}{}:
	default:
	}
}

func (p *pollTransmitter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.requests.Add(1)
	if r.Header.Get("Authorization") != "Bearer "+p.token {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"err":"authentication_failed","description":"bad token"}`))
		return
	}
	if r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "content type", http.StatusBadRequest)
		return
	}
	var req struct {
		MaxEvents         *int                  `json:"maxEvents"`
		ReturnImmediately bool                  `json:"returnImmediately"`
		Ack               []string              `json:"ack"`
		SetErrs           map[string]pollSetErr `json:"setErrs"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.MaxEvents == nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if p.failNext.Load() > 0 {
		p.failNext.Add(-1)
		http.Error(w, "unavailable", http.StatusInternalServerError)
		return
	}
	p.mu.Lock()
	for _, j := range req.Ack {
		p.acked[j] = true
	}
	for j, e := range req.SetErrs {
		p.errs[j] = e
	}
	drop := func() {
		q := p.queue[:0]
		for _, e := range p.queue {
			if !p.acked[e.jti] && p.errs[e.jti].Err == "" {
				q = append(q, e)
			}
		}
		p.queue = q
	}
	drop()
	if len(p.queue) == 0 && !req.ReturnImmediately && *req.MaxEvents > 0 {
		p.mu.Unlock()
		select {
		case <-p.newEv:
		case <-time.After(p.longPoll):
		case <-r.Context().Done():
		}
		p.mu.Lock()
		drop()
	}
	n := min(*req.MaxEvents, len(p.queue))
	var b bytes.Buffer
	b.WriteString(`{"sets":{`)
	for i, e := range p.queue[:n] {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(e.jti) + ":" + strconv.Quote(e.set))
	}
	b.WriteString(`},"moreAvailable":` + strconv.FormatBool(len(p.queue) > n) + `}`)
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b.Bytes())
}

func (p *pollTransmitter) done() (queued int, errs map[string]pollSetErr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := map[string]pollSetErr{}
	for k, v := range p.errs {
		e[k] = v
	}
	return len(p.queue), e
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// signedSET returns a SET and its jti.
func (f *recvFixture) signedSET(event string, body, subject map[string]any, mods ...func(map[string]any)) (string, string) {
	c := setClaims(f.idp, f.clk.Now(), event, body, subject)
	for _, m := range mods {
		m(c)
	}
	return c["jti"].(string), f.idp.sign("secevent+jwt", c)
}

func TestPollerDeliversAndAcks(t *testing.T) {
	f := newRecvFixture(t)
	tr := newPollTransmitter("poll-token")
	srv := httptest.NewServer(tr)
	defer srv.Close()
	for i := range 5 {
		jti, set := f.signedSET(EventSessionRevoked, nil, sessionSubject("s"+strconv.Itoa(i)))
		tr.add(jti, set)
	}
	badJTI, bad := f.signedSET(EventSessionRevoked, nil, sessionSubject("x"), func(c map[string]any) { c["aud"] = "someone-else" })
	tr.add(badJTI, bad)
	tr.add("mismatched-key", func() string { _, s := f.signedSET(EventSessionRevoked, nil, sessionSubject("y")); return s }())

	var tokenCalls atomic.Int32
	p, err := f.r.NewPoller(PollConfig{
		Endpoint: srv.URL, HTTPClient: srv.Client(), MaxEvents: 2,
		Token: func(context.Context) (string, error) { tokenCalls.Add(1); return "poll-token", nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, "all SETs acknowledged or refused", func() bool { n, _ := tr.done(); return n == 0 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
	if f.state.Len() != 5 {
		t.Fatalf("state holds %d revocations, want 5", f.state.Len())
	}
	_, errs := tr.done()
	if errs[badJTI].Err != SETErrInvalidAudience || errs["mismatched-key"].Err != SETErrInvalidRequest || len(errs) != 2 {
		t.Fatalf("setErrs = %+v", errs)
	}
	// One token per request; the request in flight when Run was cancelled
	// may have fetched its token without reaching the server.
	if calls, reqs := tokenCalls.Load(), tr.requests.Load(); calls < reqs || calls > reqs+1 {
		t.Errorf("token fetched %d times for %d requests", calls, reqs)
	}
}

func TestPollerBacksOffAndRecovers(t *testing.T) {
	f := newRecvFixture(t)
	tr := newPollTransmitter("tok")
	tr.failNext.Store(3)
	srv := httptest.NewServer(tr)
	defer srv.Close()
	jti, set := f.signedSET(EventSessionRevoked, nil, sessionSubject("s1"))
	tr.add(jti, set)
	p, _ := f.r.NewPoller(PollConfig{
		Endpoint: srv.URL, HTTPClient: srv.Client(), MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		Token: func(context.Context) (string, error) { return "tok", nil },
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = p.Run(ctx) }()
	waitFor(t, "delivery after failures", func() bool { n, _ := tr.done(); return n == 0 })
	if tr.requests.Load() < 4 {
		t.Fatalf("only %d requests", tr.requests.Load())
	}
	// A wrong token: the poller keeps retrying rather than giving up.
	p2, _ := f.r.NewPoller(PollConfig{Endpoint: srv.URL, HTTPClient: srv.Client(), Token: func(context.Context) (string, error) { return "wrong", nil }})
	if _, err := p2.Once(ctx, 10, true); err == nil {
		t.Fatal("401 not reported")
	}
}

func TestPollerLongPoll(t *testing.T) {
	f := newRecvFixture(t)
	tr := newPollTransmitter("tok")
	tr.longPoll = 10 * time.Second
	srv := httptest.NewServer(tr)
	defer srv.Close()
	p, _ := f.r.NewPoller(PollConfig{Endpoint: srv.URL, HTTPClient: srv.Client(), Token: func(context.Context) (string, error) { return "tok", nil }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, "the first poll to be held", func() bool { return tr.requests.Load() == 1 })
	jti, set := f.signedSET(EventSessionRevoked, nil, sessionSubject("late"))
	tr.add(jti, set)
	// waitFor's deadline (5 s) is half the long-poll timeout: delivery in
	// time comes from the SET, not from the held poll's end.
	waitFor(t, "the held poll to deliver", func() bool { return f.state.Len() == 1 })
	cancel()
	<-done
	// Cancelling flushed the acknowledgement.
	if n, _ := tr.done(); n != 0 {
		t.Fatalf("%d SETs unacknowledged after shutdown", n)
	}
}

func TestPollerOrderAndDeferral(t *testing.T) {
	f := newRecvFixture(t)
	tr := newPollTransmitter("tok")
	srv := httptest.NewServer(tr)
	defer srv.Close()
	user := map[string]any{"format": "iss_sub", "iss": f.idp.issuer, "sub": "alice"}
	incJTI, inc := f.signedSET(EventAssuranceLevelChange, map[string]any{"namespace": "ward", "current_level": "urn:ward:acr:mfa", "change_direction": "increase"}, user,
		func(c map[string]any) { c["iat"] = f.clk.Now().Add(-2 * time.Second).Unix() })
	decJTI, dec := f.signedSET(EventAssuranceLevelChange, map[string]any{"namespace": "ward", "current_level": "urn:ward:acr:password", "change_direction": "decrease"}, user,
		func(c map[string]any) { c["iat"] = f.clk.Now().Add(-time.Second).Unix() })
	// Delivered newest first: applied oldest first, so the decrease wins.
	tr.add(decJTI, dec)
	tr.add(incJTI, inc)
	p, _ := f.r.NewPoller(PollConfig{Endpoint: srv.URL, HTTPClient: srv.Client(), Token: func(context.Context) (string, error) { return "tok", nil }})
	f.fail.Store(true) // the application cannot take events yet
	res, err := p.Once(context.Background(), 10, true)
	if err != nil || res.Deferred != 2 || res.Applied != 0 {
		t.Fatalf("deferred round: %+v %v", res, err)
	}
	f.fail.Store(false)
	res, err = p.Once(context.Background(), 10, true)
	if err != nil || res.Applied != 2 {
		t.Fatalf("second round: %+v %v", res, err)
	}
	if d := f.state.Check(&TokenInfo{Issuer: f.idp.issuer, Subject: "alice", IssuedAt: f.clk.Now(), ACR: "urn:ward:acr:password"}); d != nil {
		t.Fatalf("the older increase won: %+v", d)
	}
	if _, err := p.Once(context.Background(), 0, true); err != nil {
		t.Fatal(err)
	}
	if n, _ := tr.done(); n != 0 {
		t.Fatalf("%d unacknowledged", n)
	}
}

// TestPollerErrorAnswers: a transmitter's error answer is reported as a
// *PollError with its status and code, read from RFC 8935's "err" (Ward)
// or an OAuth-style "error"; a code that is oversized, not printable or
// not a string is dropped, and nothing of the description is kept (it
// could echo the token). The acknowledgements stay pending.
func TestPollerErrorAnswers(t *testing.T) {
	f := newRecvFixture(t)
	cases := []struct {
		status int
		body   string
		code   string
	}{
		{400, `{"err":"invalid_request","description":"maxEvents must be a non-negative integer"}`, "invalid_request"},
		{401, `{"err":"authentication_failed","description":"secret-tok"}`, "authentication_failed"},
		{403, `{"error":"insufficient_scope","error_description":"secret-tok"}`, "insufficient_scope"},
		{404, `not json secret-tok`, ""},
		{400, `{"err":"` + strings.Repeat("e", 65) + `"}`, ""},
		{400, `{"err":"bad\ncode secret-tok"}`, ""},
		{400, `{"err":7,"error":"server_error"}`, "server_error"},
		{503, ``, ""},
	}
	for _, c := range cases {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(c.status)
			_, _ = w.Write([]byte(c.body))
		}))
		p, _ := f.r.NewPoller(PollConfig{Endpoint: srv.URL, HTTPClient: srv.Client(), Token: func(context.Context) (string, error) { return "secret-tok", nil }})
		p.acks = []string{"j1"}
		_, err := p.Once(context.Background(), 10, true)
		srv.Close()
		var pe *PollError
		if !errors.As(err, &pe) || pe.StatusCode != c.status || pe.Code != c.code {
			t.Errorf("%d %s: error %v, want status %d code %q", c.status, c.body, err, c.status, c.code)
			continue
		}
		if strings.Contains(err.Error(), "secret-tok") || len(err.Error()) > 100 {
			t.Errorf("%d %s: error text %q", c.status, c.body, err)
		}
		if len(p.acks) != 1 {
			t.Errorf("%d: the acknowledgements were dropped after an error", c.status)
		}
	}
}
