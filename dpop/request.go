package dpop

import (
	"net/http"
	"strings"
)

// FromRequest returns the DPoP proof of r. It returns ErrNoProof if there
// is no DPoP header, and an *Error (invalid_dpop_proof) if there is more
// than one DPoP header field or one field holds a list of values
// (RFC 9449 §4.3 point 1). Header names are case-insensitive.
func FromRequest(r *http.Request) (string, error) {
	var vals []string
	for k, vs := range r.Header {
		// Canonical "Dpop" from net/http, or any spelling set by hand.
		if len(k) == 4 && strings.EqualFold(k, "DPoP") {
			vals = append(vals, vs...)
		}
	}
	switch len(vals) {
	case 0:
		return "", ErrNoProof
	case 1:
	default:
		return "", invalid(ReasonMultiple, "more than one DPoP header")
	}
	v := strings.Trim(vals[0], " \t")
	if v == "" {
		return "", invalid(ReasonMissing, "DPoP header is empty")
	}
	// A proof never contains a comma or whitespace; a proxy may have
	// merged several fields into one comma-separated list.
	if strings.ContainsAny(v, ", \t") {
		return "", invalid(ReasonMultiple, "more than one DPoP proof")
	}
	return v, nil
}
