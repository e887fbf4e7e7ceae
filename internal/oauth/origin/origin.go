// Package origin is the origin of a request as Ward's events and error
// pages record it: the client IP under the trusted-proxy rule
// (rs.ClientIP), the user agent, and a correlation id that the response,
// the log and the user-facing error page share.
package origin

import (
	"context"
	"net/http"
	"net/netip"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/rs"
)

// Info is what every event records about the request.
type Info struct {
	IP        string
	UserAgent string
	CorrID    string
}

// Of returns the origin of r; trusted are the proxies whose
// X-Forwarded-For is believed.
func Of(r *http.Request, trusted []netip.Prefix) Info {
	return Info{IP: rs.ClientIP(r, trusted).String(), UserAgent: userAgent(r), CorrID: CorrelationID(r)}
}

// Event returns a successful event of type t from this origin.
func (i Info) Event(t model.EventType) *model.Event {
	return &model.Event{Type: t, IP: i.IP, UserAgent: i.UserAgent, CorrelationID: i.CorrID, Outcome: model.OutcomeSuccess}
}

func userAgent(r *http.Request) string {
	ua := r.UserAgent()
	if len(ua) > 256 {
		ua = ua[:256]
	}
	return ua
}

type ctxKey int

const corrKey ctxKey = 1

// Middleware gives each request a correlation id (X-Correlation-ID
// response header) that errors and logs share, and attaches the
// request's origin for the events it causes (bus.WithOrigin).
func Middleware(next http.Handler, trusted []netip.Prefix) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := secret.RandomString(9)
		w.Header().Set("X-Correlation-ID", id)
		ctx := context.WithValue(r.Context(), corrKey, id)
		ctx = bus.WithOrigin(ctx, bus.Origin{IP: rs.ClientIP(r, trusted).String(), UserAgent: userAgent(r), CorrelationID: id})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// CorrelationID is the request's correlation id ("" outside Middleware).
func CorrelationID(r *http.Request) string {
	if v, ok := r.Context().Value(corrKey).(string); ok {
		return v
	}
	return ""
}
