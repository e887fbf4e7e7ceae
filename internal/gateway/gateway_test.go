package gateway

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/ward-idp/ward/dpop"
	prom "github.com/ward-idp/ward/internal/metrics"
	"github.com/ward-idp/ward/internal/wardtest"
	"github.com/ward-idp/ward/rs"
)

// routesConfig is the route table most tests use. "docs-admin" is longer
// than "docs" and wins for /docs/admin/…; "admin" wants an audience the
// IdP never issues.
const routesConfig = `issuer: {{.Issuer}}
external_url: {{.URL}}
log: {level: debug}
routes:
  - name: docs
    path_prefix: /docs
    upstream: {{.Docs}}
    audience: https://docs.example
    scopes: [docs.read]
    strip_prefix: true
  - name: docs-admin
    path_prefix: /docs/admin
    upstream: {{.Admin}}
    audience: https://docs.example
    scopes: [docs.write]
  - name: admin
    path_prefix: /admin
    upstream: {{.Admin}}
    audience: https://admin.example
    scopes: []
  - name: api
    path_prefix: /api
    upstream: {{.Docs}}/base
    audience: https://docs.example
    scopes: []
{{.Extra}}`

type fixture struct {
	in          *wardtest.Instance
	docs, admin *upstream
	gw          *gw
	signer      *dpop.Signer
	token       string // service token: aud docs, scope "docs.read docs.write"
}

func newFixture(t *testing.T, extra string, data map[string]any, o gwOptions) *fixture {
	t.Helper()
	f := &fixture{in: startWard(t), docs: newUpstream(t, "docs"), admin: newUpstream(t, "admin"), signer: newSigner(t)}
	d := map[string]any{"Issuer": f.in.URL, "Docs": f.docs.URL, "Admin": f.admin.URL, "Extra": extra}
	for k, v := range data {
		d[k] = v
	}
	f.gw = startGateway(t, routesConfig, d, o)
	f.token = serviceToken(t, f.in, f.signer, "")
	return f
}

// get sends a fresh-proof GET with the fixture's token.
func (f *fixture) get(path string) response {
	return f.gw.do(req{path: path, token: f.token, signer: f.signer})
}

func (f *fixture) metrics(t *testing.T) string {
	t.Helper()
	u := f.gw.URL
	if f.gw.Metrics != "" {
		u = f.gw.Metrics
	}
	r := get(t, u+PathMetrics)
	if r.Status != 200 {
		t.Fatalf("metrics: %d", r.Status)
	}
	return r.Body
}

// assertNoSecrets fails if a token or proof reached the logs.
func (g *gw) assertNoSecrets(t *testing.T, secrets ...string) {
	t.Helper()
	logs := g.Logs.String()
	if logs == "" {
		t.Fatal("no logs at all: the check would prove nothing")
	}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		// The signature part is unique to the token/proof.
		sig := s[strings.LastIndexByte(s, '.')+1:]
		if strings.Contains(logs, sig) {
			t.Errorf("a token or proof (…%s) reached the logs", sig[len(sig)-8:])
		}
	}
}

// verifyIdentity is what an upstream does with Ward-Identity (the snippet
// in docs/gateway.md): ES256 only, explicit typ, key from the gateway
// JWKS by kid, iss = the gateway, aud = this upstream, exp checked.
func verifyIdentity(jwksJSON []byte, header, gatewayURL, upstreamURL string, now time.Time) (*IdentityClaims, error) {
	var jwks jose.JSONWebKeySet
	if err := json.Unmarshal(jwksJSON, &jwks); err != nil {
		return nil, err
	}
	tok, err := jwt.ParseSigned(header, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, err
	}
	h := tok.Headers[0]
	if h.ExtraHeaders[jose.HeaderType] != "ward-identity+jwt" {
		return nil, errors.New("not a Ward-Identity assertion")
	}
	keys := jwks.Key(h.KeyID)
	if len(keys) != 1 {
		return nil, errors.New("unknown kid: refetch the gateway JWKS")
	}
	var std jwt.Claims
	var id IdentityClaims
	if err := tok.Claims(keys[0].Key, &std, &id); err != nil {
		return nil, err
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: gatewayURL, AnyAudience: jwt.Audience{upstreamURL}, Time: now}, 5*time.Second); err != nil {
		return nil, err
	}
	return &id, nil
}

