package ssf_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
)

// TestPushEndpointSSRF: with the default ssf.push_allowed_networks (none),
// a receiver cannot aim Ward's pushes at Ward's machine or network: an
// endpoint on loopback, a private or link-local address (the cloud
// metadata service) is refused when the stream is created or updated,
// with the setting named; a public https endpoint is accepted.
func TestPushEndpointSSRF(t *testing.T) {
	in := start(t, func(c *config.Config) { c.SSF.PushAllowedNetworks = nil })
	tok := receiverToken(t, in)
	for _, u := range []string{"http://127.0.0.1:8080/events", "http://localhost:8080/events", "https://169.254.169.254/latest/meta-data",
		"https://10.0.0.5/events", "https://[::1]/events", "https://[::ffff:192.168.0.1]/events", "https://0.0.0.0/events"} {
		r := call(t, in, http.MethodPost, "/ssf/stream", tok, map[string]any{"delivery": map[string]any{"method": model.DeliveryPush, "endpoint_url": u}})
		wantError(t, "push to "+u, r, http.StatusBadRequest, "invalid_request")
		if d, _ := r.json(t)["error_description"].(string); !strings.Contains(d, "push_allowed_networks") {
			t.Errorf("push to %s: description %q does not name the setting", u, d)
		}
	}
	st := createStream(t, in, tok, map[string]any{"delivery": map[string]any{"method": model.DeliveryPush, "endpoint_url": "https://receiver.example/events"}})
	id := st["stream_id"].(string)
	// Moving an existing stream onto a blocked address is refused too, and
	// changes nothing.
	r := call(t, in, http.MethodPatch, "/ssf/stream", tok, map[string]any{"stream_id": id,
		"delivery": map[string]any{"method": model.DeliveryPush, "endpoint_url": "https://192.168.1.10/events"}})
	wantError(t, "update to a private address", r, http.StatusBadRequest, "invalid_request")
	got := call(t, in, http.MethodGet, "/ssf/stream?stream_id="+id, tok, nil).json(t)
	if d, _ := got["delivery"].(map[string]any); d["endpoint_url"] != "https://receiver.example/events" {
		t.Fatalf("stream after the refused update: %v", got["delivery"])
	}
}
