package oauth

import (
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
)

const requestURIPrefix = "urn:ietf:params:oauth:request_uri:"

// handlePAR accepts a pushed authorization request (RFC 9126). The client
// authenticates as at the token endpoint; the request is validated now so
// errors reach the client directly, and stored for one use. A DPoP proof
// on the push binds the later code to that key (RFC 9449 §10.1).
func (p *Provider) handlePAR(w http.ResponseWriter, r *http.Request) {
	setCORS(w, r)
	form, c, ok := p.clientRequest(w, r)
	if !ok {
		return
	}
	if form.Get("request_uri") != "" {
		writeTokenError(w, newErr(ErrInvalidRequest, "request_uri must not be pushed"))
		return
	}
	if form.Get("client_id") != "" && form.Get("client_id") != c.ID {
		writeTokenError(w, newErr(ErrInvalidRequest, "client_id does not match the authenticated client"))
		return
	}
	form.Set("client_id", c.ID)
	h, e := proofHeader(r)
	if e != nil {
		writeTokenError(w, e)
		return
	}
	if h != "" {
		proof, e := p.checkProof(r, h, "")
		if e != nil {
			writeTokenError(w, e)
			return
		}
		if jkt := form.Get("dpop_jkt"); jkt != "" && jkt != proof.JKT {
			writeTokenError(w, newErr(ErrInvalidDPoPProof, "dpop_jkt does not match the DPoP proof key"))
			return
		}
		form.Set("dpop_jkt", proof.JKT)
	}
	// Validate now; the same checks run again when the request is used.
	_, _, perr, re := p.parseAuthorize(r.Context(), form)
	if re != nil {
		writeTokenError(w, re.Error)
		return
	}
	if perr != nil {
		writeTokenError(w, perr)
		return
	}
	params := map[string]string{}
	for k := range form {
		switch k {
		case "client_secret", "client_assertion", "client_assertion_type":
			continue // credentials are not part of the request
		}
		params[k] = form.Get(k)
	}
	ttl := p.c.Lifetimes.PushedRequest
	pr := &model.PushedRequest{RequestURI: requestURIPrefix + secret.RandomToken(), ClientID: c.ID, Params: params, ExpiresAt: p.c.Now().Add(ttl)}
	if err := p.c.Store.CreatePushedRequest(r.Context(), pr); err != nil {
		writeTokenError(w, serverError(err))
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"request_uri": pr.RequestURI, "expires_in": int(ttl / time.Second)})
}

// clientRequest parses the form of a token-style request (PAR, token,
// introspection, revocation) and authenticates its client. On failure the
// error has been recorded and written.
func (p *Provider) clientRequest(w http.ResponseWriter, r *http.Request) (url.Values, *model.Client, bool) {
	form, e := parseForm(w, r)
	if e != nil {
		p.tokenFailed(r, "", e)
		writeTokenError(w, e)
		return nil, nil, false
	}
	// Failed client authentications cost each network from a budget;
	// a network that spent it is answered at once and not recorded, so
	// that a flood of made-up client ids fills neither the audit log nor
	// the CPU.
	net, now := networkKey(p.clientIP(r)), p.c.Now()
	if !p.clientAuthLimit.Take(net, now) {
		p.c.Log.DebugContext(r.Context(), "client authentication throttled", "network", net)
		w.Header().Set("Retry-After", "60")
		writeTokenError(w, &Error{Code: ErrInvalidRequest, Status: http.StatusTooManyRequests,
			Description: "too many failed client authentications from this network; try again later", Reason: "client_auth_throttled"})
		return nil, nil, false
	}
	c, e := p.authenticateClient(r, form)
	if e != nil {
		if e.Code != ErrInvalidClient {
			p.clientAuthLimit.Refund(net, now) // a malformed request, not a failed credential
		}
		p.tokenFailed(r, form.Get("client_id"), e)
		writeTokenError(w, e)
		return nil, nil, false
	}
	p.clientAuthLimit.Refund(net, now)
	return form, c, true
}

// networkKey groups client addresses into networks for budgets: an IPv4
// address, or the /64 of an IPv6 address (one host usually has a whole
// /64).
func networkKey(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.String()
		}
	}
	return ip.String()
}

// parseForm reads an application/x-www-form-urlencoded POST body and
// rejects repeated parameters (RFC 6749 §3.1, §3.2).
func parseForm(w http.ResponseWriter, r *http.Request) (url.Values, *Error) {
	if ct := r.Header.Get("Content-Type"); !isFormContentType(ct) {
		return nil, newErr(ErrInvalidRequest, "content type must be application/x-www-form-urlencoded")
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return nil, newErr(ErrInvalidRequest, "malformed request body")
	}
	if len(r.URL.RawQuery) > 0 {
		// Credentials and grants belong in the body only.
		return nil, newErr(ErrInvalidRequest, "parameters must be sent in the request body")
	}
	for k, v := range r.PostForm {
		if len(v) > 1 {
			return nil, newErr(ErrInvalidRequest, "parameter "+k+" given more than once")
		}
	}
	return r.PostForm, nil
}

func isFormContentType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/x-www-form-urlencoded"
}
