package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

var authMethods = []string{model.AuthNone, model.AuthClientSecretBasic, model.AuthClientSecretPost, model.AuthPrivateKeyJWT}

const jwtBearerAssertion = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// clientAssertionAlgs are the algorithms accepted for private_key_jwt:
// asymmetric only, so a client secret can never double as a signing key.
var clientAssertionAlgs = []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.ES512, jose.PS256, jose.PS384, jose.PS512, jose.RS256, jose.EdDSA}

func clientAssertionAlgNames() []string {
	out := make([]string, len(clientAssertionAlgs))
	for i, a := range clientAssertionAlgs {
		out[i] = string(a)
	}
	return out
}

// maxAssertionLifetime bounds how far in the future a client assertion's
// exp may be, which also bounds how long its jti must be remembered.
const maxAssertionLifetime = 10 * time.Minute

// authenticateClient identifies and authenticates the client of a
// token-style request by exactly one method (RFC 6749 §2.3). The method
// used must be the one the client registered.
func (p *Provider) authenticateClient(r *http.Request, form url.Values) (*model.Client, *Error) {
	ctx := r.Context()
	user, pass, hasBasic := r.BasicAuth()
	assertionType := form.Get("client_assertion_type")
	bodySecret, hasBodySecret := form["client_secret"]

	methods := 0
	for _, b := range []bool{hasBasic, assertionType != "" || form.Get("client_assertion") != "", hasBodySecret} {
		if b {
			methods++
		}
	}
	if methods > 1 {
		return nil, newErr(ErrInvalidRequest, "more than one client authentication method used").WithReason("multiple_client_auth")
	}

	var (
		id     string
		method string
	)
	switch {
	case hasBasic:
		// RFC 6749 §2.3.1: credentials are form-urlencoded before Basic encoding.
		var err1, err2 error
		id, err1 = url.QueryUnescape(user)
		pass, err2 = url.QueryUnescape(pass)
		if err1 != nil || err2 != nil || id == "" {
			return nil, newErr(ErrInvalidClient, "malformed client credentials").WithReason("malformed_basic")
		}
		method = model.AuthClientSecretBasic
		if cid := form.Get("client_id"); cid != "" && cid != id {
			return nil, newErr(ErrInvalidRequest, "client_id does not match the authenticated client").WithReason("client_id_mismatch")
		}
	case assertionType != "" || form.Get("client_assertion") != "":
		if assertionType != jwtBearerAssertion {
			return nil, newErr(ErrInvalidClient, "unsupported client_assertion_type").WithReason("bad_assertion_type")
		}
		method = model.AuthPrivateKeyJWT
		id = form.Get("client_id")
	case hasBodySecret:
		if len(bodySecret) != 1 {
			return nil, newErr(ErrInvalidRequest, "client_secret given more than once")
		}
		method = model.AuthClientSecretPost
		id = form.Get("client_id")
		pass = bodySecret[0]
		if id == "" {
			return nil, newErr(ErrInvalidClient, "client_id is required").WithReason("missing_client_id")
		}
	default:
		method = model.AuthNone
		id = form.Get("client_id")
		if id == "" {
			return nil, newErr(ErrInvalidClient, "client authentication is required").WithReason("no_client_auth")
		}
	}

	var c *model.Client
	if method == model.AuthPrivateKeyJWT {
		var e *Error
		c, e = p.verifyClientAssertion(ctx, id, form.Get("client_assertion"), r)
		if e != nil {
			return nil, e
		}
		return c, nil
	}
	c, err := p.client(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, newErr(ErrInvalidClient, "client authentication failed").WithReason("unknown_client")
	} else if err != nil {
		return nil, serverError(err)
	}
	if c.TokenEndpointAuthMethod != method {
		return nil, newErr(ErrInvalidClient, "client authentication failed").WithReason("wrong_auth_method")
	}
	if method != model.AuthNone && !p.c.Clients.CheckSecret(c, pass) {
		return nil, newErr(ErrInvalidClient, "client authentication failed").WithReason("bad_secret")
	}
	return c, nil
}

type assertionClaims struct {
	Issuer    string          `json:"iss"`
	Subject   string          `json:"sub"`
	Audience  json.RawMessage `json:"aud"`
	ExpiresAt *int64          `json:"exp"`
	NotBefore *int64          `json:"nbf"`
	IssuedAt  *int64          `json:"iat"`
	JTI       string          `json:"jti"`
}

