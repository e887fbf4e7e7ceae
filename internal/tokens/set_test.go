package tokens

import (
	"encoding/json"
	"errors"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// setClaims is a CAEP session-revoked SET of typical size.
func setClaims() map[string]any {
	return map[string]any{
		"iss": testIssuer, "aud": "receiver-1", "jti": "5a2b7c0e9f1d4e3ab7c6d5e4f3a2b1c0", "iat": 1_800_000_000,
		"txn": "0f3e2d1c-4b5a-6978-8a9b-0c1d2e3f4a5b",
		"sub_id": map[string]any{"format": "complex",
			"user":    map[string]string{"format": "iss_sub", "iss": testIssuer, "sub": "0b9f6d52-7e3c-4a1f-9d2e-6c5b4a3f2e1d"},
			"session": map[string]string{"format": "opaque", "id": "s-0123456789abcdef0123456789abcdef"}},
		"events": map[string]any{"https://schemas.openid.net/secevent/caep/event-type/session-revoked": map[string]any{
			"event_timestamp": 1_800_000_000, "initiating_entity": "admin", "reason_admin": map[string]string{"en": "session revoked by an administrator"}}},
	}
}

func TestMintSET(t *testing.T) {
	f := newFixture(t)
	set, err := f.m.MintSET(setClaims())
	if err != nil {
		t.Fatal(err)
	}
	// Checked with go-jose against the published JWKS: an implementation
	// independent of the signer.
	jws, err := jose.ParseSignedCompact(set, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	h := jws.Signatures[0].Protected
	if h.Algorithm != "ES256" || h.KeyID != f.m.ActiveKID() || h.ExtraHeaders["typ"] != "secevent+jwt" {
		t.Errorf("header = alg %q kid %q typ %v; want ES256, %s, secevent+jwt", h.Algorithm, h.KeyID, h.ExtraHeaders["typ"], f.m.ActiveKID())
	}
	jwks := f.m.JWKS()
	keys := jwks.Key(h.KeyID)
	if len(keys) != 1 {
		t.Fatalf("kid %s not in JWKS", h.KeyID)
	}
	payload, err := jws.Verify(keys[0])
	if err != nil {
		t.Fatalf("signature: %v", err)
	}
	var got map[string]any
	if err := json.Unmarshal(payload, &got); err != nil {
		t.Fatal(err)
	}
	if got["iss"] != testIssuer || got["jti"] == nil || got["sub"] != nil || got["exp"] != nil {
		t.Errorf("claims = %v", got)
	}
	// A SET is not an access token: the typ check refuses it.
	if _, err := f.m.ParseAccessToken(set, testIssuer, f.clock.Now()); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("ParseAccessToken(SET) = %v, want ErrInvalidToken", err)
	}
	if err := f.m.Verify(set, TypeSET, nil); err != nil {
		t.Errorf("Verify(SET, secevent+jwt) = %v", err)
	}
	// Raw claims are signed as given; a non-object is refused.
	raw, _ := json.Marshal(setClaims())
	set2, err := f.m.MintSET(json.RawMessage(raw))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.m.Verify(set2, TypeSET, &got); err != nil || got["jti"] != "5a2b7c0e9f1d4e3ab7c6d5e4f3a2b1c0" {
		t.Errorf("raw SET: %v %v", err, got)
	}
	if _, err := f.m.MintSET(json.RawMessage(`["x"]`)); err == nil {
		t.Error("MintSET signed a JSON array")
	}
	// The SET's header is the one pre-encoded for the signer (no per-call
	// header marshalling).
	if hdr := f.m.state.Load().signer.headers[TypeSET]; hdr == "" || set[:len(hdr)] != hdr {
		t.Error("SET header is not the signer's pre-encoded secevent+jwt header")
	}
}

// BenchmarkMintSET signs a CAEP SET (claims pre-marshalled, as the
// transmitter does for each receiver); compare with
// BenchmarkECDSAP256Sign in the same run.
func BenchmarkMintSET(b *testing.B) {
	f := newFixture(b)
	raw, err := json.Marshal(setClaims())
	if err != nil {
		b.Fatal(err)
	}
	claims := json.RawMessage(raw)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.m.MintSET(claims); err != nil {
			b.Fatal(err)
		}
	}
}