func TestGatewayProxiesValidToken(t *testing.T) {
	f := newFixture(t, "", nil, gwOptions{})
	r := f.gw.do(req{method: http.MethodPost, path: "/docs/page.html?q=1&r=a%20b", token: f.token, signer: f.signer, body: "hello",
		header: http.Header{"Content-Type": {"text/plain"}, "User-Agent": {"docs-cli/1.0"}}})
	if r.Status != http.StatusOK || r.Body != "docs /page.html" {
		t.Fatalf("got %d %q, want 200 from docs", r.Status, r.Body)
	}
	s := f.docs.last(t)
	if s.Method != http.MethodPost || s.Path != "/page.html" || s.Query != "q=1&r=a%20b" {
		t.Errorf("upstream saw %s %s ?%s, want POST /page.html ?q=1&r=a%%20b (prefix stripped, query kept)", s.Method, s.Path, s.Query)
	}
	for _, h := range []string{"Authorization", "Dpop"} {
		if v, ok := s.Header[h]; ok {
			t.Errorf("upstream received %s (%d chars): the token must never reach it", h, len(strings.Join(v, "")))
		}
	}
	wantHeaders := map[string]string{
		"Ward-Subject": "service", "Ward-Client-Id": "service", "Ward-Scope": "docs.read docs.write",
		"X-Forwarded-For": "127.0.0.1", "X-Real-Ip": "127.0.0.1", "X-Forwarded-Proto": "http",
		"X-Forwarded-Host": strings.TrimPrefix(f.gw.URL, "http://"), "User-Agent": "docs-cli/1.0",
	}
	for k, want := range wantHeaders {
		if got := s.Header.Values(k); len(got) != 1 || got[0] != want {
			t.Errorf("upstream header %s = %q, want %q", k, got, want)
		}
	}
	if s.Host != strings.TrimPrefix(f.docs.URL, "http://") {
		t.Errorf("upstream Host = %q, want the upstream's own", s.Host)
	}

	// Ward-Identity verifies with the gateway's published JWKS.
	jwks := get(t, f.gw.URL+PathJWKS)
	if jwks.Status != 200 || jwks.Header.Get("Content-Type") != "application/jwk-set+json" {
		t.Fatalf("jwks: %d %s", jwks.Status, jwks.Header.Get("Content-Type"))
	}
	idh := s.Header.Get(HeaderIdentity)
	id, err := verifyIdentity([]byte(jwks.Body), idh, f.gw.URL, f.docs.URL, time.Now())
	if err != nil {
		t.Fatalf("Ward-Identity does not verify: %v", err)
	}
	tc := jwtClaims(t, f.token)
	if id.Subject != "service" || id.ClientID != "service" || id.Scope != "docs.read docs.write" ||
		id.ExpiresAt-id.IssuedAt != 60 || id.JTI == "" || id.Issuer != f.gw.URL || id.Audience != f.docs.URL {
		t.Errorf("identity claims %+v", id)
	}
	if id.JTI == tc["jti"] {
		t.Error("the identity reuses the token's jti")
	}
	// A verifier that can fail: a tampered payload, another audience, a
	// stale assertion.
	parts := strings.Split(idh, ".")
	claims := jwtClaims(t, idh)
	claims["sub"] = "alice"
	forged, _ := json.Marshal(claims)
	parts[1] = b64(forged)
	if _, err := verifyIdentity([]byte(jwks.Body), strings.Join(parts, "."), f.gw.URL, f.docs.URL, time.Now()); err == nil {
		t.Error("a tampered Ward-Identity verified")
	}
	if _, err := verifyIdentity([]byte(jwks.Body), idh, f.gw.URL, f.admin.URL, time.Now()); err == nil {
		t.Error("Ward-Identity for the docs upstream verified at the admin upstream")
	}
	if _, err := verifyIdentity([]byte(jwks.Body), idh, f.gw.URL, f.docs.URL, time.Now().Add(2*time.Minute)); err == nil {
		t.Error("a 2-minute-old Ward-Identity verified")
	}

	// The same token works for the next request (fresh proof), and the
	// metrics count both as allowed.
	if r := f.get("/docs/other"); r.Status != 200 {
		t.Fatalf("second request: %d %s", r.Status, r.Body)
	}
	m := f.metrics(t)
	if v := metric(t, m, MetricRequests+`{route="docs",result="allowed",reason="ok"}`); v != 2 {
		t.Errorf("allowed count %v, want 2\n%s", v, m)
	}
	if v := metric(t, m, MetricDuration+`_count{route="docs"}`); v != 2 {
		t.Errorf("duration count %v, want 2", v)
	}
	f.gw.assertNoSecrets(t, f.token)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func TestGatewayRejections(t *testing.T) {
	f := newFixture(t, "", nil, gwOptions{})
	narrow := serviceToken(t, f.in, f.signer, "docs.read") // lacks docs.write
	thief := newSigner(t)
	replayed, firstProof := f.gw.doProof(req{path: "/docs/r", token: f.token, signer: f.signer})
	if replayed.Status != 200 {
		t.Fatalf("first use of the proof: %d %s", replayed.Status, replayed.Body)
	}
	otherPathProof, _ := f.signer.Proof(http.MethodGet, f.gw.URL+"/docs/a", f.token, "")
	cases := []struct {
		name      string
		req       req
		status    int
		code      string // error in the body and the challenge ("" = none)
		challenge string // must appear in WWW-Authenticate
		reason    string // the metrics reason label
		route     string
	}{
		{"no token", req{path: "/docs/x"}, 401, "", `DPoP algs="`, "no_token", "docs"},
		{"wrong audience", req{path: "/admin/x", token: f.token, signer: f.signer}, 401, "invalid_token", `error="invalid_token"`, "wrong_audience", "admin"},
		{"missing scope", req{path: "/docs/admin/x", token: narrow, signer: f.signer}, 403, "insufficient_scope", `scope="docs.write"`, "insufficient_scope", "docs-admin"},
		{"replayed proof", req{path: "/docs/r", token: f.token, proof: firstProof}, 401, "invalid_dpop_proof", `error="invalid_dpop_proof"`, "dpop_replay", "docs"},
		{"bound token as Bearer, no proof", req{path: "/docs/x", token: f.token, scheme: "Bearer"}, 401, "invalid_token", `DPoP algs=`, "bearer_not_allowed", "docs"},
		{"DPoP scheme without proof", req{path: "/docs/x", token: f.token}, 401, "invalid_dpop_proof", `error="invalid_dpop_proof"`, "dpop_missing", "docs"},
		{"stolen token, thief's key", req{path: "/docs/x", token: f.token, signer: thief}, 401, "invalid_dpop_proof", `error="invalid_dpop_proof"`, "dpop_jkt_mismatch", "docs"},
		{"proof for another path", req{path: "/docs/b", token: f.token, proof: otherPathProof}, 401, "invalid_dpop_proof", `error="invalid_dpop_proof"`, "dpop_htu_mismatch", "docs"},
	}
	before := f.docs.count() + f.admin.count()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := f.gw.do(c.req)
			if r.Status != c.status {
				t.Fatalf("got %d %s, want %d", r.Status, r.Body, c.status)
			}
			wa := strings.Join(r.Header.Values("WWW-Authenticate"), " | ")
			if !strings.HasPrefix(wa, "DPoP ") || !strings.Contains(wa, c.challenge) {
				t.Errorf("WWW-Authenticate %q lacks %q", wa, c.challenge)
			}
			if c.code == "" && strings.Contains(wa, "error=") {
				t.Errorf("a request without credentials got an error in the challenge: %q (RFC 6750 §3.1)", wa)
			}
			if got, _ := r.JSON["error"].(string); c.code != "" && got != c.code {
				t.Errorf("error %q, want %q", got, c.code)
			}
		})
	}
	if n := f.docs.count() + f.admin.count(); n != before {
		t.Errorf("%d rejected requests reached an upstream", n-before)
	}
	m := f.metrics(t)
	for _, c := range cases {
		s := fmt.Sprintf(`%s{route=%q,result="rejected",reason=%q}`, MetricRequests, c.route, c.reason)
		if v := metric(t, m, s); v < 1 {
			t.Errorf("metrics lack %s\n%s", s, m)
		}
	}
	f.gw.assertNoSecrets(t, f.token, narrow, firstProof, otherPathProof)
}

