package cae

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// Poll limits.
const (
	DefaultPollMaxEvents = 100
	MaxPollEvents        = 1000
	maxAcks              = 10000
)

// PollRequest is an RFC 8936 §2.4 poll request.
type PollRequest struct {
	// MaxEvents is the most SETs to return (nil: DefaultPollMaxEvents; 0:
	// none, only process acknowledgements).
	MaxEvents         *int
	ReturnImmediately bool
	Ack               []string
	// SetErrs maps refused jtis to their error code and description.
	SetErrs map[string]SETError
}

// SETError is a receiver's refusal of one SET (RFC 8936 §2.4.4).
type SETError struct {
	Err         string
	Description string
}

// PollSET is one SET of a poll response.
type PollSET struct {
	JTI string
	SET string
}

// PollResponse is an RFC 8936 poll response: SETs in queue order.
type PollResponse struct {
	Sets          []PollSET
	MoreAvailable bool
}

// Poll serves one poll request for a poll stream of clientID: it applies
// the acknowledgements and errors, then returns up to MaxEvents queued
// SETs. Without ReturnImmediately and with nothing queued it waits up to
// LongPollTimeout, answering as soon as an event is queued (handed the
// SETs of events queued by this instance, woken over NATS by the others
// with a PollNotifier, within RescanInterval otherwise).
// Returned SETs that are not acknowledged are returned again after
// PollHold. A paused or disabled stream returns no SETs.
func (s *Service) Poll(ctx context.Context, clientID, id string, req PollRequest) (*PollResponse, error) {
	if id == "" {
		return nil, invalid("stream_id is required")
	}
	// The stream's current status, from the snapshot when nothing changed
	// since it was loaded (one shared version read, not a stream read per
	// poll).
	st, err := s.currentStream(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && st.ClientID != clientID) {
		return nil, errNoStream
	}
	if err != nil {
		return nil, err
	}
	if st.Method != model.DeliveryPoll {
		return nil, invalid("the stream uses push delivery")
	}
	max := DefaultPollMaxEvents
	if req.MaxEvents != nil {
		max = *req.MaxEvents
	}
	if max < 0 {
		return nil, invalid("maxEvents must not be negative")
	}
	max = min(max, MaxPollEvents)
	if len(req.Ack)+len(req.SetErrs) > maxAcks {
		return nil, invalid("at most %d acknowledgements and errors per request", maxAcks)
	}
	errs := make(map[string]string, len(req.SetErrs))
	for jti, e := range req.SetErrs {
		errs[jti] = truncate(e.Err+": "+e.Description, 512)
	}
	if st.Status != model.StreamEnabled {
		max = 0 // a paused stream holds its SETs; a disabled one has none
	}
	p := store.SETPoll{Ack: req.Ack, Errs: errs, Max: max}
	deadline := s.o.Now().Add(s.o.LongPollTimeout)
	timer := time.NewTimer(s.o.LongPollTimeout)
	defer timer.Stop()
	answer := func(got []*store.SETEntry, more bool) *PollResponse {
		resp := &PollResponse{MoreAvailable: more, Sets: make([]PollSET, len(got))}
		for i, e := range got {
			resp.Sets[i] = PollSET{JTI: e.JTI, SET: e.SET}
		}
		s.stats.Polled.Add(int64(len(got)))
		return resp
	}
	for again := false; ; again = true {
		if again {
			// Paused or disabled (here or by another instance) while
			// this poll waited: it transmits nothing more.
			st, err := s.currentStream(ctx, id)
			if errors.Is(err, store.ErrNotFound) || err == nil && st.Status != model.StreamEnabled {
				return answer(nil, false), nil
			}
			if err != nil {
				return nil, err
			}
		}
		// Register for a wake-up before looking, so an event queued
		// between the look and the wait is not missed.
		woken := s.waiters.wait(id)
		now := s.o.Now()
		p.Now, p.Hold = now, now.Add(s.o.PollHold)
		got, more, err := s.pollStore(ctx, id, p)
		if err != nil {
			return nil, err
		}
		s.stats.Acked.Add(int64(len(p.Ack)))
		p.Ack, p.Errs = nil, nil // applied
		if len(got) > 0 || max == 0 || req.ReturnImmediately || !now.Before(deadline) {
			return answer(got, more), nil
		}
		// Nothing to return: wait, ready to be handed the next SETs
		// queued here (handoff.go).
		pk := s.handOffs.park(id, max)
		s.rescanOnce.Do(func() { go s.runPollRescan() })
		select {
		case h := <-pk.ch:
			if h.sets != nil {
				s.stats.HandedOff.Add(int64(len(h.sets)))
				return answer(h.sets, h.more), nil
			}
			continue
		case <-woken:
		case <-timer.C:
			deadline = time.Time{} // look once more, then answer
		case <-s.closing:
			deadline = time.Time{}
		case <-ctx.Done():
			// Claimed meanwhile: what was handed out comes back after
			// the hold, like a response lost on the way.
			s.handOffs.unpark(pk)
			return nil, ctx.Err()
		}
		if !s.handOffs.unpark(pk) {
			// An enqueue claimed this poll: its store call decides.
			if h := <-pk.ch; h.sets != nil {
				s.stats.HandedOff.Add(int64(len(h.sets)))
				return answer(h.sets, h.more), nil
			}
		}
	}
}

