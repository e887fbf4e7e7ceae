package posture

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"github.com/ward-idp/ward/dpop"
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
	pt, err := pub.Bytes() // 0x04 || X || Y
	if err != nil {
		return "", fmt.Errorf("posture: public key: %w", err)
	}
	hdr := `{"typ":"` + ReportType + `","alg":"ES256","jwk":{"crv":"P-256","kty":"EC","x":"` +
		b64.EncodeToString(pt[1:33]) + `","y":"` + b64.EncodeToString(pt[33:]) + `"}}`
	input := b64.EncodeToString([]byte(hdr)) + "." + b64.EncodeToString(payload)
	digest := sha256.Sum256([]byte(input))
	der, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("posture: sign report: %w", err)
	}
	raw, err := derToRaw(der)
	if err != nil {
		return "", err
	}
	tok := input + "." + b64.EncodeToString(raw)
	if len(tok) > MaxReportSize {
		return "", fmt.Errorf("posture: report of %d bytes exceeds %d", len(tok), MaxReportSize)
	}
	return tok, nil
}

// derToRaw converts an ASN.1 ECDSA P-256 signature to JWS R || S.
func derToRaw(der []byte) ([]byte, error) {
	var r, s big.Int
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, asn1.SEQUENCE) || !in.Empty() || !seq.ReadASN1Integer(&r) || !seq.ReadASN1Integer(&s) || !seq.Empty() ||
		r.Sign() <= 0 || s.Sign() <= 0 || r.BitLen() > 256 || s.BitLen() > 256 {
		return nil, errors.New("posture: signer returned a malformed ECDSA signature")
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out, nil
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
// and finally a nonce that opts.CheckNonce accepts.
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
	h, rest, ok := strings.Cut(token, ".")
	if !ok {
		return nil, reject(ReasonMalformed, "not a compact JWS")
	}
	p, s, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(s, ".") {
		return nil, reject(ReasonMalformed, "not a compact JWS")
	}
	hdr, err := b64.DecodeString(h)
	if err != nil {
		return nil, reject(ReasonMalformed, "header is not base64url")
	}
	pub, jkt, rerr := parseHeader(hdr)
	if rerr != nil {
		return nil, rerr
	}
	if subtle.ConstantTimeCompare([]byte(jkt), []byte(opts.JKT)) != 1 {
		return nil, reject(ReasonKeyMismatch, "report key is not the device's registered key")
	}
	sig, err := b64.DecodeString(s)
	if err != nil || len(sig) != 64 {
		return nil, reject(ReasonSignature, "signature is not a 64-byte ES256 signature")
	}
	digest := sha256.Sum256([]byte(token[:len(h)+1+len(p)]))
	if !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return nil, reject(ReasonSignature, "signature does not verify")
	}
	payload, err := b64.DecodeString(p)
	if err != nil {
		return nil, reject(ReasonMalformed, "payload is not base64url")
	}
	var c reportClaims
	if rerr := decodeStrict(payload, &c); rerr != nil {
		return nil, rerr
	}
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
		DeviceID: c.Sub, JTI: c.JTI, Nonce: c.Nonce, IssuedAt: iat, ExpiresAt: exp, JKT: jkt, Posture: *c.Posture,
	}, nil
}

// parseHeader checks the protected header and returns the report key and
// its thumbprint.
func parseHeader(hdr []byte) (*ecdsa.PublicKey, string, *Error) {
	if err := checkJSON(hdr); err != nil {
		return nil, "", reject(ReasonMalformed, "header is not a JSON object without duplicate members")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &m); err != nil {
		return nil, "", reject(ReasonMalformed, "header is not a JSON object")
	}
	var typ, alg string
	if json.Unmarshal(m["typ"], &typ) != nil || typ != ReportType {
		return nil, "", reject(ReasonType, "typ is not "+ReportType)
	}
	if json.Unmarshal(m["alg"], &alg) != nil || alg != "ES256" {
		return nil, "", reject(ReasonAlg, "alg is not ES256")
	}
	if len(m) != 3 || m["jwk"] == nil {
		return nil, "", reject(ReasonKey, "header must hold exactly typ, alg and jwk")
	}
	var jwk map[string]string
	if err := json.Unmarshal(m["jwk"], &jwk); err != nil || len(jwk) != 4 ||
		jwk["kty"] != "EC" || jwk["crv"] != "P-256" {
		return nil, "", reject(ReasonKey, "jwk must be exactly a public EC P-256 key (kty, crv, x, y)")
	}
	x, errx := b64.DecodeString(jwk["x"])
	y, erry := b64.DecodeString(jwk["y"])
	if errx != nil || erry != nil || len(x) != 32 || len(y) != 32 {
		return nil, "", reject(ReasonKey, "jwk coordinates are not 32-byte base64url")
	}
	pt := make([]byte, 0, 65)
	pt = append(append(append(pt, 4), x...), y...)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pt)
	if err != nil {
		return nil, "", reject(ReasonKey, "jwk is not a point on P-256")
	}
	jkt, err := dpop.Thumbprint(&jose.JSONWebKey{Key: pub})
	if err != nil {
		return nil, "", reject(ReasonKey, "no thumbprint for jwk")
	}
	return pub, jkt, nil
}

