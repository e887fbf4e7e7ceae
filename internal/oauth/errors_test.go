package oauth

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"github.com/ward-idp/ward/httpauth"
)

// TestChallengeHeaders pins the WWW-Authenticate values of the token and
// resource endpoints byte for byte (RFC 6750 §3, RFC 9449 §7.1): the
// challenges of the admin API, the SSF endpoints and the device API are
// built from the same helpers.
func TestChallengeHeaders(t *testing.T) {
	const algs = "ES256 ES384 ES512 PS256 PS384 PS512 RS256 EdDSA"
	for _, tc := range []struct {
		name   string
		write  func(w http.ResponseWriter)
		status int
		want   []string
	}{
		{"invalid client", func(w http.ResponseWriter) {
			writeTokenError(w, &Error{Code: ErrInvalidClient, Description: "client authentication failed", Status: 401})
		}, 401, []string{`Basic realm="ward", error="invalid_client"`}},
		{"invalid client, 400", func(w http.ResponseWriter) {
			writeTokenError(w, &Error{Code: ErrInvalidClient, Description: "x", Status: 400})
		}, 400, nil},
		{"DPoP", func(w http.ResponseWriter) {
			writeResourceError(w, &Error{Code: ErrInvalidToken, Description: `the "access" token is invalid`, Status: 401}, "DPoP", algs)
		}, 401, []string{`DPoP algs="` + algs + `", error="invalid_token", error_description="the 'access' token is invalid"`}},
		{"Bearer", func(w http.ResponseWriter) {
			writeResourceError(w, &Error{Code: ErrInvalidToken, Status: 401}, "Bearer", algs)
		}, 401, []string{`Bearer realm="ward", error="invalid_token"`}},
		{"no scheme yet", func(w http.ResponseWriter) {
			writeResourceError(w, &Error{Code: ErrInvalidToken, Description: "an access token is required", Status: 401}, "", algs)
		}, 401, []string{`Bearer realm="ward"`, `DPoP algs="` + algs + `"`}},
	} {
		w := httptest.NewRecorder()
		tc.write(w)
		if w.Code != tc.status || !reflect.DeepEqual(w.Header().Values("WWW-Authenticate"), tc.want) {
			t.Errorf("%s: %d %q, want %d %q", tc.name, w.Code, w.Header().Values("WWW-Authenticate"), tc.status, tc.want)
		}
		// What Ward writes, its own parser reads.
		if _, err := httpauth.Parse(w.Header().Values("WWW-Authenticate")...); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	// The shapes of the admin, SSF and device APIs.
	ps := append(httpauth.ErrorParams("insufficient_scope", `needs "ward:admin"`), httpauth.Param{Name: "scope", Value: "ward:admin"})
	if got, want := DPoPChallenge("ES256", ps...).String(), `DPoP algs="ES256", error="insufficient_scope", error_description="needs 'ward:admin'", scope="ward:admin"`; got != want {
		t.Errorf("DPoPChallenge = %s, want %s", got, want)
	}
	if got, want := BearerChallenge(ps...).String(), `Bearer realm="ward", error="insufficient_scope", error_description="needs 'ward:admin'", scope="ward:admin"`; got != want {
		t.Errorf("BearerChallenge = %s, want %s", got, want)
	}
}