func TestGatewayStripsSpoofedHeaders(t *testing.T) {
	f := newFixture(t, "", nil, gwOptions{})
	r := f.gw.do(req{path: "/docs/x", token: f.token, signer: f.signer, header: http.Header{
		"Ward-Subject":    {"alice"},
		"Ward-Identity":   {"eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."},
		"Ward-Scope":      {"ward:admin"},
		"Ward_client_id":  {"admin-console"}, // CGI/WSGI would read this as Ward-Client-Id
		"Ward-Device-Id":  {"dev-1"},         // no such header, still in our namespace
		"X-Forwarded-For": {"203.0.113.9"},   // the peer is not a trusted proxy
		"X-Real-Ip":       {"203.0.113.9"},
		"Forwarded":       {"for=203.0.113.9;proto=https"},
		// Ask the proxy to drop our headers as hop-by-hop.
		"Connection": {"Ward-Identity, Ward-Subject"},
	}})
	if r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	s := f.docs.last(t)
	t.Logf("upstream header names: %v", slices.Sorted(maps.Keys(s.Header)))
	for k, v := range s.Header {
		if isWardHeader(k) && !slices.Contains([]string{HeaderIdentity, HeaderSubject, HeaderClientID, HeaderScope}, k) {
			t.Errorf("spoofed header %s: %q reached the upstream", k, v)
		}
	}
	for k, want := range map[string]string{HeaderSubject: "service", HeaderClientID: "service", HeaderScope: "docs.read docs.write",
		"X-Forwarded-For": "127.0.0.1", "X-Real-Ip": "127.0.0.1"} {
		if got := s.Header.Values(k); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want only %q", k, got, want)
		}
	}
	if v := s.Header.Get("Forwarded"); v != "" {
		t.Errorf("client's Forwarded reached the upstream: %q", v)
	}
	jwks := get(t, f.gw.URL+PathJWKS)
	if _, err := verifyIdentity([]byte(jwks.Body), s.Header.Get(HeaderIdentity), f.gw.URL, f.docs.URL, time.Now()); err != nil {
		t.Errorf("Ward-Identity: %v", err)
	}
}

