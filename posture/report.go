package posture

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ward-idp/ward/jsonobj"
	"github.com/ward-idp/ward/jws"
)

// Report format constants.
const (
	// ReportType is the JWS "typ" header of a posture report.
	ReportType = "ward-posture+jwt"
	// ReportIssuer is the "iss" claim of a posture report.
	ReportIssuer = "ward-agent"
	// ReportLifetime is exp - iat of a report SignReport makes, and the
	// longest ParseReport accepts.
	ReportLifetime = 5 * time.Minute
	// MaxReportSize is the largest report ParseReport reads (bytes).
	MaxReportSize = 64 << 10
	// MaxClockSkew is how far in the future iat (and collected_at) may be,
	// and how long after exp a report is still accepted.
	MaxClockSkew = 30 * time.Second
)

var b64 = base64.RawURLEncoding.Strict()

// reportClaims is the payload of a report. Its field set is closed:
// ParseReport rejects any other member, at the top level and in posture.
type reportClaims struct {
	Iss     string   `json:"iss"`
	Sub     string   `json:"sub"`
	Iat     int64    `json:"iat"`
	Exp     int64    `json:"exp"`
	JTI     string   `json:"jti"`
	Nonce   string   `json:"nonce"`
	Posture *Posture `json:"posture"`
}

// SignReport makes a posture report: a compact JWS, signed with key (an
// ECDSA P-256 crypto.Signer such as a keystore.Key), with the header
//
//	{"typ":"ward-posture+jwt","alg":"ES256","jwk":{"crv":"P-256","kty":"EC","x":…,"y":…}}
//
// and the claims
//
//	{"iss":"ward-agent","sub":deviceID,"iat":now,"exp":now+5m,"jti":random,
//	 "nonce":nonce,"posture":{…}}
//
// nonce is the one-time value the server handed out for this report.
// Empty states in p are sent as "unknown"; p itself is not modified. p
// must pass Validate.
func SignReport(key crypto.Signer, p *Posture, deviceID, nonce string, now time.Time) (string, error) {
	if key == nil {
		return "", errors.New("posture: nil key")
	}
	pub, ok := key.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return "", errors.New("posture: report key must be ECDSA P-256")
	}
	if deviceID == "" || nonce == "" {
		return "", errors.New("posture: device id and nonce are required")
	}
	if err := p.Validate(); err != nil {
		return "", err
	}
	cp := *p
	cp.Normalize()
	var jti [16]byte
	if _, err := io.ReadFull(rand.Reader, jti[:]); err != nil {
		return "", fmt.Errorf("posture: jti: %w", err)
	}
	payload, err := json.Marshal(reportClaims{
		Iss: ReportIssuer, Sub: deviceID, Iat: now.Unix(), Exp: now.Add(ReportLifetime).Unix(),
		JTI: b64.EncodeToString(jti[:]), Nonce: nonce, Posture: &cp,
	})
	if err != nil {
		return "", fmt.Errorf("posture: encode claims: %w", err)
	}
	jwk, err := jws.CanonicalJWK(pub) // {"crv":"P-256","kty":"EC","x":…,"y":…}
	if err != nil {
		return "", fmt.Errorf("posture: public key: %w", err)
	}
	hdr := `{"typ":"` + ReportType + `","alg":"ES256","jwk":` + string(jwk) + `}`
	buf := make([]byte, 0, 2*len(hdr)+2*len(payload)+90)
	buf = append(jws.AppendSegment(buf, []byte(hdr)), '.')
	buf = jws.AppendSegment(buf, payload)
	if buf, err = jws.AppendSign(buf, jws.ES256, key, rand.Reader); err != nil {
		return "", fmt.Errorf("posture: sign report: %w", err)
	}
	if len(buf) > MaxReportSize {
		return "", fmt.Errorf("posture: report of %d bytes exceeds %d", len(buf), MaxReportSize)
	}
	return string(buf), nil
}

// Reason is a stable, machine-readable code for a rejected report, fit
// for logs, events and metrics.
type Reason string

