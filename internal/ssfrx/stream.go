package ssfrx

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/netguard"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/jws"
	"github.com/ward-idp/ward/rs"
)

// KnownEvents are the event types Ward asks for when a receiver lists
// none: the CAEP and RISC events that speak of users, sessions and
// credentials.
var KnownEvents = []string{
	rs.EventSessionRevoked, rs.EventCredentialChange, rs.EventAssuranceLevelChange, rs.EventDeviceComplianceChange,
	rs.EventRiskLevelChange, rs.EventTokenClaimsChange, rs.EventSessionEstablished, rs.EventSessionPresented,
	rs.EventAccountDisabled, rs.EventAccountEnabled, rs.EventAccountPurged, rs.EventCredentialCompromise,
	rs.EventIdentifierRecycled, rs.EventSessionsRevoked,
}

// receiver is one configured transmitter.
type receiver struct {
	s        *Service
	cfg      ReceiverConfig
	client   *http.Client
	keys     *keySet
	algs     []jws.Algorithm
	algNames string
	audience string
	maxAge   time.Duration
	skew     time.Duration
	pushURL  string

	mu     sync.Mutex
	stream *model.SSFReceiverStream // as stored; nil before the first load
	tc     *transmitterConfig
	// reloaded is when the stored stream was last read because a push
	// token did not match (at most once a second).
	reloaded time.Time
	// verifyState is the state of the verification Ward asked for last.
	verifyState string
}

func newReceiver(s *Service, c ReceiverConfig) *receiver {
	r := &receiver{s: s, cfg: c, audience: c.Audience, maxAge: c.MaxAge, skew: c.ClockSkew}
	for _, a := range c.Algorithms {
		r.algs = append(r.algs, jws.Algorithm(a))
	}
	if len(r.algs) == 0 {
		r.algs = DefaultAlgorithms
	}
	names := make([]string, len(r.algs))
	for i, a := range r.algs {
		names[i] = string(a)
	}
	r.algNames = strings.Join(names, ", ")
	if r.audience == "" {
		r.audience = s.o.Issuer
	}
	if r.maxAge <= 0 {
		r.maxAge = DefaultMaxAge
	}
	if r.skew <= 0 {
		r.skew = DefaultClockSkew
	}
	if r.cfg.Delivery == "" {
		r.cfg.Delivery = Poll
	}
	if len(r.cfg.EventsRequested) == 0 {
		r.cfg.EventsRequested = KnownEvents
	}
	if r.cfg.EmailMap == "" {
		r.cfg.EmailMap = MapEmail
	}
	if r.cfg.Description == "" {
		r.cfg.Description = "Ward " + s.o.Issuer + " (" + c.Name + ")"
	}
	r.pushURL = strings.TrimSuffix(s.o.Issuer, "/") + "/ssf/receive/" + c.Name
	// Transmitter URLs come from the configuration and from the
	// transmitter's own documents: requests go to public addresses only,
	// unless the operator allowed the network (the SSRF guard of pushes).
	r.client = netguard.Guard{Allowed: c.AllowedNetworks, Setting: "ssf_receivers[].allowed_networks"}.Client(s.o.PollTimeout + 10*time.Second)
	r.keys = &keySet{r: r}
	return r
}

func (r *receiver) streamAudience() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stream == nil {
		return nil
	}
	return r.stream.Audience
}

func (r *receiver) current() *model.SSFReceiverStream {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stream
}

func (r *receiver) setStream(st *model.SSFReceiverStream) {
	r.mu.Lock()
	r.stream = st
	r.mu.Unlock()
}