func TestGatewayRouting(t *testing.T) {
	f := newFixture(t, "", nil, gwOptions{})
	cases := []struct {
		path     string
		status   int
		upstream *upstream
		seenPath string // what the upstream saw (decoded)
		seenRaw  string // its escaped form, if it differs
	}{
		{"/docs/a/b", 200, f.docs, "/a/b", ""},
		{"/docs", 200, f.docs, "/", ""},
		{"/docs/", 200, f.docs, "/", ""},
		{"/docs/admin/x", 200, f.admin, "/docs/admin/x", ""}, // longest prefix wins; no strip_prefix there
		{"/docs/administrator", 200, f.docs, "/administrator", ""},
		{"/docs/a%2Fb", 200, f.docs, "/a/b", "/a%2Fb"}, // encoding kept for the upstream
		{"/api/v1/items", 200, f.docs, "/base/api/v1/items", ""},
		{"/docsx", 404, nil, "", ""},
		{"/", 404, nil, "", ""},
		{"/nothing/here", 404, nil, "", ""},
		{"/docs/../docs/admin/x", 400, nil, "", ""},
		{"/docs/%2e%2e/admin/x", 400, nil, "", ""},
		{"/docs//admin/x", 400, nil, "", ""},
		{"/docs/a%5cb", 400, nil, "", ""},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			before := f.docs.count() + f.admin.count()
			r := f.get(c.path)
			if r.Status != c.status {
				t.Fatalf("got %d %s, want %d", r.Status, r.Body, c.status)
			}
			if c.upstream == nil {
				if n := f.docs.count() + f.admin.count(); n != before {
					t.Error("an upstream was called")
				}
				if r.JSON["error"] == nil || r.Header.Get("Content-Type") != "application/json" {
					t.Errorf("not a JSON error: %q", r.Body)
				}
				return
			}
			s := c.upstream.last(t)
			if s.Path != c.seenPath || s.RawPath != c.seenRaw {
				t.Errorf("%s saw %q (raw %q), want %q (raw %q)", c.upstream.name, s.Path, s.RawPath, c.seenPath, c.seenRaw)
			}
		})
	}
	m := f.metrics(t)
	if v := metric(t, m, MetricUnrouted+`{reason="no_route"}`); v != 3 {
		t.Errorf("no_route = %v, want 3", v)
	}
	if v := metric(t, m, MetricUnrouted+`{reason="bad_path"}`); v != 4 {
		t.Errorf("bad_path = %v, want 4", v)
	}
}

