package dpop

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/ward-idp/ward/httpauth"
)

// maxErrorBody bounds how much of a 400 response body Transport reads to
// look for "use_dpop_nonce"; token-endpoint error bodies are tiny.
const maxErrorBody = 16 << 10

// Transport is an http.RoundTripper that adds a fresh DPoP proof (new jti,
// current iat) to every request it sends, for clients of an authorization
// server (token, PAR, revocation requests) and of resource servers alike.
//
//   - When the request carries an access token in the DPoP scheme
//     ("Authorization: DPoP <token>"), the proof includes its hash (ath,
//     RFC 9449 §4.2). Other schemes (Basic client authentication, Bearer)
//     get a proof without ath.
//   - It remembers the latest DPoP-Nonce response header per origin
//     (scheme and host) and puts that nonce into later proofs for the same
//     origin (RFC 9449 §8, §9).
//   - When the server rejects a request because it wants a (fresh) nonce
//     and supplies one — a 400 response whose JSON body has
//     "error": "use_dpop_nonce" (authorization server, RFC 9449 §8), or a
//     401 response with `WWW-Authenticate: DPoP error="use_dpop_nonce"`
//     (resource server, §9) — and that nonce differs from the one the proof
//     carried, the request is sent once more with a new proof. A request
//     with a body is retried only if its body can be replayed
//     (req.GetBody is set, as http.NewRequest does for bytes.Buffer,
//     bytes.Reader and strings.Reader bodies); otherwise the rejection is
//     returned to the caller.
//
// A DPoP header already present on the request is replaced. The caller's
// request is never modified: the proof goes on a clone. Transport is safe
// for concurrent use once configured; it must not be copied after first
// use. Signer must be set; Base defaults to http.DefaultTransport.
//
// With golang.org/x/oauth2, give the token requests a DPoP client through
// the context, and use the same Transport as the base of the client that
// calls resources, so that oauth2.Transport sets "Authorization: DPoP <at>"
// (the token type the server returned) and Transport adds the proof with
// ath:
//
//	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
//	signer, _ := dpop.NewSigner(key)
//	dt := &dpop.Transport{Signer: signer}
//	ctx = context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Transport: dt})
//
//	conf := &oauth2.Config{ClientID: "spa", Endpoint: endpoint, RedirectURL: redirect, Scopes: scopes}
//	verifier := oauth2.GenerateVerifier()
//	authURL := conf.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier),
//		oauth2.SetAuthURLParam("dpop_jkt", signer.Thumbprint()))
//	// ... the user signs in; the redirect brings back code ...
//	tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier)) // tok.Type() == "DPoP"
//
//	api := oauth2.NewClient(ctx, conf.TokenSource(ctx, tok)) // refreshes through dt as well
//	resp, err := api.Get("https://api.example.com/items")
type Transport struct {
	// Base sends the requests; nil means http.DefaultTransport.
	Base http.RoundTripper
	// Signer makes the proofs; required.
	Signer *Signer

	mu     sync.Mutex
	nonces map[string]string // origin -> latest DPoP-Nonce
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	closeBody := func() {
		if req.Body != nil {
			req.Body.Close()
		}
	}
	if t.Signer == nil {
		closeBody()
		return nil, errors.New("dpop: Transport.Signer is nil")
	}
	if req.URL == nil {
		closeBody()
		return nil, errors.New("dpop: request without URL")
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	origin := originOf(req.URL)
	htu := (&url.URL{Scheme: req.URL.Scheme, Host: req.URL.Host, Path: req.URL.Path, RawPath: req.URL.RawPath}).String()
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	accessToken := dpopAccessToken(req.Header)

	nonce := t.nonce(origin)
	first, err := t.withProof(req, req.Body, method, htu, accessToken, nonce)
	if err != nil {
		closeBody()
		return nil, err
	}
	resp, err := base.RoundTrip(first)
	if err != nil {
		return nil, err
	}
	fresh := resp.Header.Get("DPoP-Nonce")
	if fresh != "" {
		t.setNonce(origin, fresh)
	}
	if fresh == "" || fresh == nonce || !wantsNonce(resp) {
		return resp, nil
	}
	// Retry once with the new nonce, if the body can be sent again.
	body := req.Body
	if body != nil && body != http.NoBody {
		if req.GetBody == nil {
			return resp, nil
		}
		if body, err = req.GetBody(); err != nil {
			return resp, nil
		}
	}
	second, err := t.withProof(req, body, method, htu, accessToken, fresh)
	if err != nil {
		if body != nil {
			body.Close()
		}
		return resp, nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	resp, err = base.RoundTrip(second)
	if err != nil {
		return nil, err
	}
	if n := resp.Header.Get("DPoP-Nonce"); n != "" {
		t.setNonce(origin, n)
	}
	return resp, nil
}

// withProof returns a clone of req with body and a fresh proof.
func (t *Transport) withProof(req *http.Request, body io.ReadCloser, method, htu, accessToken, nonce string) (*http.Request, error) {
	proof, err := t.Signer.Proof(method, htu, accessToken, nonce)
	if err != nil {
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Body = body
	for k := range r.Header {
		if strings.EqualFold(k, "DPoP") {
			delete(r.Header, k)
		}
	}
	r.Header.Set("DPoP", proof)
	return r, nil
}

func (t *Transport) nonce(origin string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.nonces[origin]
}

func (t *Transport) setNonce(origin, nonce string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.nonces == nil {
		t.nonces = make(map[string]string)
	}
	t.nonces[origin] = nonce
}

// originOf is scheme://host with the default port removed, lower-case.
func originOf(u *url.URL) string {
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	switch {
	case scheme == "http" && strings.HasSuffix(host, ":80"):
		host = strings.TrimSuffix(host, ":80")
	case scheme == "https" && strings.HasSuffix(host, ":443"):
		host = strings.TrimSuffix(host, ":443")
	}
	return scheme + "://" + host
}

// dpopAccessToken returns the token of an "Authorization: DPoP <token>"
// header, "" for any other scheme.
func dpopAccessToken(h http.Header) string {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h.Get("Authorization")), " ")
	if !ok || !strings.EqualFold(scheme, "DPoP") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// wantsNonce reports whether resp asks for a DPoP nonce: a 400 with a JSON
// error "use_dpop_nonce" (the body is read and put back), or a 401 with a
// DPoP challenge whose error is "use_dpop_nonce".
func wantsNonce(resp *http.Response) bool {
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		cs, _ := httpauth.Parse(resp.Header.Values("WWW-Authenticate")...)
		for _, c := range cs {
			if strings.EqualFold(c.Scheme, "DPoP") && c.Param("error") == CodeUseNonce {
				return true
			}
		}
	case http.StatusBadRequest:
		if resp.Body == nil || resp.Body == http.NoBody {
			return false
		}
		if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return false
		}
		head, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		resp.Body = readCloser{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
		if err != nil {
			return false
		}
		var e struct {
			Error string `json:"error"`
		}
		return json.Unmarshal(head, &e) == nil && e.Error == CodeUseNonce
	}
	return false
}

type readCloser struct {
	io.Reader
	io.Closer
}
