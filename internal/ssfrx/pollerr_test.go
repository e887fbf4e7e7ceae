package ssfrx

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// TestPollErrorAnswers: a transmitter's error answer to a poll is read
// as RFC 8935's {"err", "description"} (Ward's poll endpoint) or an
// OAuth-style {"error", …}: the status and a bounded code are kept (they
// drive the retry and the re-creation of a lost stream, and show in the
// receiver's last error), never the description, and the pending
// acknowledgements stay for the next request.
func TestPollErrorAnswers(t *testing.T) {
	cases := []struct {
		status int
		body   string
		want   string
	}{
		{400, `{"err":"invalid_request","description":"maxEvents must be a non-negative integer"}`, "status 400 (invalid_request)"},
		{401, `{"err":"authentication_failed","description":"Bearer sekret"}`, "status 401 (authentication_failed)"},
		{403, `{"error":"insufficient_scope","error_description":"sekret"}`, "status 403 (insufficient_scope)"},
		{404, `{"err":"invalid_request","description":"no stream with this stream_id for this receiver"}`, "status 404 (invalid_request)"},
		{400, `{"err":"` + strings.Repeat("x", 65) + `"}`, "status 400"},
		{400, `{"err":"a\nsekret"}`, "status 400"},
		{500, `<html>sekret</html>`, "status 500"},
	}
	for _, c := range cases {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(c.status)
			_, _ = w.Write([]byte(c.body))
		}))
		r := &receiver{s: &Service{o: Options{PollTimeout: 5 * time.Second}}, client: srv.Client(),
			cfg:    ReceiverConfig{Name: "t", Credentials: func(context.Context) (string, error) { return "Bearer sekret", nil }},
			stream: &model.SSFReceiverStream{EndpointURL: srv.URL}}
		p := &poller{r: r, acks: []string{"j1"}, setErrs: map[string]setErr{}}
		_, err := p.once(context.Background(), 10)
		srv.Close()
		if err == nil || err.Error() != c.want {
			t.Errorf("%d %s: error %v, want %q", c.status, c.body, err, c.want)
		}
		if !isStatus(err, c.status) {
			t.Errorf("%d: status not kept", c.status)
		}
		if len(p.acks) != 1 {
			t.Errorf("%d: acknowledgements dropped after an error", c.status)
		}
	}
}