// signSET signs claims as a SET (RFC 8417) with go-jose, an
// implementation independent of the receiver.
func signSET(t *testing.T, key *jose.JSONWebKey, claims map[string]any) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("secevent+jwt").WithHeader("kid", key.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := sig.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func push(t *testing.T, u, bearer, set string) response {
	t.Helper()
	hr, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(set))
	hr.Header.Set("Content-Type", "application/secevent+jwt")
	if bearer != "" {
		hr.Header.Set("Authorization", "Bearer "+bearer)
	}
	return doHTTP(t, hr)
}

func sessionRevoked(issuer, aud, sid string, at time.Time) map[string]any {
	return map[string]any{
		"iss": issuer, "aud": aud, "jti": newJTI(), "iat": time.Now().Unix(),
		"sub_id": map[string]any{"format": "opaque", "id": sid},
		"events": map[string]any{rs.EventSessionRevoked: map[string]any{"event_timestamp": at.Unix()}},
	}
}

func TestGatewayCAEPush(t *testing.T) {
	transmitter, tjwks := testKeyFile(t)
	const pushToken = "push-secret-0123456789abcdef"
	f := newFixture(t, `ssf:
  mode: push
  audience: {{.URL}}
  jwks_file: {{.JWKS}}
  push_bearer_env: PUSH_TOKEN
`, map[string]any{"JWKS": tjwks}, gwOptions{env: map[string]string{"PUSH_TOKEN": pushToken}})
	user := newSigner(t)
	ut := userToken(t, f.in, user)
	sid, _ := jwtClaims(t, ut)["sid"].(string)
	if sid == "" {
		t.Fatal("user token without sid")
	}
	if r := f.gw.do(req{path: "/docs/x", token: ut, signer: user}); r.Status != 200 {
		t.Fatalf("before revocation: %d %s", r.Status, r.Body)
	}
	pushURL := f.gw.URL + DefaultPushPath
	good := signSET(t, transmitter, sessionRevoked(f.in.URL, f.gw.URL, sid, time.Now()))

	// Unauthenticated push, a SET signed by a stranger, a SET for another
	// audience: refused, nothing revoked.
	if r := push(t, pushURL, "", good); r.Status != 401 {
		t.Errorf("push without bearer: %d %s", r.Status, r.Body)
	}
	if r := push(t, pushURL, "wrong", good); r.Status != 401 {
		t.Errorf("push with a wrong bearer: %d %s", r.Status, r.Body)
	}
	stranger, _ := testKeyFile(t)
	stranger.KeyID = transmitter.KeyID
	if r := push(t, pushURL, pushToken, signSET(t, stranger, sessionRevoked(f.in.URL, f.gw.URL, sid, time.Now()))); r.Status != 400 {
		t.Errorf("forged SET: %d %s", r.Status, r.Body)
	}
	if r := push(t, pushURL, pushToken, signSET(t, transmitter, sessionRevoked(f.in.URL, "https://elsewhere.example", sid, time.Now()))); r.Status != 400 || r.JSON["err"] != "invalid_audience" {
		t.Errorf("SET for another audience: %d %s", r.Status, r.Body)
	}
	if r := f.gw.do(req{path: "/docs/x", token: ut, signer: user}); r.Status != 200 {
		t.Fatalf("refused SETs revoked something: %d %s", r.Status, r.Body)
	}

	start := time.Now()
	if r := push(t, pushURL, pushToken, good); r.Status != http.StatusAccepted {
		t.Fatalf("push: %d %s", r.Status, r.Body)
	}
	r := f.gw.do(req{path: "/docs/x", token: ut, signer: user})
	took := time.Since(start)
	if r.Status != 401 || r.JSON["error"] != "insufficient_claims" {
		t.Fatalf("after revocation: %d %s", r.Status, r.Body)
	}
	c, ok := rs.ParseClaimsChallenge(r.Header)
	if !ok || c.Error != "insufficient_claims" || len(c.Claims) == 0 {
		t.Fatalf("no claims challenge in %q", r.Header.Values("WWW-Authenticate"))
	}
	nbf, ok := c.RequiredNotBefore()
	iat := int64(jwtClaims(t, ut)["iat"].(float64))
	if !ok || nbf.Unix() < iat {
		t.Errorf("claims challenge %s: nbf %v not after the token's iat %d", c.Claims, nbf, iat)
	}
	t.Logf("push to first rejected request: %v", took)
	// The service token has no session: unaffected.
	if r := f.get("/docs/x"); r.Status != 200 {
		t.Errorf("unrelated token rejected: %d %s", r.Status, r.Body)
	}
	// Redelivery is acknowledged and counted once.
	if r := push(t, pushURL, pushToken, good); r.Status != http.StatusAccepted {
		t.Errorf("redelivery: %d", r.Status)
	}
	m := f.metrics(t)
	for s, want := range map[string]float64{
		MetricCAEEvents + `{type="session-revoked"}`: 1,
		MetricCAEActions + `{kind="revoke_session"}`: 1,
		MetricRevocations: 1,
		MetricRequests + `{route="docs",result="rejected",reason="cae_revoked_session"}`: 1,
		MetricSSFPush + `{code="202"}`: 2,
		MetricSSFPush + `{code="401"}`: 2,
		MetricSSFPush + `{code="400"}`: 2,
	} {
		if v := metric(t, m, s); v != want {
			t.Errorf("%s = %v, want %v", s, v, want)
		}
	}
	f.gw.assertNoSecrets(t, ut, f.token)
	if strings.Contains(f.gw.Logs.String(), pushToken) {
		t.Error("the push bearer token reached the logs")
	}
}