// verifyClientAssertion checks a private_key_jwt assertion (RFC 7523 §3,
// OIDC Core §9): signed by a key in the client's JWKS with an asymmetric
// algorithm, iss = sub = client_id, aud naming this server, unexpired,
// and its jti never seen before.
func (p *Provider) verifyClientAssertion(ctx context.Context, clientID, assertion string, r *http.Request) (*model.Client, *Error) {
	fail := func(reason string) (*model.Client, *Error) {
		return nil, newErr(ErrInvalidClient, "client authentication failed").WithReason(reason)
	}
	if assertion == "" {
		return nil, newErr(ErrInvalidRequest, "client_assertion is required")
	}
	jws, err := jose.ParseSigned(assertion, clientAssertionAlgs)
	if err != nil || len(jws.Signatures) != 1 {
		return fail("malformed_assertion")
	}
	var unverified assertionClaims
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &unverified); err != nil {
		return fail("malformed_assertion")
	}
	if clientID == "" {
		clientID = unverified.Subject
	}
	if clientID == "" || unverified.Issuer != clientID || unverified.Subject != clientID {
		return fail("assertion_iss_sub_mismatch")
	}
	c, err := p.client(ctx, clientID)
	if errors.Is(err, store.ErrNotFound) {
		return fail("unknown_client")
	} else if err != nil {
		return nil, serverError(err)
	}
	if c.TokenEndpointAuthMethod != model.AuthPrivateKeyJWT {
		return fail("wrong_auth_method")
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(c.JWKS, &set); err != nil || len(set.Keys) == 0 {
		return fail("client_has_no_jwks")
	}
	payload := assertionPayload(jws, set)
	if payload == nil {
		return fail("assertion_bad_signature")
	}
	var cl assertionClaims
	if err := json.Unmarshal(payload, &cl); err != nil {
		return fail("malformed_assertion")
	}
	exp, reason := p.checkAssertionClaims(&cl, clientID, r)
	if reason != "" {
		return fail(reason)
	}
	if err := p.c.Store.RecordJTI(ctx, "client_assertion:"+clientID+":"+cl.JTI, exp.Add(assertionSkew)); err != nil {
		if errors.Is(err, store.ErrReplay) {
			return fail("assertion_replayed")
		}
		return nil, serverError(err)
	}
	return c, nil
}

// assertionPayload returns the payload of an assertion signed by one of
// the client's keys (the one its kid names, if it names one), or nil.
func assertionPayload(jws *jose.JSONWebSignature, set jose.JSONWebKeySet) []byte {
	kid := jws.Signatures[0].Header.KeyID
	for _, k := range set.Keys {
		if kid != "" && k.KeyID != kid {
			continue
		}
		if !k.Valid() || !k.IsPublic() {
			continue
		}
		if b, err := jws.Verify(k.Key); err == nil {
			return b
		}
	}
	return nil
}

// assertionSkew is the clock skew allowed for an assertion's times.
const assertionSkew = 30 * time.Second

// checkAssertionClaims checks the claims of a verified assertion of
// clientID, presented at r: iss = sub = client_id, a jti, aud naming this
// server, and its times. It returns exp, or why the assertion fails.
func (p *Provider) checkAssertionClaims(cl *assertionClaims, clientID string, r *http.Request) (time.Time, string) {
	if cl.Issuer != clientID || cl.Subject != clientID || cl.JTI == "" || cl.ExpiresAt == nil {
		return time.Time{}, "assertion_missing_claims"
	}
	if !audienceContains(cl.Audience, p.issuer, p.url(PathToken), p.url(r.URL.Path)) {
		return time.Time{}, "assertion_wrong_audience"
	}
	now := p.c.Now()
	exp := time.Unix(*cl.ExpiresAt, 0)
	switch {
	case !now.Before(exp.Add(assertionSkew)):
		return exp, "assertion_expired"
	case exp.Sub(now) > maxAssertionLifetime:
		return exp, "assertion_lifetime_too_long"
	case cl.NotBefore != nil && now.Add(assertionSkew).Before(time.Unix(*cl.NotBefore, 0)):
		return exp, "assertion_not_yet_valid"
	case cl.IssuedAt != nil && now.Add(assertionSkew).Before(time.Unix(*cl.IssuedAt, 0)):
		return exp, "assertion_iat_in_future"
	}
	return exp, ""
}

// audienceContains reports whether a JWT aud (string or array) contains
// any of want.
func audienceContains(raw json.RawMessage, want ...string) bool {
	var list []string
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		list = []string{one}
	} else if err := json.Unmarshal(raw, &list); err != nil {
		return false
	}
	for _, a := range list {
		for _, w := range want {
			if a == w {
				return true
			}
		}
	}
	return false
}