// wireClaims is reportClaims as parsed: posture is decoded separately so
// that its errors get ReasonPosture.
type wireClaims struct {
	Iss     string          `json:"iss"`
	Sub     string          `json:"sub"`
	Iat     int64           `json:"iat"`
	Exp     int64           `json:"exp"`
	JTI     string          `json:"jti"`
	Nonce   string          `json:"nonce"`
	Posture json.RawMessage `json:"posture"`
}

// decodeStrict decodes the claims: one JSON object, no duplicate or
// unknown members (also inside posture), valid state values.
func decodeStrict(payload []byte, c *reportClaims) *Error {
	if err := checkJSON(payload); err != nil {
		return reject(ReasonClaims, "claims are not a JSON object without duplicate members")
	}
	var w wireClaims
	if err := unmarshalClosed(payload, &w); err != nil {
		return reject(ReasonClaims, "claims are malformed, mistyped or unknown")
	}
	*c = reportClaims{Iss: w.Iss, Sub: w.Sub, Iat: w.Iat, Exp: w.Exp, JTI: w.JTI, Nonce: w.Nonce}
	if len(w.Posture) == 0 || string(w.Posture) == "null" {
		return nil // reported as missing posture by the caller
	}
	c.Posture = new(Posture)
	if err := unmarshalClosed(w.Posture, c.Posture); err != nil {
		if errors.Is(err, errInvalidState) {
			return reject(ReasonPosture, "invalid state value")
		}
		return reject(ReasonPosture, "posture has unknown, mistyped or malformed fields")
	}
	return nil
}

// unmarshalClosed decodes one JSON value into v, rejecting unknown
// fields and trailing data.
func unmarshalClosed(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data")
	}
	return nil
}

// checkJSON verifies that data is one JSON object in which no object has
// a member name twice (encoding/json would silently keep the last, which
// invites parser differentials) and nesting is at most maxDepth deep.
// It only finds the structure; full syntax is left to encoding/json,
// which decodes the same bytes afterwards.
func checkJSON(data []byte) error {
	s := jscan{b: data}
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '{' {
		return errJSON
	}
	if err := s.value(0); err != nil {
		return err
	}
	s.ws()
	if s.i != len(s.b) {
		return errJSON
	}
	return nil
}

const maxDepth = 16

var errJSON = errors.New("posture: not a JSON object without duplicate members")

// jscan is a minimal JSON structure scanner.
type jscan struct {
	b []byte
	i int
}

func (s *jscan) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// str consumes a string at s.i and returns its raw content and whether
// it has escapes.
func (s *jscan) str() ([]byte, bool, error) {
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, false, errJSON
	}
	start, esc := s.i+1, false
	for j := start; j < len(s.b); j++ {
		switch c := s.b[j]; {
		case c == '\\':
			esc = true
			j++
		case c == '"':
			s.i = j + 1
			return s.b[start:j], esc, nil
		case c < 0x20:
			return nil, false, errJSON
		}
	}
	return nil, false, errJSON
}

func (s *jscan) value(depth int) error {
	s.ws()
	if s.i >= len(s.b) {
		return errJSON
	}
	switch s.b[s.i] {
	case '{':
		return s.object(depth + 1)
	case '[':
		if depth+1 > maxDepth {
			return errJSON
		}
		s.i++
		s.ws()
		if s.i < len(s.b) && s.b[s.i] == ']' {
			s.i++
			return nil
		}
		for {
			if err := s.value(depth + 1); err != nil {
				return err
			}
			s.ws()
			if s.i >= len(s.b) {
				return errJSON
			}
			c := s.b[s.i]
			s.i++
			if c == ']' {
				return nil
			}
			if c != ',' {
				return errJSON
			}
		}
	case '"':
		_, _, err := s.str()
		return err
	}
	// number or literal: up to the next delimiter
	start := s.i
	for s.i < len(s.b) && !strings.ContainsRune(",]} \t\n\r", rune(s.b[s.i])) {
		s.i++
	}
	if s.i == start {
		return errJSON
	}
	return nil
}

func (s *jscan) object(depth int) error {
	if depth > maxDepth {
		return errJSON
	}
	s.i++ // '{'
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		return nil
	}
	var small [16]string
	names := small[:0]
	var many map[string]bool
	for {
		s.ws()
		raw, esc, err := s.str()
		if err != nil {
			return err
		}
		name := string(raw)
		if esc {
			if err := json.Unmarshal(s.b[s.i-len(raw)-2:s.i], &name); err != nil {
				return errJSON
			}
		}
		if many != nil {
			if many[name] {
				return errJSON
			}
			many[name] = true
		} else {
			for _, n := range names {
				if n == name {
					return errJSON
				}
			}
			names = append(names, name)
			if len(names) == len(small) {
				many = make(map[string]bool, 2*len(small))
				for _, n := range names {
					many[n] = true
				}
			}
		}
		s.ws()
		if s.i >= len(s.b) || s.b[s.i] != ':' {
			return errJSON
		}
		s.i++
		if err := s.value(depth); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return errJSON
		}
		c := s.b[s.i]
		s.i++
		if c == '}' {
			return nil
		}
		if c != ',' {
			return errJSON
		}
	}
}