func TestGatewayCAEPoll(t *testing.T) {
	transmitter, tjwks := testKeyFile(t)
	const pollToken = "poll-token-0123456789abcdef"
	tx := newPollTransmitter(t, pollToken)
	f := newFixture(t, `ssf:
  mode: poll
  audience: {{.URL}}
  jwks_file: {{.JWKS}}
  poll_url: {{.Poll}}
  poll_token_env: POLL_TOKEN
`, map[string]any{"JWKS": tjwks, "Poll": tx.URL}, gwOptions{env: map[string]string{"POLL_TOKEN": pollToken}})
	user := newSigner(t)
	ut := userToken(t, f.in, user)
	sid := jwtClaims(t, ut)["sid"].(string)
	if r := f.gw.do(req{path: "/docs/x", token: ut, signer: user}); r.Status != 200 {
		t.Fatalf("before: %d %s", r.Status, r.Body)
	}
	claims := sessionRevoked(f.in.URL, f.gw.URL, sid, time.Now())
	tx.enqueue(claims["jti"].(string), signSET(t, transmitter, claims))
	waitFor(t, "the poller to apply the SET", func() bool { return f.gw.G.State().Len() == 1 })
	if r := f.gw.do(req{path: "/docs/x", token: ut, signer: user}); r.Status != 401 || r.JSON["error"] != "insufficient_claims" {
		t.Fatalf("after: %d %s", r.Status, r.Body)
	}
	waitFor(t, "the acknowledgement", func() bool { return tx.acked(claims["jti"].(string)) })
	if tx.badAuth.Load() != 0 {
		t.Errorf("%d poll requests without the poll token", tx.badAuth.Load())
	}
}