// load reads the stored stream (nil when there is none).
func (r *receiver) load(ctx context.Context) (*model.SSFReceiverStream, error) {
	st, err := r.s.o.Store.GetSSFReceiverStream(ctx, r.cfg.Name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	r.setStream(st)
	// The caller changes its copy and stores it; r.stream is read by the
	// push handler meanwhile and is replaced only by setStream.
	cp := *st
	return &cp, nil
}

// digest identifies what the stream was set up for: a change of any of
// these updates it at the transmitter.
func (r *receiver) digest() string {
	h := sha256.New()
	for _, v := range []string{r.cfg.Issuer, r.cfg.Delivery, r.pushURL, r.cfg.Description, strings.Join(r.cfg.EventsRequested, " ")} {
		h.Write([]byte(v))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// run brings the stream up, retrying with back-off, then polls a poll
// stream until ctx ends.
func (r *receiver) run(ctx context.Context) {
	for failures := 0; ; failures++ {
		if _, err := r.ensure(ctx, false); err == nil {
			break
		} else if ctx.Err() != nil {
			return
		} else {
			wait := backoff(r.s.o.RetryMin, r.s.o.RetryMax, failures+1)
			r.s.log.WarnContext(ctx, "ssf receiver: stream setup failed", "receiver", r.cfg.Name, "err", err, "retry_in", wait)
			r.recordError(ctx, err)
			if !sleep(ctx, wait) {
				return
			}
		}
	}
	if err := r.requestVerification(ctx); err != nil {
		r.s.log.InfoContext(ctx, "ssf receiver: verification not requested", "receiver", r.cfg.Name, "err", err)
	}
	if r.cfg.Delivery == Poll {
		r.poll(ctx)
	}
}

func (r *receiver) recordError(ctx context.Context, cause error) {
	st, err := r.load(ctx)
	if err != nil || st == nil {
		return
	}
	msg := cause.Error()
	if len(msg) > 500 {
		msg = msg[:500]
	}
	st.LastError, st.UpdatedAt = msg, r.s.o.Now()
	_ = r.s.o.Store.PutSSFReceiverStream(ctx, st)
}

// ensure makes Ward's stream at the transmitter match the configuration:
// it reuses the stored stream (updating it when the configuration
// changed), adopts a stream of Ward's the transmitter still has when none
// is stored (a crash between creating and storing one), and creates one
// only when neither exists, so restarts never pile up streams. recreate
// deletes the existing stream first.
func (r *receiver) ensure(ctx context.Context, recreate bool) (*model.SSFReceiverStream, error) {
	tc, err := r.discover(ctx)
	if err != nil {
		return nil, err
	}
	r.keys.setURI(tc.JWKSURI)
	r.mu.Lock()
	r.tc = tc
	r.mu.Unlock()
	st, err := r.load(ctx)
	if err != nil {
		return nil, err
	}
	now := r.s.o.Now()
	if st == nil {
		st = &model.SSFReceiverStream{Name: r.cfg.Name, CreatedAt: now}
	}
	if st.Issuer != "" && st.Issuer != r.cfg.Issuer {
		st.StreamID = "" // another transmitter now: its stream ids mean nothing here
	}
	if recreate && st.StreamID != "" {
		err := r.do(ctx, http.MethodDelete, withQuery(tc.ConfigurationEndpoint, "stream_id", st.StreamID), nil, nil)
		if err != nil && !isStatus(err, http.StatusNotFound) {
			return nil, fmt.Errorf("delete stream: %w", err)
		}
		st.StreamID = ""
	}
	var sc *streamConfig
	if st.StreamID != "" {
		var got streamConfig
		err := r.do(ctx, http.MethodGet, withQuery(tc.ConfigurationEndpoint, "stream_id", st.StreamID), nil, &got)
		switch {
		case err == nil && got.StreamID == st.StreamID:
			sc = &got
		case err == nil || isStatus(err, http.StatusNotFound):
			st.StreamID = "" // gone at the transmitter
		default:
			return nil, fmt.Errorf("read stream: %w", err)
		}
	}
	if sc == nil && !recreate {
		if sc, err = r.adopt(ctx, tc); err != nil {
			return nil, err
		}
	}
	switch {
	case sc == nil:
		if sc, err = r.write(ctx, tc, st, http.MethodPost, ""); err != nil {
			return nil, fmt.Errorf("create stream: %w", err)
		}
		r.s.log.InfoContext(ctx, "ssf receiver: stream created", "receiver", r.cfg.Name, "stream_id", sc.StreamID)
	case st.StreamID != sc.StreamID || st.ConfigDigest != r.digest() || (r.cfg.Delivery == Push && len(st.PushTokenHash) == 0):
		if sc, err = r.write(ctx, tc, st, http.MethodPatch, sc.StreamID); err != nil {
			return nil, fmt.Errorf("update stream: %w", err)
		}
		r.s.log.InfoContext(ctx, "ssf receiver: stream updated", "receiver", r.cfg.Name, "stream_id", sc.StreamID)
	}
	if sc.Iss != "" && sc.Iss != r.cfg.Issuer {
		return nil, fmt.Errorf("the stream's iss %q is not the configured issuer", sc.Iss)
	}
	st.Issuer, st.StreamID, st.Audience, st.EventsDelivered = r.cfg.Issuer, sc.StreamID, sc.audiences(), sc.EventsDelivered
	st.Delivery, st.EndpointURL = model.DeliveryPoll, sc.Delivery.EndpointURL
	if r.cfg.Delivery == Push {
		st.Delivery, st.EndpointURL = model.DeliveryPush, r.pushURL
	}
	st.ConfigDigest, st.LastError, st.UpdatedAt = r.digest(), "", r.s.o.Now()
	if r.cfg.Delivery == Poll && st.EndpointURL == "" {
		return nil, errors.New("the transmitter gave no poll endpoint_url")
	}
	if tc.StatusEndpoint != "" {
		var status struct {
			Status string `json:"status"`
			Reason string `json:"reason"`
		}
		if err := r.do(ctx, http.MethodGet, withQuery(tc.StatusEndpoint, "stream_id", st.StreamID), nil, &status); err == nil {
			st.Status, st.StatusReason = bounded(status.Status, 32), bounded(status.Reason, 256)
		}
	}
	if err := r.s.o.Store.PutSSFReceiverStream(ctx, st); err != nil {
		return nil, err
	}
	r.setStream(st)
	return st, nil
}

// adopt finds a stream of this receiver the transmitter holds although
// none is stored: the same push endpoint, or for poll the same
// description.
func (r *receiver) adopt(ctx context.Context, tc *transmitterConfig) (*streamConfig, error) {
	var list []streamConfig
	err := r.do(ctx, http.MethodGet, tc.ConfigurationEndpoint, nil, &list)
	if err != nil {
		if isStatus(err, http.StatusNotFound) {
			return nil, nil
		}
		var one streamConfig // a transmitter with one stream per receiver
		if err2 := r.do(ctx, http.MethodGet, tc.ConfigurationEndpoint, nil, &one); err2 == nil && one.StreamID != "" {
			list = []streamConfig{one}
		} else {
			return nil, fmt.Errorf("list streams: %w", err)
		}
	}
	for i := range list {
		sc := &list[i]
		switch {
		case r.cfg.Delivery == Push && sc.Delivery.Method == model.DeliveryPush && sc.Delivery.EndpointURL == r.pushURL:
			return sc, nil
		case r.cfg.Delivery == Poll && sc.Delivery.Method == model.DeliveryPoll && sc.Description == r.cfg.Description:
			return sc, nil
		}
	}
	return nil, nil
}

// write creates (POST) or updates (PATCH) the stream. A push stream gets
// a fresh bearer token for Ward's push endpoint: its hash is stored
// before the transmitter has it (the previous one stays valid until the
// transmitter confirmed the new one), so no push is refused meanwhile.
func (r *receiver) write(ctx context.Context, tc *transmitterConfig, st *model.SSFReceiverStream, method, id string) (*streamConfig, error) {
	body := map[string]any{"events_requested": r.cfg.EventsRequested, "description": r.cfg.Description}
	if id != "" {
		body["stream_id"] = id
	}
	var token string
	if r.cfg.Delivery == Push {
		var b [32]byte
		_, _ = rand.Read(b[:])
		token = base64.RawURLEncoding.EncodeToString(b[:])
		sum := sha256.Sum256([]byte(token))
		if !slices.Equal(st.PushTokenHash, sum[:]) {
			st.PrevPushTokenHash, st.PushTokenHash = st.PushTokenHash, sum[:]
		}
		st.UpdatedAt = r.s.o.Now()
		if st.Issuer == "" {
			st.Issuer = r.cfg.Issuer
		}
		if err := r.s.o.Store.PutSSFReceiverStream(ctx, st); err != nil {
			return nil, err
		}
		r.setStream(st)
		body["delivery"] = delivery{Method: model.DeliveryPush, EndpointURL: r.pushURL, AuthorizationHeader: "Bearer " + token}
	} else {
		body["delivery"] = delivery{Method: model.DeliveryPoll}
	}
	var sc streamConfig
	if err := r.do(ctx, method, tc.ConfigurationEndpoint, body, &sc); err != nil {
		return nil, err
	}
	if sc.StreamID == "" {
		return nil, errors.New("the transmitter answered without a stream_id")
	}
	if r.cfg.Delivery == Push {
		st.PrevPushTokenHash = nil // the transmitter has the new token
	}
	return &sc, nil
}

// requestVerification asks the transmitter to send a verification event
// (SSF 1.0 §8.1.4.2); its arrival is recorded as the stream's VerifiedAt.
func (r *receiver) requestVerification(ctx context.Context) error {
	r.mu.Lock()
	tc, st := r.tc, r.stream
	r.mu.Unlock()
	if tc == nil || st == nil || st.StreamID == "" {
		return errors.New("no stream yet")
	}
	if tc.VerificationEndpoint == "" {
		return errors.New("the transmitter has no verification endpoint")
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	state := hex.EncodeToString(b[:])
	r.mu.Lock()
	r.verifyState = state
	r.mu.Unlock()
	return r.do(ctx, http.MethodPost, tc.VerificationEndpoint, map[string]string{"stream_id": st.StreamID, "state": state}, nil)
}

// liveStatus reads the stream's status at the transmitter.
func (r *receiver) liveStatus(ctx context.Context) (status, reason string, err error) {
	tc, err := r.discover(ctx)
	if err != nil {
		return "", "", err
	}
	st, err := r.load(ctx)
	if err != nil {
		return "", "", err
	}
	if st == nil || st.StreamID == "" {
		return "", "", errors.New("no stream yet")
	}
	if tc.StatusEndpoint == "" {
		return "", "", errors.New("the transmitter has no status endpoint")
	}
	var out struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
	}
	if err := r.do(ctx, http.MethodGet, withQuery(tc.StatusEndpoint, "stream_id", st.StreamID), nil, &out); err != nil {
		return "", "", err
	}
	return bounded(out.Status, 32), bounded(out.Reason, 256), nil
}

// bounded cuts s to n bytes (at a rune boundary) and drops control
// characters: text from another system, kept in Ward's records.
func bounded(s string, n int) string {
	s = strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f || c == '\uFFFD' {
			return -1
		}
		return c
	}, s)
	if len(s) <= n {
		return s
	}
	for n > 0 && (s[n]&0xC0) == 0x80 {
		n--
	}
	return s[:n]
}
