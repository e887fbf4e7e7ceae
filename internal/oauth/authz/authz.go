// Package authz holds the values of an authorization that travel between
// Ward's protocol endpoints, its token grants and its sign-in pages: the
// validated authorization request (sealed in the sign-in pages until a
// code is issued), the claims request parameter and Ward's acr values,
// the device authorization's user codes, and the rule for requested
// scopes. It does no I/O.
package authz

import (
	"slices"
	"strconv"
	"strings"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/oautherr"
)

// Request is a validated authorization request. The authorization
// endpoint builds it; the sign-in carries it (sealed) until the user is
// signed in and the endpoint issues the code.
type Request struct {
	ClientID      string `json:"cid"`
	RedirectURI   string `json:"ru"`
	Scope         string `json:"sc,omitempty"`
	State         string `json:"st,omitempty"`
	Nonce         string `json:"no,omitempty"`
	CodeChallenge string `json:"cc"`
	DPoPJKT       string `json:"jkt,omitempty"`
	Prompt        string `json:"pr,omitempty"`
	MaxAge        int    `json:"ma"` // -1: not given
	// Claims is the claims request parameter (a resource's claims
	// challenge passed on by the client).
	Claims *Claims `json:"cl,omitempty"`
}

// PromptNone reports prompt=none: no page may be shown.
func (r *Request) PromptNone() bool { return strings.Contains(r.Prompt, "none") }

// CheckScope returns the normalised requested scope, or invalid_scope when
// it asks for anything the client is not allowed.
func CheckScope(c *model.Client, scope string) (string, *oautherr.Error) {
	if len(scope) > 2048 {
		return "", oautherr.New(oautherr.InvalidScope, "scope too long")
	}
	var out []string
	for _, s := range strings.Fields(scope) {
		if !slices.Contains(c.Scopes, s) {
			return "", oautherr.New(oautherr.InvalidScope, "scope "+strconv.Quote(s)+" is not allowed for this client")
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return strings.Join(out, " "), nil
}