func TestGatewayMetricsListenerAndHealth(t *testing.T) {
	f := newFixture(t, "", nil, gwOptions{metricsListen: true})
	for _, u := range []string{f.gw.URL + PathHealthz, f.gw.URL + PathReadyz, f.gw.Metrics + PathHealthz, f.gw.Metrics + PathReadyz} {
		if r := get(t, u); r.Status != 200 || r.JSON["status"] != "ok" {
			t.Errorf("%s: %d %s", u, r.Status, r.Body)
		}
	}
	// With a separate metrics listener, /metrics on the main listener is
	// an ordinary (here: unrouted) path.
	if r := get(t, f.gw.URL+PathMetrics); r.Status != 404 {
		t.Errorf("main /metrics: %d", r.Status)
	}
	f.get("/docs/x")
	r := get(t, f.gw.Metrics+PathMetrics)
	if r.Status != 200 || r.Header.Get("Content-Type") != prom.ContentType {
		t.Fatalf("metrics: %d %q", r.Status, r.Header.Get("Content-Type"))
	}
	checkExposition(t, r.Body)
	for _, s := range []string{
		MetricRequests + `{route="docs",result="allowed",reason="ok"}`,
		MetricDuration + `_bucket{route="docs",le="+Inf"}`,
		MetricUpstreamErrors + `{route="docs"}`,
		MetricReloads + `{result="success"}`, MetricReloads + `{result="failure"}`,
		MetricRevocations, MetricReady, MetricInFlight,
	} {
		if metric(t, r.Body, s) < 0 {
			t.Errorf("metrics lack %s", s)
		}
	}
	if v := metric(t, r.Body, MetricReady); v != 1 {
		t.Errorf("ready = %v", v)
	}
}

// checkExposition checks the text format: every sample belongs to a
// family declared with HELP and TYPE, histogram buckets are cumulative.
func checkExposition(t *testing.T, page string) {
	t.Helper()
	declared := map[string]string{}
	var lastBucket float64 = -1
	for _, line := range strings.Split(strings.TrimSuffix(page, "\n"), "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, typ, _ := strings.Cut(rest, " ")
			declared[name] = typ
			continue
		}
		if strings.HasPrefix(line, "# HELP ") {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		base := name
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, suf); ok && declared[b] == "histogram" {
				base = b
			}
		}
		if declared[base] == "" {
			t.Errorf("sample without TYPE: %q", line)
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err != nil {
			t.Errorf("bad value: %q", line)
		}
		if strings.HasSuffix(name, "_bucket") {
			if v < lastBucket && !strings.Contains(line, `le="0.0005"`) {
				t.Errorf("bucket not cumulative: %q", line)
			}
			lastBucket = v
		}
	}
}

func TestGatewayNotReadyWithoutIssuerKeys(t *testing.T) {
	up := newUpstream(t, "docs")
	dead := httpDeadURL(t)
	g := startGateway(t, routesConfig, map[string]any{"Issuer": dead, "Docs": up.URL, "Admin": up.URL, "Extra": ""}, gwOptions{noWait: true})
	if r := get(t, g.URL+PathHealthz); r.Status != 200 {
		t.Errorf("healthz %d", r.Status)
	}
	if r := get(t, g.URL+PathReadyz); r.Status != 503 {
		t.Errorf("readyz %d %s, want 503 before the JWKS is fetched", r.Status, r.Body)
	}
	// A request cannot be validated: 503 from rs, not a token error.
	r := g.do(req{path: "/docs/x", token: "eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCIsImtpZCI6ImsxIn0.eyJzdWIiOiJ4In0.c2ln", signer: newSigner(t)})
	if r.Status != 503 {
		t.Errorf("request with keys unavailable: %d %s", r.Status, r.Body)
	}
	if up.count() != 0 {
		t.Error("upstream called")
	}
}