// Reasons for rejecting a report.
const (
	ReasonMalformed   Reason = "malformed"        // not a compact JWS of JSON objects
	ReasonTooLarge    Reason = "too_large"        // over MaxReportSize
	ReasonType        Reason = "bad_typ"          // typ is not ReportType
	ReasonAlg         Reason = "bad_alg"          // alg is not ES256
	ReasonKey         Reason = "bad_key"          // jwk missing, not a public P-256 key, or with extra members
	ReasonKeyMismatch Reason = "key_mismatch"     // jwk thumbprint is not the device's
	ReasonSignature   Reason = "bad_signature"    // signature does not verify
	ReasonClaims      Reason = "bad_claims"       // missing, mistyped, duplicate or unknown claims; bad exp
	ReasonIssuer      Reason = "bad_issuer"       // iss is not ReportIssuer
	ReasonSubject     Reason = "wrong_device"     // sub is not the expected device
	ReasonExpired     Reason = "expired"          // exp has passed
	ReasonStale       Reason = "stale"            // iat older than MaxAge
	ReasonFuture      Reason = "issued_in_future" // iat after now + MaxClockSkew
	ReasonNonce       Reason = "bad_nonce"        // nonce missing, unknown, expired or replayed
	ReasonPosture     Reason = "bad_posture"      // posture missing, with unknown fields or invalid values
	ReasonConfig      Reason = "config"           // VerifyOptions incomplete (a server bug)
)

// ErrInvalidReport matches every *Error with errors.Is.
var ErrInvalidReport = errors.New("posture: invalid report")

// Error is a rejected report. Detail is a fixed description; it never
// contains any part of the report.
type Error struct {
	Reason Reason
	Detail string
}

// Is makes errors.Is(err, ErrInvalidReport) true.
func (e *Error) Is(target error) bool { return target == ErrInvalidReport }

// Error implements error.
func (e *Error) Error() string {
	return "posture: report rejected (" + string(e.Reason) + "): " + e.Detail
}

func reject(r Reason, detail string) *Error { return &Error{Reason: r, Detail: detail} }

// ReasonOf returns the Reason of a report error, or "" if err is not one.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

// VerifyOptions is what the server expects of a report.
type VerifyOptions struct {
	// JKT is the RFC 7638 thumbprint of the device key registered for the
	// device; the report's jwk must have it. Required.
	JKT string
	// DeviceID, if set, must equal the report's sub.
	DeviceID string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxAge is how old iat may be; zero or negative means ReportLifetime.
	MaxAge time.Duration
	// CheckNonce reports whether nonce was issued to this device and is
	// unused, and should mark it used (one report per nonce). It is called
	// last, only for reports that passed every other check. Required.
	CheckNonce func(nonce string) bool
}

// Report is a verified posture report. Verification proves that the
// device key signed it, for this nonce, recently; the posture itself is
// still the device's own statement: treat its strings and evidence as
// untrusted text when displaying them.
type Report struct {
	DeviceID  string    // sub
	JTI       string    // jti
	Nonce     string    // nonce
	IssuedAt  time.Time // iat
	ExpiresAt time.Time // exp
	JKT       string    // thumbprint of the signing key
	Posture   Posture   // states normalised: absent ones are Unknown
}

// ParseReport verifies a posture report made by SignReport and returns
// its content. It is strict: at most MaxReportSize bytes; header members
// exactly typ (ReportType), alg (ES256 only: "none", HS256 and everything
// else are refused) and jwk (exactly kty EC, crv P-256, x, y, a point on
// the curve) whose RFC 7638 thumbprint equals opts.JKT; a valid
// signature; claims exactly iss (ReportIssuer), sub, iat, exp, jti, nonce
// and posture, no duplicates anywhere; iat within [now-MaxAge,
// now+MaxClockSkew]; iat < exp <= iat+ReportLifetime and exp not passed;
// posture with known fields only, valid State values, passing Validate;
// and finally a nonce that opts.CheckNonce accepts. Header and claims
// must be valid UTF-8; member names match exactly (case-sensitively).
//
// Rejections are *Error values with a Reason; an *Error with
// ReasonConfig means opts is incomplete.
func ParseReport(token string, opts VerifyOptions) (*Report, error) {
	if opts.JKT == "" || opts.CheckNonce == nil {
		return nil, reject(ReasonConfig, "VerifyOptions.JKT and CheckNonce are required")
	}
	if len(token) > MaxReportSize {
		return nil, reject(ReasonTooLarge, "report exceeds the size limit")
	}
	c, err := jws.Split(token)
	if err != nil {
		return nil, reject(ReasonMalformed, "not a compact JWS")
	}
	pub, jkt, rerr := parseHeader(c.Header())
	if rerr != nil {
		return nil, rerr
	}
	if subtle.ConstantTimeCompare([]byte(jkt), []byte(opts.JKT)) != 1 {
		return nil, reject(ReasonKeyMismatch, "report key is not the device's registered key")
	}
	if len(c.Signature()) != 86 {
		return nil, reject(ReasonSignature, "signature is not a 64-byte ES256 signature")
	}
	if !jws.VerifyES256(pub, c.SigningInput(), c.Signature()) {
		if _, err := jws.DecodeSegment(c.Signature()); err != nil {
			return nil, reject(ReasonSignature, "signature is not a 64-byte ES256 signature")
		}
		return nil, reject(ReasonSignature, "signature does not verify")
	}
	payload, err := jws.DecodeSegment(c.Payload())
	if err != nil {
		return nil, reject(ReasonMalformed, "payload is not base64url")
	}
	var cl reportClaims
	if rerr := decodeStrict(payload, &cl); rerr != nil {
		return nil, rerr
	}
	return checkClaims(&cl, opts)
}

