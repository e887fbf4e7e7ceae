package ssfrx

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/ward-idp/ward/httpauth"
	"github.com/ward-idp/ward/rs"
)

// PushPath is the pattern of Ward's push endpoints: one per receiver.
const PushPath = "POST /ssf/receive/{name}"

// PushHandler is the RFC 8935 endpoint of push receivers
// (POST /ssf/receive/<name>): the transmitter authenticates with the
// bearer token Ward set in the stream's delivery, sends one SET with
// Content-Type application/secevent+jwt, and gets 202 when it is recorded,
// 400 {"err", "description"} when it is refused for good (RFC 8935 §2.3),
// 401 for a wrong token (retried by a transmitter, so a credential change
// loses nothing), 404 for a name that is not a push receiver, and 503
// when it could not be processed now.
func (s *Service) PushHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r := s.byName[req.PathValue("name")]
		if r == nil || r.cfg.Delivery != Push {
			writeErr(w, http.StatusNotFound, invalid("no push receiver of this name"))
			return
		}
		if !r.authorized(req) {
			c := httpauth.Challenge{Scheme: "Bearer", Params: httpauth.ErrorParams("invalid_token", "")}
			w.Header().Set("WWW-Authenticate", c.String())
			writeErr(w, http.StatusUnauthorized, refuse(rs.SETErrAuthenticationFailed, "the request could not be authenticated"))
			return
		}
		if mt, _, err := mime.ParseMediaType(req.Header.Get("Content-Type")); err != nil || mt != "application/secevent+jwt" {
			writeErr(w, http.StatusBadRequest, invalid("Content-Type must be application/secevent+jwt"))
			return
		}
		body, err := io.ReadAll(io.LimitReader(req.Body, MaxSETSize+1))
		if err != nil {
			writeErr(w, http.StatusBadRequest, invalid("cannot read the request body"))
			return
		}
		if len(body) > MaxSETSize {
			s.stats.Received.Add(1)
			s.stats.Refused.Add(1)
			s.log.WarnContext(req.Context(), "ssf receiver: SET refused", "receiver", r.cfg.Name, "err", rs.SETErrInvalidRequest, "description", "too large")
			writeErr(w, http.StatusBadRequest, invalid("SET larger than %d bytes", MaxSETSize))
			return
		}
		// The signal is not the transmitter's request: its event gets no
		// client IP or user agent of the push (the request's origin), and
		// it is recorded even if the transmitter hangs up.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err = r.process(ctx, strings.TrimSpace(string(body)), "")
		var se *rs.SETError
		switch {
		case err == nil:
			w.WriteHeader(http.StatusAccepted)
		case errors.As(err, &se):
			writeErr(w, http.StatusBadRequest, se)
		default:
			w.Header().Set("Retry-After", "5")
			writeErr(w, http.StatusServiceUnavailable, invalid("temporarily unable to process the SET"))
		}
	})
}

// authorized compares the request's bearer token with the one Ward gave
// the transmitter (by hash, in constant time). A mismatch re-reads the
// stored stream at most once a second: another instance, or `ward
// ssf-receiver re-create`, may have set a new token.
func (r *receiver) authorized(req *http.Request) bool {
	hs := req.Header.Values("Authorization")
	if len(hs) != 1 || len(hs[0]) < 8 || !strings.EqualFold(hs[0][:7], "Bearer ") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(hs[0][7:])))
	match := func() bool {
		st := r.current()
		if st == nil {
			return false
		}
		ok := len(st.PushTokenHash) == len(sum) && subtle.ConstantTimeCompare(st.PushTokenHash, sum[:]) == 1
		ok = len(st.PrevPushTokenHash) == len(sum) && subtle.ConstantTimeCompare(st.PrevPushTokenHash, sum[:]) == 1 || ok
		return ok
	}
	if match() {
		return true
	}
	now := r.s.o.Now()
	r.mu.Lock()
	stale := now.Sub(r.reloaded) >= time.Second || now.Before(r.reloaded)
	if stale {
		r.reloaded = now
	}
	r.mu.Unlock()
	if !stale {
		return false
	}
	if _, err := r.load(req.Context()); err != nil {
		return false
	}
	return match()
}

func writeErr(w http.ResponseWriter, status int, e *rs.SETError) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Err         string `json:"err"`
		Description string `json:"description"`
	}{e.Code, e.Description})
}