func TestGatewayUsageAndTrustedProxies(t *testing.T) {
	usage := newUsageSink(t, "usage-token-0123456789")
	f := newFixture(t, `trusted_proxies: [127.0.0.1/32]
usage:
  url: {{.Usage}}
  token_env: USAGE_TOKEN
  interval: 50ms
`, map[string]any{"Usage": usage.URL}, gwOptions{env: map[string]string{"USAGE_TOKEN": "usage-token-0123456789"}})
	r := f.gw.do(req{path: "/docs/x", token: f.token, signer: f.signer, header: http.Header{
		"X-Forwarded-For": {"198.51.100.7"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"apps.example.com"}, "User-Agent": {"docs-cli/2.0"}}})
	if r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	s := f.docs.last(t)
	for k, want := range map[string]string{"X-Forwarded-For": "198.51.100.7, 127.0.0.1", "X-Real-Ip": "198.51.100.7",
		"X-Forwarded-Proto": "https", "X-Forwarded-Host": "apps.example.com"} {
		if got := s.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	f.gw.do(req{path: "/docs/x", token: f.token, signer: newSigner(t)}) // rejected: jkt mismatch
	var recs []rs.UsageRecord
	waitFor(t, "two usage records", func() bool { recs = usage.records(); return len(recs) >= 2 })
	jti := jwtClaims(t, f.token)["jti"]
	a, b := recs[0], recs[1]
	if a.Result != rs.ResultAllowed || a.ClientIP != "198.51.100.7" || a.TokenID != jti || a.Audience != audDocs || a.UserAgent != "docs-cli/2.0" {
		t.Errorf("allowed record %+v", a)
	}
	if b.Result != rs.ResultRejected || b.Reason != "dpop_jkt_mismatch" || b.ClientIP != "127.0.0.1" {
		t.Errorf("rejected record %+v", b)
	}
	if usage.badAuth.Load() != 0 {
		t.Error("usage POST without the configured token")
	}
	// The reporter counts a batch as sent once the POST has returned.
	waitFor(t, "the usage metric", func() bool { return metric(t, f.metrics(t), MetricUsageSent) >= 2 })
}

func TestGatewayTLS(t *testing.T) {
	cert, key, client := selfSigned(t)
	f := newFixture(t, "tls: {cert_file: {{.Cert}}, key_file: {{.Key}}}\n", map[string]any{"Cert": cert, "Key": key}, gwOptions{tls: client})
	if !strings.HasPrefix(f.gw.URL, "https://") {
		t.Fatal(f.gw.URL)
	}
	r := f.get("/docs/x")
	if r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	if p := f.docs.last(t).Header.Get("X-Forwarded-Proto"); p != "https" {
		t.Errorf("X-Forwarded-Proto %q", p)
	}
	// Plain HTTP on the TLS port is refused.
	if resp, err := http.Get("http://" + strings.TrimPrefix(f.gw.URL, "https://") + PathHealthz); err == nil {
		if resp.StatusCode == 200 {
			t.Error("plain HTTP served")
		}
		resp.Body.Close()
	}
}

func TestGatewayUpstreamDown(t *testing.T) {
	in := startWard(t)
	dead := httpDeadURL(t)
	g := startGateway(t, routesConfig, map[string]any{"Issuer": in.URL, "Docs": dead, "Admin": dead, "Extra": ""}, gwOptions{})
	s := newSigner(t)
	tok := serviceToken(t, in, s, "")
	r := g.do(req{path: "/docs/x?code=query-secret-42", token: tok, signer: s})
	if r.Status != http.StatusBadGateway || r.JSON["error"] != "bad_gateway" {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	m := get(t, g.URL+PathMetrics).Body
	if v := metric(t, m, MetricUpstreamErrors+`{route="docs"}`); v != 1 {
		t.Errorf("upstream errors %v", v)
	}
	logs := g.Logs.String()
	if !strings.Contains(logs, "gateway: upstream error") {
		t.Errorf("upstream error not logged")
	}
	if strings.Contains(logs, "query-secret-42") {
		t.Error("the client's query string reached the logs")
	}
}
