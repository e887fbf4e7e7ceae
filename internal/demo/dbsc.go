package demo

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// A DBSC browser (Device Bound Session Credentials, W3C draft): it keeps
// a key of its own and, when Ward offers it at sign-in, binds the SSO
// session to that key; Ward then wants a short-lived cookie with the SSO
// cookie, which only a proof by the key renews (docs/protocol.md).

var (
	registrationRE = regexp.MustCompile(`^\(ES256\);path="(/dbsc/register)";challenge="([A-Za-z0-9_.-]+)"$`)
	refreshChRE    = regexp.MustCompile(`^"([A-Za-z0-9_.-]+)";id="([A-Za-z0-9_-]+)"$`)
)

type dbscKey struct{ k *ecdsa.PrivateKey }

func newDBSCKey() (*dbscKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return &dbscKey{k}, nil
}

// jwt signs a dbsc+jwt: header (with the public key when withJWK), the
// challenge as jti, the endpoint as aud.
func (d *dbscKey) jwt(challenge, aud string, withJWK bool) (string, error) {
	hdr := map[string]any{"alg": "ES256", "typ": "dbsc+jwt"}
	if withJWK {
		jwk, err := (&jose.JSONWebKey{Key: &d.k.PublicKey}).MarshalJSON()
		if err != nil {
			return "", err
		}
		hdr["jwk"] = json.RawMessage(jwk)
	}
	h, _ := json.Marshal(hdr)
	c, _ := json.Marshal(map[string]any{"jti": challenge, "aud": aud, "iat": time.Now().Unix()})
	in := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	sum := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, d.k, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// dbscPost posts to a DBSC endpoint of Ward with headers.
func (b *browser) dbscPost(ctx context.Context, path string, hdr map[string]string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.issuer+path, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	req.Header.Set("User-Agent", b.ua)
	resp, err := b.c.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}

// registerDBSC answers the registration offer of a sign-in with key.
func (b *browser) registerDBSC(ctx context.Context, offer string, key *dbscKey) error {
	m := registrationRE.FindStringSubmatch(offer)
	if m == nil {
		return fmt.Errorf("demo: no DBSC offer at sign-in (%q)", offer)
	}
	j, err := key.jwt(m[2], b.issuer+"/dbsc/register", true)
	if err != nil {
		return err
	}
	resp, err := b.dbscPost(ctx, m[1], map[string]string{"Secure-Session-Response": j})
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("demo: DBSC registration: HTTP %d", resp.StatusCode)
	}
	return nil
}

// refreshDBSC asks for a refresh challenge and answers it with key; it
// returns the answer's status.
func (b *browser) refreshDBSC(ctx context.Context, key *dbscKey) (int, error) {
	resp, err := b.dbscPost(ctx, "/dbsc/refresh", nil)
	if err != nil {
		return 0, err
	}
	m := refreshChRE.FindStringSubmatch(resp.Header.Get("Secure-Session-Challenge"))
	if resp.StatusCode != http.StatusUnauthorized || m == nil {
		return 0, errors.New("demo: no DBSC refresh challenge")
	}
	j, err := key.jwt(m[1], b.issuer+"/dbsc/refresh", false)
	if err != nil {
		return 0, err
	}
	resp, err = b.dbscPost(ctx, "/dbsc/refresh", map[string]string{"Secure-Session-Response": j, "Sec-Secure-Session-Id": m[2]})
	if err != nil {
		return 0, err
	}
	return resp.StatusCode, nil
}

// ssoState is what /authorize with prompt=none answers browser b for the
// client: "code" when the SSO session signs it in, else the error.
func (b *browser) ssoState(ctx context.Context, t *Target) (string, error) {
	_, challenge := pkce()
	resp, _, err := b.do(ctx, http.MethodGet, authorizeURL(t.Issuer, t.DocsClient, t.DocsRedirectURI, "openid", challenge,
		map[string][]string{"prompt": {"none"}}), nil)
	if err != nil {
		return "", err
	}
	loc, err := resp.Location()
	if err != nil {
		return "", fmt.Errorf("demo: prompt=none answered %d", resp.StatusCode)
	}
	if loc.Query().Get("code") != "" {
		return "code", nil
	}
	return loc.Query().Get("error"), nil
}

// onlyCookies returns the cookies named.
func onlyCookies(cs []*http.Cookie, names ...string) []*http.Cookie {
	var out []*http.Cookie
	for _, c := range cs {
		for _, n := range names {
			if c.Name == n || c.Name == "__Host-"+n {
				out = append(out, &http.Cookie{Name: c.Name, Value: c.Value})
			}
		}
	}
	return out
}
