package ssfrx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ward-idp/ward/jsonobj"
	"github.com/ward-idp/ward/rs"
)

// Poll requests.
const (
	pollMaxEvents   = 100
	maxPollResponse = 16 << 20
)

type setErr struct {
	Err         string `json:"err"`
	Description string `json:"description"`
}

// poller holds the acknowledgements and errors the next poll request
// carries (RFC 8936 §2.4): a SET is acknowledged only after its signal
// was committed, so a crash before the acknowledgement makes the
// transmitter deliver it again (then acknowledged as a duplicate: at least
// once, recorded once).
type poller struct {
	r       *receiver
	acks    []string
	setErrs map[string]setErr
}

// poll long-polls the stream until ctx ends, then sends the pending
// acknowledgements once more.
func (r *receiver) poll(ctx context.Context) {
	p := &poller{r: r, setErrs: map[string]setErr{}}
	failures := 0
	for ctx.Err() == nil {
		more, err := p.once(ctx, pollMaxEvents)
		switch {
		case ctx.Err() != nil:
		case err != nil:
			failures++
			wait := backoff(r.s.o.RetryMin, r.s.o.RetryMax, failures)
			r.s.log.WarnContext(ctx, "ssf receiver: poll failed", "receiver", r.cfg.Name, "err", err, "retry_in", wait)
			if failures >= 3 && (isStatus(err, http.StatusNotFound) || isStatus(err, http.StatusBadRequest)) {
				// The stream is gone or changed at the transmitter: set it
				// up again.
				if _, err := r.ensure(ctx, false); err != nil {
					r.recordError(ctx, err)
				}
			}
			sleep(ctx, wait)
		default:
			failures = 0
			if !more && len(p.acks) == 0 && len(p.setErrs) == 0 {
				// An empty answer of a long poll: ask again at once; of a
				// transmitter that answers at once, after a second.
				sleep(ctx, 0)
			}
		}
	}
	if len(p.acks) > 0 || len(p.setErrs) > 0 {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if _, err := p.once(fctx, 0); err != nil {
			r.s.log.Warn("ssf receiver: final acknowledgement failed", "receiver", r.cfg.Name, "err", err)
		}
		cancel()
	}
}

// once sends one poll request with the pending acknowledgements and
// processes the SETs of the answer; it reports whether more are waiting.
func (p *poller) once(ctx context.Context, maxEvents int) (bool, error) {
	r := p.r
	st := r.current()
	if st == nil || st.EndpointURL == "" {
		return false, errors.New("no poll endpoint")
	}
	body, err := json.Marshal(struct {
		MaxEvents         int               `json:"maxEvents"`
		ReturnImmediately bool              `json:"returnImmediately"`
		Ack               []string          `json:"ack,omitempty"`
		SetErrs           map[string]setErr `json:"setErrs,omitempty"`
	}{maxEvents, maxEvents == 0, p.acks, p.setErrs})
	if err != nil {
		return false, err
	}
	rctx, cancel := context.WithTimeout(ctx, r.s.o.PollTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, st.EndpointURL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	auth, err := r.cfg.Credentials(rctx)
	if err != nil {
		return false, fmt.Errorf("credentials: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", auth)
	resp, err := r.client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxPollResponse+1))
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		// RFC 8936 §2.5.1 leaves the body open: RFC 8935's "err" (Ward's
		// transmitter), else an OAuth-style "error"; only the code is kept.
		var pe *rs.PollError
		errors.As(rs.ParsePollError(resp.StatusCode, data), &pe)
		return false, &httpError{status: resp.StatusCode, code: pe.Code}
	}
	// The transmitter has the acknowledgements now.
	p.acks, p.setErrs = nil, map[string]setErr{}
	if len(data) > maxPollResponse {
		return false, errors.New("poll answer too large")
	}
	top, err := jsonobj.Parse(data, nil)
	if err != nil {
		return false, errors.New("poll answer is not a JSON object")
	}
	more := string(top.Get("moreAvailable")) == "true"
	setsRaw := top.Get("sets")
	if setsRaw == nil {
		return more, errors.New("poll answer without sets")
	}
	sets, err := jsonobj.Parse(setsRaw, nil) // the transmitter's order
	if err != nil {
		return more, errors.New("sets is not a JSON object")
	}
	for _, m := range sets {
		compact, ok := jsonobj.Unquote(m.Raw)
		if !ok {
			p.refuse(m.Name, invalid("the SET is not a string"))
			continue
		}
		err := r.process(ctx, compact, m.Name)
		var se *rs.SETError
		switch {
		case err == nil:
			p.acks = append(p.acks, m.Name)
		case errors.As(err, &se):
			p.refuse(m.Name, se)
		default:
			// Neither acknowledged nor refused: delivered again after the
			// transmitter's hold.
		}
	}
	return more, nil
}

func (p *poller) refuse(jti string, e *rs.SETError) {
	if len(jti) > maxJTI {
		return // not an id Ward can name back
	}
	p.setErrs[jti] = setErr{Err: e.Code, Description: e.Description}
}