// checkClaims applies the report's claim rules (see ParseReport).
func checkClaims(c *reportClaims, opts VerifyOptions) (*Report, error) {
	if c.Iss != ReportIssuer {
		return nil, reject(ReasonIssuer, "iss is not "+ReportIssuer)
	}
	if c.Sub == "" || (opts.DeviceID != "" && c.Sub != opts.DeviceID) {
		return nil, reject(ReasonSubject, "sub is not the expected device")
	}
	if c.JTI == "" || len(c.JTI) > 256 {
		return nil, reject(ReasonClaims, "jti missing or too long")
	}
	if c.Iat <= 0 || c.Exp <= c.Iat || c.Exp-c.Iat > int64(ReportLifetime/time.Second) {
		return nil, reject(ReasonClaims, "iat/exp missing or exp not within the report lifetime")
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	maxAge := opts.MaxAge
	if maxAge <= 0 {
		maxAge = ReportLifetime
	}
	t := now()
	iat, exp := time.Unix(c.Iat, 0), time.Unix(c.Exp, 0)
	switch {
	case iat.After(t.Add(MaxClockSkew)):
		return nil, reject(ReasonFuture, "iat is in the future")
	case t.Sub(iat) > maxAge:
		return nil, reject(ReasonStale, "iat is too old")
	case !t.Before(exp.Add(MaxClockSkew)):
		return nil, reject(ReasonExpired, "report has expired")
	}
	if c.Posture == nil {
		return nil, reject(ReasonPosture, "posture missing")
	}
	c.Posture.Normalize()
	if err := c.Posture.Validate(); err != nil {
		return nil, reject(ReasonPosture, "posture invalid")
	}
	if c.Posture.CollectedAt.After(iat.Add(MaxClockSkew)) {
		return nil, reject(ReasonPosture, "collected_at is after iat")
	}
	if c.Nonce == "" || len(c.Nonce) > 512 || !opts.CheckNonce(c.Nonce) {
		return nil, reject(ReasonNonce, "nonce missing, unknown or already used")
	}
	return &Report{
		DeviceID: c.Sub, JTI: c.JTI, Nonce: c.Nonce, IssuedAt: iat, ExpiresAt: exp, JKT: opts.JKT, Posture: *c.Posture,
	}, nil
}

// parseHeader checks the protected header: exactly typ (ReportType), alg
// (ES256) and jwk (exactly kty EC, crv P-256, x, y: a point on the
// curve); it returns the report key and its RFC 7638 thumbprint.
func parseHeader(seg string) (*ecdsa.PublicKey, string, *Error) {
	var buf [4]jsonobj.Member
	h, err := jws.ParseHeader(seg, buf[:0])
	if errors.Is(err, jws.ErrEncoding) {
		return nil, "", reject(ReasonMalformed, "header is not base64url")
	} else if err != nil {
		return nil, "", reject(ReasonMalformed, "header is not a JSON object without duplicate members")
	}
	if !h.IsString(jws.ParamTyp) || h.Typ != ReportType {
		return nil, "", reject(ReasonType, "typ is not "+ReportType)
	}
	if !h.IsString(jws.ParamAlg) || h.Alg != string(jws.ES256) {
		return nil, "", reject(ReasonAlg, "alg is not ES256")
	}
	if h.Len() != 3 || !h.Has(jws.ParamJWK) {
		return nil, "", reject(ReasonKey, "header must hold exactly typ, alg and jwk")
	}
	k, err := jws.ParseJWK(h.JWK, jws.ES256)
	switch {
	case errors.Is(err, jws.ErrJWKNotObject) && h.JWK[0] == '{' && jsonobj.CheckValue(h.JWK) != nil:
		// A duplicate member (or deep nesting) anywhere in the header
		// makes it malformed, the jwk included.
		return nil, "", reject(ReasonMalformed, "header is not a JSON object without duplicate members")
	case errors.Is(err, jws.ErrJWKECEncoding):
		return nil, "", reject(ReasonKey, "jwk coordinates are not 32-byte base64url")
	case errors.Is(err, jws.ErrJWKECPoint):
		return nil, "", reject(ReasonKey, "jwk is not a point on P-256")
	case err != nil || k.Members != 4:
		return nil, "", reject(ReasonKey, "jwk must be exactly a public EC P-256 key (kty, crv, x, y)")
	}
	return k.Key.(*ecdsa.PublicKey), k.Thumbprint, nil
}

// decodeStrict decodes the claims: one JSON object, no duplicate or
// unknown members (also inside posture), valid state values.
func decodeStrict(payload []byte, c *reportClaims) *Error {
	if jsonobj.ValidDeep(payload) != nil {
		return reject(ReasonClaims, "claims are not a JSON object without duplicate members")
	}
	bad := reject(ReasonClaims, "claims are malformed, mistyped or unknown")
	var postureRaw []byte
	it := newObjIter(payload)
	for it.next() {
		var ok bool
		switch string(it.key()) {
		case "iss":
			ok = setString(&c.Iss, it.val)
		case "sub":
			ok = setString(&c.Sub, it.val)
		case "jti":
			ok = setString(&c.JTI, it.val)
		case "nonce":
			ok = setString(&c.Nonce, it.val)
		case "iat":
			ok = setInt(&c.Iat, it.val)
		case "exp":
			ok = setInt(&c.Exp, it.val)
		case "posture":
			postureRaw, ok = it.val, true
		}
		if !ok {
			return bad
		}
	}
	if postureRaw == nil || isNull(postureRaw) {
		return nil // reported as missing posture by the caller
	}
	p, rerr := decodePosture(postureRaw)
	if rerr != nil {
		return rerr
	}
	c.Posture = p
	return nil
}

// decodePosture decodes a posture object already checked by
// jsonobj.ValidDeep: known fields only, each of its type.
func decodePosture(raw []byte) (*Posture, *Error) {
	bad := reject(ReasonPosture, "posture has unknown, mistyped or malformed fields")
	if raw[0] != '{' {
		return nil, bad
	}
	p := new(Posture)
	it := newObjIter(raw)
	for it.next() {
		var st *State
		ok := true
		switch string(it.key()) {
		case FieldPlatform:
			ok = setString(&p.Platform, it.val)
		case FieldOSName:
			ok = setString(&p.OSName, it.val)
		case FieldOSVersion:
			ok = setString(&p.OSVersion, it.val)
		case FieldKernel:
			ok = setString(&p.Kernel, it.val)
		case FieldHostname:
			ok = setString(&p.Hostname, it.val)
		case FieldDiskEncrypted:
			st = &p.DiskEncrypted
		case FieldUserIsAdmin:
			st = &p.UserIsAdmin
		case FieldAntiMalwarePresent:
			st = &p.AntiMalwarePresent
		case FieldFirewallEnabled:
			st = &p.FirewallEnabled
		case FieldSecureBoot:
			st = &p.SecureBoot
		case FieldScreenLock:
			st = &p.ScreenLock
		case FieldRooted:
			st = &p.Rooted
		case FieldAntiMalwareSignatureAge:
			if !isNull(it.val) {
				var v int64
				if ok = setInt(&v, it.val); ok {
					s := Seconds(v)
					p.AntiMalwareSignatureAge = &s
				}
			}
		case FieldCollectedAt:
			ok = p.CollectedAt.UnmarshalJSON(it.val) == nil
		case "evidence":
			ok = decodeEvidence(&p.Evidence, it.val)
		default:
			ok = false
		}
		if st != nil {
			v, isStr := jsonString(it.val)
			if !isStr || it.val[0] != '"' || !State(v).Valid() {
				return nil, reject(ReasonPosture, "invalid state value")
			}
			*st = State(v)
		}
		if !ok {
			return nil, bad
		}
	}
	return p, nil
}

// decodeEvidence decodes the evidence member: null or an object of
// strings (null members are empty strings, as encoding/json has them).
func decodeEvidence(dst *map[string]string, raw []byte) bool {
	if isNull(raw) {
		return true
	}
	if raw[0] != '{' {
		return false
	}
	m := make(map[string]string)
	it := newObjIter(raw)
	for it.next() {
		v, ok := jsonString(it.val)
		if !ok {
			return false
		}
		m[string(it.key())] = v
	}
	*dst = m
	return true
}
