package oauth

import (
	"net/http"
	"slices"
	"testing"

	"github.com/ward-idp/ward/httpauth"
)

// Every protected resource answers a refusal with the scheme the request
// used, or both when it used neither, with the same parameters.
func TestAddChallenges(t *testing.T) {
	ps := httpauth.ErrorParams(ErrInvalidToken, "expired")
	for _, c := range []struct {
		scheme string
		want   []string
	}{
		{"DPoP", []string{`DPoP algs="ES256 EdDSA", error="invalid_token", error_description="expired"`}},
		{"Bearer", []string{`Bearer realm="ward", error="invalid_token", error_description="expired"`}},
		{"", []string{`Bearer realm="ward", error="invalid_token", error_description="expired"`,
			`DPoP algs="ES256 EdDSA", error="invalid_token", error_description="expired"`}},
		{"*", []string{`Bearer realm="ward", error="invalid_token", error_description="expired"`,
			`DPoP algs="ES256 EdDSA", error="invalid_token", error_description="expired"`}},
	} {
		h := http.Header{}
		AddChallenges(h, c.scheme, "ES256 EdDSA", ps...)
		if got := h.Values("WWW-Authenticate"); !slices.Equal(got, c.want) {
			t.Errorf("scheme %q:\n got %q\nwant %q", c.scheme, got, c.want)
		}
		// What was written parses back as the same challenges.
		for _, v := range h.Values("WWW-Authenticate") {
			if _, err := httpauth.ParseField(v); err != nil {
				t.Errorf("scheme %q: %q does not parse: %v", c.scheme, v, err)
			}
		}
	}
}
