package rs

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/ward-idp/ward/jsonobj"
)

// TokenInfo is a validated access token: what the handler behind the
// middleware may rely on. It holds claims, never the token itself.
type TokenInfo struct {
	Issuer    string
	Subject   string
	Audience  []string
	ClientID  string
	Scopes    []string
	SessionID string // sid
	DeviceID  string // did: the registered device the DPoP key belongs to
	JKT       string // cnf.jkt: thumbprint of the DPoP key ("" for bearer tokens)
	ACR       string
	AMR       []string
	AuthTime  time.Time // zero if absent
	IssuedAt  time.Time
	NotBefore time.Time // zero if absent
	ExpiresAt time.Time
	JTI       string
	// Scheme is how the token was presented: "DPoP" or "Bearer".
	Scheme string
	// AllowedIPs, when set (the "ipr" claim: Conditional Access strict
	// location), are the only client addresses the token may be used
	// from; the validator enforces it on every request.
	AllowedIPs []netip.Prefix
	// Claims is the token's full claims set (JSON), for claims this
	// struct does not name.
	Claims json.RawMessage

	proofNonce string
	// proof is the status of the request's proof against JKT (Proof…
	// constants) and proofJKT the thumbprint of the key that made it,
	// known when its signature verified: for usage records.
	proof, proofJKT string
}

// HasScope reports whether the token grants scope s.
func (t *TokenInfo) HasScope(s string) bool { return slices.Contains(t.Scopes, s) }

// LogValue implements slog.LogValuer with identifiers only.
func (t *TokenInfo) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("sub", t.Subject),
		slog.String("client_id", t.ClientID),
		slog.String("sid", t.SessionID),
		slog.String("did", t.DeviceID),
		slog.String("jti", t.JTI),
		slog.String("scheme", t.Scheme),
	)
}

type ctxKey struct{}

// NewContext returns ctx carrying t (the middleware does this).
func NewContext(ctx context.Context, t *TokenInfo) context.Context {
	return context.WithValue(ctx, ctxKey{}, t)
}

// FromContext returns the token the middleware validated for this
// request.
func FromContext(ctx context.Context) (*TokenInfo, bool) {
	t, ok := ctx.Value(ctxKey{}).(*TokenInfo)
	return t, ok && t != nil
}

// accessClaims are the claims of an RFC 9068 access token.
type accessClaims struct {
	Iss      string   `json:"iss"`
	Sub      string   `json:"sub"`
	Aud      audience `json:"aud"`
	Exp      float64  `json:"exp"`
	Iat      float64  `json:"iat"`
	Nbf      float64  `json:"nbf"`
	JTI      string   `json:"jti"`
	ClientID string   `json:"client_id"`
	Scope    string   `json:"scope"`
	SID      string   `json:"sid"`
	AuthTime float64  `json:"auth_time"`
	ACR      string   `json:"acr"`
	AMR      []string `json:"amr"`
	Cnf      *struct {
		JKT string `json:"jkt"`
	} `json:"cnf"`
	DID string `json:"did"`
	// IPR are the IP ranges the token may be used from (Conditional
	// Access strict location).
	IPR []string `json:"ipr"`
}

// audience is the aud claim: a string or an array of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	l, ok := stringOrArray(b)
	if !ok {
		return errors.New("aud must be a string or an array of strings")
	}
	*a = l
	return nil
}

// seconds converts a NumericDate to Unix seconds; ok is false for values
// out of range (negative, NaN, beyond jsonobj.MaxNumericDate).
func seconds(f float64) (int64, bool) {
	if math.IsNaN(f) || f < 0 || f > jsonobj.MaxNumericDate {
		return 0, false
	}
	return int64(f), true
}

func unix(f float64) time.Time {
	if f == 0 {
		return time.Time{}
	}
	s, _ := seconds(f)
	return time.Unix(s, 0)
}

// checkClaims applies RFC 9068 §4 and the validator's limits; it returns
// the reason and description of the first failure.
func (v *Validator) checkClaims(c *accessClaims, now int64) *Error {
	switch {
	case c.Iss == "", c.Sub == "", len(c.Aud) == 0, c.Exp == 0, c.Iat == 0, c.JTI == "", c.ClientID == "":
		return invalidToken("missing_claim", "the access token lacks a required claim")
	}
	exp, ok1 := seconds(c.Exp)
	iat, ok2 := seconds(c.Iat)
	nbf, ok3 := seconds(c.Nbf)
	_, ok4 := seconds(c.AuthTime)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return invalidToken("bad_claim", "the access token has an invalid time claim")
	}
	if c.Iss != v.cfg.Issuer {
		return invalidToken("wrong_issuer", "the access token is from another issuer")
	}
	if !slices.Contains(c.Aud, v.cfg.Audience) {
		return invalidToken("wrong_audience", "the access token is not intended for this resource")
	}
	if now >= exp+v.skew {
		return invalidToken("expired", "the access token has expired")
	}
	if iat > now+v.skew {
		return invalidToken("iat_in_future", "the access token is issued in the future")
	}
	if nbf != 0 && nbf > now+v.skew {
		return invalidToken("not_yet_valid", "the access token is not yet valid")
	}
	if exp-iat > v.maxLife {
		// CAE state forgets a revocation after the longest lifetime; a
		// token living longer could outlast its revocation.
		return invalidToken("lifetime_too_long", "the access token lifetime exceeds what this resource accepts")
	}
	if c.Cnf != nil && c.Cnf.JKT == "" {
		return invalidToken("bad_claim", "the access token has an empty cnf.jkt")
	}
	return nil
}

func (c *accessClaims) info(scheme string, raw []byte) *TokenInfo {
	t := &TokenInfo{
		Issuer:    c.Iss,
		Subject:   c.Sub,
		Audience:  c.Aud,
		ClientID:  c.ClientID,
		Scopes:    strings.Fields(c.Scope),
		SessionID: c.SID,
		DeviceID:  c.DID,
		ACR:       c.ACR,
		AMR:       c.AMR,
		AuthTime:  unix(c.AuthTime),
		IssuedAt:  unix(c.Iat),
		NotBefore: unix(c.Nbf),
		ExpiresAt: unix(c.Exp),
		JTI:       c.JTI,
		Scheme:    scheme,
		Claims:    raw,
	}
	if c.Cnf != nil {
		t.JKT = c.Cnf.JKT
	}
	for _, s := range c.IPR {
		if p, err := netip.ParsePrefix(s); err == nil {
			t.AllowedIPs = append(t.AllowedIPs, p.Masked())
		}
	}
	return t
}

// ipAllowed reports whether the client address ip may use the token.
func (t *TokenInfo) ipAllowed(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, p := range t.AllowedIPs {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
