package ssfrx

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ward-idp/ward/jsonobj"
	"github.com/ward-idp/ward/jws"
	"github.com/ward-idp/ward/rs"
)

// MaxSETSize bounds a SET, in bytes (as the rs receiver does).
const MaxSETSize = 64 << 10

// maxJTI bounds a SET's jti, which Ward stores.
const maxJTI = 256

func refuse(code, format string, a ...any) *rs.SETError {
	return &rs.SETError{Code: code, Description: fmt.Sprintf(format, a...)}
}

func invalid(format string, a ...any) *rs.SETError {
	return refuse(rs.SETErrInvalidRequest, format, a...)
}

// verify checks a compact SET from this receiver's transmitter: size,
// JOSE header (an allowed asymmetric alg, typ secevent+jwt, no nested
// JWT, no crit/zip/enc), the signature with the transmitter's published
// key, JSON nesting, the SSF claim rules (rs.ParseSETClaims), iss, aud
// and the iat window. A refused SET yields an *rs.SETError whose
// description never quotes the SET; any other error is temporary (the
// keys could not be fetched) and the SET is to be delivered again.
func (r *receiver) verify(ctx context.Context, compact string) (*rs.SET, error) {
	if len(compact) > MaxSETSize {
		return nil, invalid("SET larger than %d bytes", MaxSETSize)
	}
	c, err := jws.Split(compact)
	if err != nil || !c.Complete() {
		return nil, invalid("not a compact JWS (an unsigned or encrypted token is not accepted)")
	}
	var buf [16]jsonobj.Member
	h, err := jws.ParseHeader(c.Header(), buf[:0])
	if err != nil {
		return nil, invalid("malformed JOSE header")
	}
	rules := jws.Rules{Algs: r.algs, Typ: "secevent+jwt", MediaType: true}
	alg, err := rules.Check(&h)
	switch {
	case errors.Is(err, jws.ErrAlg):
		return nil, refuse(rs.SETErrInvalidKey, "alg must be one of %s", r.algNames)
	case errors.Is(err, jws.ErrTyp):
		return nil, invalid("typ must be secevent+jwt")
	case err != nil:
		return nil, invalid("unsupported JOSE header (crit, zip, enc or a mistyped member)")
	}
	if cty := h.First("cty"); cty != "" {
		// RFC 8417 §2.3: a SET is not a nested JWT; one inside another
		// would be verified by no one.
		return nil, invalid("nested tokens (cty) are not accepted")
	}
	key, err := r.keys.key(ctx, h.Kid, h.Has(jws.ParamKid), alg)
	switch {
	case errors.Is(err, errUnknownKey):
		return nil, refuse(rs.SETErrInvalidKey, "no published key of the transmitter matches kid and alg")
	case err != nil:
		return nil, err
	}
	sig, err := jws.DecodeSegment(c.Signature())
	if err != nil || !jws.Verify(alg, key, c.SigningInput(), sig) {
		return nil, refuse(rs.SETErrAuthenticationFailed, "signature verification failed")
	}
	payload, err := jws.DecodeSegment(c.Payload())
	if err != nil {
		return nil, invalid("payload is not base64url")
	}
	if err := jsonobj.ValidDeep(payload); err != nil {
		return nil, invalid("claims are not one JSON object nested at most %d deep with unique names", jsonobj.MaxDepth)
	}
	set, err := rs.ParseSETClaims(payload)
	if err != nil {
		var se *rs.SETError
		if errors.As(err, &se) {
			return nil, se
		}
		return nil, invalid("claims refused")
	}
	if set.Issuer != r.cfg.Issuer {
		return nil, refuse(rs.SETErrInvalidIssuer, "iss is not this transmitter's issuer")
	}
	if !r.audienceOK(set.Audience) {
		return nil, refuse(rs.SETErrInvalidAudience, "Ward is not an audience of the SET")
	}
	if len(set.JTI) > maxJTI || strings.ContainsFunc(set.JTI, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		return nil, invalid("jti longer than %d bytes or with control characters", maxJTI)
	}
	now := r.s.o.Now()
	switch {
	case set.IssuedAt.After(now.Add(r.skew)):
		return nil, invalid("iat is in the future")
	case set.IssuedAt.Before(now.Add(-r.maxAge)):
		return nil, invalid("iat is older than %s", r.maxAge)
	}
	return set, nil
}

// audienceOK: the configured audience (Ward's issuer by default), or the
// aud the transmitter reported for Ward's stream.
func (r *receiver) audienceOK(aud []string) bool {
	streamAud := r.streamAudience()
	for _, a := range aud {
		if a == r.audience {
			return true
		}
		for _, s := range streamAud {
			if a == s {
				return true
			}
		}
	}
	return false
}