// runPollRescan is the fallback for wake-ups that did not come (SETs
// queued by an instance without NATS or whose signal was lost, held SETs
// whose hold ended): every RescanInterval, one read finds which of the
// streams with waiting long polls have SETs a poll would get, and wakes
// those polls, rather than every poll looking on its own.
func (s *Service) runPollRescan() {
	t := time.NewTicker(s.o.RescanInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.batcherStop:
			return
		}
		ids := s.handOffs.streams()
		if len(ids) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(s.o.RescanInterval, time.Second))
		ready, err := s.o.Store.SSFStreamsWithVisibleSETs(ctx, ids, s.o.Now())
		cancel()
		if err != nil {
			s.o.Log.Warn("cae: long-poll rescan failed; the polls look themselves", "err", err)
			ready = ids
		}
		for _, id := range ready {
			s.waiters.notify(id)
		}
	}
}

// pollCall is one poll waiting for the batcher.
type pollCall struct {
	req  store.SETPollRequest
	done chan pollOut
}

type pollOut struct {
	res store.SETPollResult
	err error
}

// maxPollBatch bounds the polls that share one transaction.
const maxPollBatch = 256

var errClosed = errors.New("cae: transmitter closed")

// pollStore runs one poll through the batcher: polls that arrive while a
// transaction is running share the next one (group commit), so a
// thousand receivers woken by one event cost a few commits, not a
// thousand.
func (s *Service) pollStore(ctx context.Context, id string, p store.SETPoll) ([]*store.SETEntry, bool, error) {
	s.batcherOnce.Do(func() { go s.runPollBatcher() })
	c := &pollCall{req: store.SETPollRequest{StreamID: id, Poll: p}, done: make(chan pollOut, 1)}
	select {
	case s.pollCh <- c:
	case <-s.batcherStop:
		return nil, false, errClosed
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	// Wait for the answer even if ctx ends: the transaction may already
	// have applied the acknowledgements.
	out := <-c.done
	return out.res.Sets, out.res.More, out.err
}

func (s *Service) runPollBatcher() {
	for {
		var first *pollCall
		select {
		case first = <-s.pollCh:
		case <-s.batcherStop:
			return
		}
		batch := []*pollCall{first}
	more:
		for len(batch) < maxPollBatch {
			select {
			case c := <-s.pollCh:
				batch = append(batch, c)
			default:
				break more
			}
		}
		reqs := make([]store.SETPollRequest, len(batch))
		for i, c := range batch {
			reqs[i] = c.req
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := s.o.Store.PollSETsBatch(ctx, reqs)
		cancel()
		for i, c := range batch {
			if err != nil {
				c.done <- pollOut{err: fmt.Errorf("cae: poll: %w", err)}
			} else {
				c.done <- pollOut{res: res[i]}
			}
		}
	}
}
