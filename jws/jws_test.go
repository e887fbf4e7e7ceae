package jws

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/jsonobj"
)

func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestSplit(t *testing.T) {
	for _, tc := range []struct {
		in                      string
		ok                      bool
		hdr, payload, sig, sign string
		complete                bool
	}{
		{"a.b.c", true, "a", "b", "c", "a.b", true},
		{"..", true, "", "", "", ".", false},
		{"a..c", true, "a", "", "c", "a.", false},
		{"a.b.", true, "a", "b", "", "a.b", false},
		{".b.c", true, "", "b", "c", ".b", false},
		{"", false, "", "", "", "", false},
		{"abc", false, "", "", "", "", false},
		{"a.b", false, "", "", "", "", false},
		{"a.b.c.d", false, "", "", "", "", false},
		{"a.b.c.d.e", false, "", "", "", "", false}, // JWE
		{`{"protected":"a","payload":"b","signature":"c"}`, false, "", "", "", "", false},
	} {
		c, err := Split(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("Split(%q) err = %v", tc.in, err)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("Split(%q) err = %v, want ErrMalformed", tc.in, err)
			}
			continue
		}
		if c.Header() != tc.hdr || c.Payload() != tc.payload || c.Signature() != tc.sig || c.SigningInput() != tc.sign || c.Complete() != tc.complete {
			t.Errorf("Split(%q) = %q %q %q %q %v", tc.in, c.Header(), c.Payload(), c.Signature(), c.SigningInput(), c.Complete())
		}
	}
}

func TestDecodeSegment(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"", true},
		{"YQ", true},
		{"YR", false},   // non-zero unused bits: a second encoding of "a"
		{"YQ==", false}, // padding
		{"YQ=", false},
		{"Y", false},
		{"-_-_", true},
		{"+/+/", false}, // standard alphabet
		{"YW\nJj", false},
		{"YW\rJj", false},
		{"YW Jj", false},
		{"YWJj", true},
	} {
		_, err := DecodeSegment(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("DecodeSegment(%q) err = %v, want ok %v", tc.in, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrEncoding) {
			t.Errorf("DecodeSegment(%q) err = %v", tc.in, err)
		}
	}
}

func TestParseHeader(t *testing.T) {
	long := `{"alg":"ES256","x":"` + strings.Repeat("a", MaxHeaderSize) + `"}`
	many := `{"alg":"ES256"`
	for i := range jsonobj.MaxMembers {
		many += `,"m` + string(rune('a'+i%26)) + string(rune('a'+i/26)) + `":1`
	}
	many += "}"
	for _, tc := range []struct {
		name, in string
		seg      string // when set, used instead of enc(in)
		err      error
	}{
		{name: "minimal", in: `{"alg":"ES256"}`},
		{name: "whitespace", in: " {\n\"alg\" : \"ES256\" }\t"},
		{name: "duplicate", in: `{"alg":"ES256","alg":"none"}`, err: ErrHeader},
		{name: "escaped duplicate", in: `{"alg":"ES256","\u0061lg":"none"}`, err: ErrHeader},
		{name: "case differs is no duplicate", in: `{"alg":"ES256","ALG":"none"}`},
		{name: "array", in: `["alg"]`, err: ErrHeader},
		{name: "string", in: `"alg"`, err: ErrHeader},
		{name: "trailing data", in: `{"alg":"ES256"}{}`, err: ErrHeader},
		{name: "trailing comma", in: `{"alg":"ES256",}`, err: ErrHeader},
		{name: "invalid UTF-8", in: "{\"alg\":\"ES256\",\"x\":\"\xff\"}", err: ErrHeader},
		{name: "empty", in: ``, err: ErrHeader},
		{name: "too many members", in: many, err: ErrHeader},
		{name: "too large", in: long, err: ErrHeader},
		{name: "nested duplicate", in: `{"alg":"ES256","x-ext":{"a":1,"a":2}}`, err: ErrHeader},
		{name: "nested escaped duplicate in an array", in: `{"alg":"ES256","x":[{"a":1,"\u0061":2}]}`, err: ErrHeader},
		{name: "nested too deep", in: `{"alg":"ES256","x":` + strings.Repeat("[", jsonobj.MaxDepth+1) + strings.Repeat("]", jsonobj.MaxDepth+1) + `}`, err: ErrHeader},
		{name: "nested, unique", in: `{"alg":"ES256","x":{"a":1,"A":[{"a":2}]}}`},
		{name: "duplicate inside jwk: left to ParseJWK", in: `{"alg":"ES256","jwk":{"kty":"EC","kty":"EC"}}`},
		{name: "not base64url", seg: "eyJ+", err: ErrEncoding},
		{name: "padded", seg: enc(`{"alg":"ES256"}`) + "=", err: ErrEncoding},
	} {
		seg := tc.seg
		if seg == "" {
			seg = enc(tc.in)
		}
		h, err := ParseHeader(seg, nil)
		if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.err)
			continue
		}
		if err == nil && (h.Alg != "ES256" || !h.IsString(ParamAlg)) {
			t.Errorf("%s: alg = %q", tc.name, h.Alg)
		}
	}

	h, err := ParseHeader(enc(`{"x":1,"typ":["a"],"kid":"k1","alg":null,"jwk":{"kty":"EC"},"jku":"u","crit":["x"]}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case !h.Has(ParamTyp) || h.IsString(ParamTyp) || h.Typ != "":
		t.Error("typ: array is present but not a string")
	case !h.Has(ParamAlg) || h.IsString(ParamAlg):
		t.Error("alg: null is present but not a string")
	case h.Kid != "k1" || !h.IsString(ParamKid):
		t.Errorf("kid = %q", h.Kid)
	case string(h.JWK) != `{"kty":"EC"}` || !h.Has(ParamJWK):
		t.Errorf("jwk = %s", h.JWK)
	case !h.Mistyped():
		t.Error("Mistyped is false")
	case h.Len() != 7:
		t.Errorf("Len = %d", h.Len())
	case h.KeyReference() != "jku" || h.Unsupported() != "crit" || h.First("crit", "jku") != "jku" || h.First("nope") != "":
		t.Errorf("KeyReference %q, Unsupported %q", h.KeyReference(), h.Unsupported())
	}
}

func TestRulesCheck(t *testing.T) {
	es := Rules{Algs: []Algorithm{ES256}, Typ: "at+jwt", MediaType: true}
	exact := Rules{Algs: []Algorithm{ES256, EdDSA}, Typ: "dpop+jwt"}
	open := Rules{Algs: []Algorithm{ES256, "HS256", "none"}}
	for _, tc := range []struct {
		name string
		r    Rules
		hdr  string
		err  error
		alg  Algorithm
	}{
		{"ok", es, `{"alg":"ES256","typ":"at+jwt"}`, nil, ES256},
		{"media type upper case", es, `{"alg":"ES256","typ":"AT+JWT"}`, nil, ES256},
		{"media type with application/", es, `{"alg":"ES256","typ":"Application/at+jwt"}`, nil, ES256},
		{"media type other", es, `{"alg":"ES256","typ":"application/jwt"}`, ErrTyp, ""},
		{"media type two slashes", es, `{"alg":"ES256","typ":"application/at+jwt/x"}`, ErrTyp, ""},
		{"typ missing", es, `{"alg":"ES256"}`, ErrTyp, ""},
		{"typ empty", es, `{"alg":"ES256","typ":""}`, ErrTyp, ""},
		{"exact", exact, `{"alg":"EdDSA","typ":"dpop+jwt"}`, nil, EdDSA},
		{"exact case", exact, `{"alg":"ES256","typ":"DPoP+JWT"}`, ErrTyp, ""},
		{"exact application/", exact, `{"alg":"ES256","typ":"application/dpop+jwt"}`, ErrTyp, ""},
		{"typ not a string", exact, `{"alg":"ES256","typ":["dpop+jwt"]}`, ErrHeader, ""},
		{"alg not a string", es, `{"alg":["ES256"],"typ":"at+jwt"}`, ErrHeader, ""},
		{"kid not a string", es, `{"alg":"ES256","typ":"at+jwt","kid":1}`, ErrHeader, ""},
		{"alg null", es, `{"alg":null,"typ":"at+jwt"}`, ErrHeader, ""},
		{"alg missing", es, `{"typ":"at+jwt"}`, ErrAlg, ""},
		{"alg lower case", es, `{"alg":"es256","typ":"at+jwt"}`, ErrAlg, ""},
		{"alg not allowed", es, `{"alg":"ES384","typ":"at+jwt"}`, ErrAlg, ""},
		{"alg none even if listed", open, `{"alg":"none"}`, ErrAlg, ""},
		{"HS256 even if listed", open, `{"alg":"HS256"}`, ErrAlg, ""},
		{"no typ rule", open, `{"alg":"ES256"}`, nil, ES256},
		{"crit", es, `{"alg":"ES256","typ":"at+jwt","crit":["exp"],"exp":1}`, ErrUnsupported, ""},
		{"crit empty", es, `{"alg":"ES256","typ":"at+jwt","crit":[]}`, ErrUnsupported, ""},
		{"b64", es, `{"alg":"ES256","typ":"at+jwt","b64":false}`, ErrUnsupported, ""},
		{"zip", es, `{"alg":"ES256","typ":"at+jwt","zip":"DEF"}`, ErrUnsupported, ""},
		{"enc (JWE)", es, `{"alg":"ES256","typ":"at+jwt","enc":"A256GCM"}`, ErrUnsupported, ""},
		{"crit before alg", es, `{"alg":"none","crit":["x"]}`, ErrUnsupported, ""},
		{"unknown members ignored", es, `{"alg":"ES256","typ":"at+jwt","x-ext":{"a":[1]},"jku":"https://x"}`, nil, ES256},
		{"jwk with a duplicate member", es, `{"alg":"ES256","typ":"at+jwt","jwk":{"kty":"EC","kty":"EC"}}`, ErrHeader, ""},
		{"jwk not an object is the caller's", es, `{"alg":"ES256","typ":"at+jwt","jwk":"x"}`, nil, ES256},
	} {
		h, err := ParseHeader(enc(tc.hdr), nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		alg, err := tc.r.Check(&h)
		if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) || alg != tc.alg {
			t.Errorf("%s: Check = %q, %v; want %q, %v", tc.name, alg, err, tc.alg, tc.err)
		}
	}
}

func TestMediaTypeEqual(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		eq   bool
	}{
		{"at+jwt", "at+jwt", true},
		{"at+jwt", "application/at+jwt", true},
		{"APPLICATION/AT+JWT", "at+jwt", true},
		{"application/", "application/", true},
		{"application/x/y", "x/y", false},
		{"jwt", "at+jwt", false},
		{"", "", true},
		{"text/at+jwt", "at+jwt", false},
	} {
		if got := MediaTypeEqual(tc.a, tc.b); got != tc.eq {
			t.Errorf("MediaTypeEqual(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}

// TestSignVerifyEveryAlgorithm signs with AppendSign and verifies with
// Verify and with go-jose, and go-jose's own signatures with Verify.
func TestSignVerifyEveryAlgorithm(t *testing.T) {
	k := getKeys(t)
	payload := []byte(`{"iss":"https://ward.example","n":1}`)
	for _, alg := range Algorithms() {
		key := k.signer(alg)
		hdr := []byte(`{"alg":"` + string(alg) + `","typ":"JWT"}`)
		tok := sign(t, alg, key, hdr, payload)
		c, err := Split(tok)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := DecodeSegment(c.Signature())
		if err != nil {
			t.Fatal(err)
		}
		if !Verify(alg, key.Public(), c.SigningInput(), sig) {
			t.Errorf("%s: own signature does not verify", alg)
		}
		obj, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(alg)})
		if err != nil {
			t.Fatalf("%s: go-jose: %v", alg, err)
		}
		if got, err := obj.Verify(key.Public()); err != nil || string(got) != string(payload) {
			t.Errorf("%s: go-jose does not verify our signature: %v", alg, err)
		}
		// The other way round.
		js, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.SignatureAlgorithm(alg), Key: key}, nil)
		if err != nil {
			t.Fatal(err)
		}
		o, err := js.Sign(payload)
		if err != nil {
			t.Fatal(err)
		}
		theirs, _ := o.CompactSerialize()
		c, _ = Split(theirs)
		sig, _ = DecodeSegment(c.Signature())
		if !Verify(alg, key.Public(), c.SigningInput(), sig) {
			t.Errorf("%s: go-jose's signature does not verify", alg)
		}
		// Tampering, another key of the same type, other algorithms.
		if Verify(alg, key.Public(), c.SigningInput()+"x", sig) {
			t.Errorf("%s: verifies over other input", alg)
		}
		for _, other := range k.publics() {
			if !other.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) && Verify(alg, other, c.SigningInput(), sig) {
				t.Errorf("%s: verifies with %T", alg, other)
			}
		}
		if Verify("HS256", key.Public(), c.SigningInput(), sig) || Verify("none", key.Public(), c.SigningInput(), nil) {
			t.Errorf("%s: verifies as HS256 or none", alg)
		}
	}
	// ES256 through the hot path.
	tok := sign(t, ES256, k.p256, []byte(`{"alg":"ES256"}`), payload)
	c, _ := Split(tok)
	if !VerifyES256(&k.p256.PublicKey, c.SigningInput(), c.Signature()) {
		t.Error("VerifyES256 refuses a valid signature")
	}
	if VerifyES256(&k.p384.PublicKey, c.SigningInput(), c.Signature()) {
		t.Error("VerifyES256 accepts a P-384 key")
	}
}

// TestRFCVectors verifies the examples of RFC 7515 (A.3, ES256) and
// RFC 8037 (A.4, Ed25519).
func TestRFCVectors(t *testing.T) {
	xy := func(x, y string) *ecdsa.PublicKey {
		jwk := []byte(`{"kty":"EC","crv":"P-256","x":"` + x + `","y":"` + y + `"}`)
		k, err := ParseJWK(jwk, ES256)
		if err != nil {
			t.Fatal(err)
		}
		return k.Key.(*ecdsa.PublicKey)
	}
	es := "eyJhbGciOiJFUzI1NiJ9" +
		".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ" +
		".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
	pub := xy("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0")
	c, err := Split(es)
	if err != nil {
		t.Fatal(err)
	}
	if !VerifyES256(pub, c.SigningInput(), c.Signature()) {
		t.Error("RFC 7515 A.3 does not verify")
	}
	ed := "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc" +
		".hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
	k, err := ParseJWK([]byte(`{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`), EdDSA)
	if err != nil {
		t.Fatal(err)
	}
	c, _ = Split(ed)
	sig, _ := DecodeSegment(c.Signature())
	if !Verify(EdDSA, k.Key, c.SigningInput(), sig) {
		t.Error("RFC 8037 A.4 does not verify")
	}
	if k.Thumbprint != "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k" { // RFC 8037 A.3
		t.Errorf("RFC 8037 thumbprint = %s", k.Thumbprint)
	}
}

func TestECDSASignatureForms(t *testing.T) {
	k := getKeys(t)
	in := "eyJhbGciOiJFUzI1NiJ9.e30"
	d := sha256.Sum256([]byte(in))
	der, err := ecdsa.SignASN1(rand.Reader, k.p256, d[:])
	if err != nil {
		t.Fatal(err)
	}
	var raw [64]byte
	if !derToRaw(der, raw[:], 32) {
		t.Fatal("derToRaw refused a real signature")
	}
	if !Verify(ES256, &k.p256.PublicKey, in, raw[:]) {
		t.Fatal("raw signature does not verify")
	}
	if Verify(ES256, &k.p256.PublicKey, in, der) {
		t.Error("a DER signature verifies: only R || S is JWS")
	}
	// (r, n-s) is the other valid ECDSA signature; go-jose accepts it too.
	r, s := new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])
	hi := make([]byte, 64)
	r.FillBytes(hi[:32])
	new(big.Int).Sub(elliptic.P256().Params().N, s).FillBytes(hi[32:])
	if !Verify(ES256, &k.p256.PublicKey, in, hi) {
		t.Error("(r, n-s) refused")
	}
	for name, sig := range map[string][]byte{
		"zero":        make([]byte, 64),
		"r zero":      append(make([]byte, 32), raw[32:]...),
		"r = n":       append(elliptic.P256().Params().N.FillBytes(make([]byte, 32)), raw[32:]...),
		"short":       raw[:63],
		"long":        append(raw[:], 0),
		"left-padded": append([]byte{0}, raw[:]...),
	} {
		if Verify(ES256, &k.p256.PublicKey, in, sig) {
			t.Errorf("%s signature verifies", name)
		}
	}
}

func TestDERConversion(t *testing.T) {
	k := getKeys(t)
	for _, key := range []*ecdsa.PrivateKey{k.p256, k.p384, k.p521} {
		size := (key.Curve.Params().BitSize + 7) / 8
		for i := 0; i < 300; i++ {
			d := sha256.Sum256([]byte{byte(i)})
			der, err := ecdsa.SignASN1(rand.Reader, key, d[:])
			if err != nil {
				t.Fatal(err)
			}
			raw := make([]byte, 2*size)
			if !derToRaw(der, raw, size) {
				t.Fatalf("derToRaw(%x) refused", der)
			}
			var back [maxDER]byte
			if n := rawToDER(back[:], raw[:size], raw[size:]); string(back[:n]) != string(der) {
				t.Fatalf("rawToDER(derToRaw(%x)) = %x", der, back[:n])
			}
		}
	}
	for _, bad := range [][]byte{
		nil, {0x30}, {0x31, 0}, {0x30, 2, 2, 0}, {0x30, 3, 2, 1, 1},
		{0x30, 6, 2, 1, 1, 2, 1, 0},                          // s zero
		{0x30, 6, 2, 1, 0x81, 2, 1, 1},                       // r negative
		{0x30, 7, 2, 2, 0, 1, 2, 1, 1},                       // r not minimal
		{0x30, 0x81, 6, 2, 1, 1, 2, 1, 1},                    // long length form for a short body
		{0x30, 7, 2, 1, 1, 2, 1, 1, 0},                       // trailing data
		append([]byte{0x30, 38, 2, 33}, make([]byte, 37)...), // 33-byte r for P-256
	} {
		raw := make([]byte, 64)
		if derToRaw(bad, raw, 32) {
			t.Errorf("derToRaw(%x) accepted", bad)
		}
	}
}

func TestAppendSignErrors(t *testing.T) {
	k := getKeys(t)
	if _, err := AppendSign([]byte("a.b"), "HS256", k.p256, rand.Reader); err == nil {
		t.Error("HS256 signed")
	}
	if _, err := AppendSign([]byte("a.b"), ES256, nil, rand.Reader); err == nil {
		t.Error("nil key signed")
	}
	if _, err := AppendSign([]byte("a.b"), ES256, hsmSigner{k.p256, []byte{0x30, 0}}, rand.Reader); !errors.Is(err, errSigner) {
		t.Errorf("malformed DER from the signer: %v", err)
	}
	// A P-384 key asked for ES256 yields integers too long for it.
	if _, err := AppendSign([]byte("a.b"), ES256, hsmSigner{k.p384, nil}, rand.Reader); err == nil {
		t.Error("ES256 with a P-384 key signed")
	}
}

// hsmSigner is a crypto.Signer that is not an *ecdsa.PrivateKey (the
// path of hardware keys); der, when set, replaces its result.
type hsmSigner struct {
	k   *ecdsa.PrivateKey
	der []byte
}

func (h hsmSigner) Public() crypto.PublicKey { return h.k.Public() }
func (h hsmSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	if h.der != nil {
		return h.der, nil
	}
	return h.k.Sign(r, d, o)
}

func TestAppendSignHardwareSigner(t *testing.T) {
	k := getKeys(t)
	tok, err := AppendSign([]byte(enc(`{"alg":"ES256"}`)+"."+enc("x")), ES256, hsmSigner{k: k.p256}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := Split(string(tok))
	if !VerifyES256(&k.p256.PublicKey, c.SigningInput(), c.Signature()) {
		t.Error("signature of a crypto.Signer does not verify")
	}
}

func TestParseJWK(t *testing.T) {
	k := getKeys(t)
	p256 := canonJWK(t, k.p256)
	with := func(base, extra string) string { return base[:len(base)-1] + "," + extra + "}" }
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsa1024 := `{"kty":"RSA","n":"` + EncodeSegment(small.N.Bytes()) + `","e":"AQAB"}`
	for _, tc := range []struct {
		name, jwk string
		alg       Algorithm
		err       error
	}{
		{"P-256", p256, ES256, nil},
		{"P-256 with kid, alg, use", with(p256, `"kid":"k","alg":"ES256","use":"sig"`), ES256, nil},
		{"P-384", canonJWK(t, k.p384), ES384, nil},
		{"P-521", canonJWK(t, k.p521), ES512, nil},
		{"RSA PS256", canonJWK(t, k.rsa), PS256, nil},
		{"RSA RS512", canonJWK(t, k.rsa), RS512, nil},
		{"Ed25519", canonJWK(t, k.ed), EdDSA, nil},
		{"not an object", `"eyJrdHkiOiJFQyJ9"`, ES256, ErrJWKNotObject},
		{"duplicate member", with(p256, `"kty":"EC"`), ES256, ErrJWKNotObject},
		{"nested duplicate member", with(p256, `"ext":{"a":1,"a":2}`), ES256, ErrJWKNotObject},
		{"private d", with(p256, `"d":"AAAA"`), ES256, ErrJWKPrivate},
		{"symmetric", `{"kty":"oct","k":"c2VjcmV0"}`, ES256, ErrJWKPrivate},
		{"oct without k", `{"kty":"oct"}`, ES256, ErrJWKSymmetric},
		{"alg mismatch", with(p256, `"alg":"RS256"`), ES256, ErrJWKAlg},
		{"use enc", with(p256, `"use":"enc"`), ES256, ErrJWKUse},
		{"x5c", with(p256, `"x5c":["MIIB"]`), ES256, ErrJWKCertificate},
		{"kid not a string", with(p256, `"kid":1`), ES256, ErrJWKMember},
		{"crv not a string", `{"kty":"EC","crv":1,"x":"","y":""}`, ES256, ErrJWKMember},
		{"no kty", `{"crv":"P-256"}`, ES256, ErrJWKNoKty},
		{"kty for another alg", p256, EdDSA, ErrJWKKeyType},
		{"curve for another alg", p256, ES384, ErrJWKCurve},
		{"kty case", strings.Replace(p256, `"EC"`, `"ec"`, 1), ES256, ErrJWKKeyType},
		{"no y", `{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"}`, ES256, ErrJWKCurve},
		{"short x", `{"kty":"EC","crv":"P-256","x":"83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`, ES256, ErrJWKECEncoding},
		{"not on the curve", `{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"}`, ES256, ErrJWKECPoint},
		{"OKP short", `{"kty":"OKP","crv":"Ed25519","x":"AAAA"}`, EdDSA, ErrJWKOKPEncoding},
		{"OKP X25519", `{"kty":"OKP","crv":"X25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`, EdDSA, ErrJWKCurve},
		{"RSA-1024", rsa1024, PS256, ErrJWKRSAModulus},
		{"RSA exponent 1", strings.Replace(canonJWK(t, k.rsa), `"AQAB"`, `"AQ"`, 1), PS256, ErrJWKRSAExponent},
		{"RSA even exponent", strings.Replace(canonJWK(t, k.rsa), `"AQAB"`, `"AQAC"`, 1), PS256, ErrJWKRSAExponent},
		{"RSA exponent with a leading zero", strings.Replace(canonJWK(t, k.rsa), `"AQAB"`, `"AAEAAQ"`, 1), PS256, ErrJWKRSAEncoding},
		{"RSA without e", `{"kty":"RSA","n":"AQAB"}`, PS256, ErrJWKRSAEncoding},
	} {
		got, err := ParseJWK([]byte(tc.jwk), tc.alg)
		if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		// Same key and thumbprint as go-jose reads.
		var jk jose.JSONWebKey
		if err := jk.UnmarshalJSON([]byte(tc.jwk)); err != nil {
			t.Fatalf("%s: go-jose: %v", tc.name, err)
		}
		tp, _ := jk.Thumbprint(crypto.SHA256)
		if got.Thumbprint != EncodeSegment(tp) {
			t.Errorf("%s: thumbprint %s, go-jose %s", tc.name, got.Thumbprint, EncodeSegment(tp))
		}
		if eq, ok := got.Key.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(jk.Key) {
			t.Errorf("%s: key differs from go-jose's", tc.name)
		}
	}
	// RFC 7638 §3.1.
	rfc := `{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}`
	got, err := ParseJWK([]byte(rfc), RS256)
	if err != nil || got.Thumbprint != "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" || got.Members != 5 {
		t.Errorf("RFC 7638 example: %+v, %v", got, err)
	}
}

func TestCanonicalJWKAndThumbprint(t *testing.T) {
	k := getKeys(t)
	for _, pub := range k.publics() {
		tp, err := Thumbprint(pub)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
		if tp != EncodeSegment(want) {
			t.Errorf("%T: thumbprint %s, go-jose %s", pub, tp, EncodeSegment(want))
		}
	}
	if _, err := CanonicalJWK(ed25519.PublicKey{1}); err == nil {
		t.Error("short Ed25519 key")
	}
	if _, err := CanonicalJWK("key"); err == nil {
		t.Error("string key")
	}
}

// TestRFC7520Cookbook verifies the signed examples of the JOSE Cookbook
// with the public half of their keys, and refuses the HMAC one.
func TestRFC7520Cookbook(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"4_1.rsa_v15_signature", true},
		{"4_2.rsa-pss_signature", true},
		{"4_3.ecdsa_signature", true},
		{"4_4.hmac-sha2_integrity_protection", false},
	} {
		cb := loadCookbook(t, tc.name)
		c, err := Split(cb.Output.Compact)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		h, err := ParseHeader(c.Header(), nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		r := Rules{Algs: []Algorithm{Algorithm(cb.Input.Alg)}}
		alg, err := r.Check(&h)
		if !tc.ok {
			if !errors.Is(err, ErrAlg) {
				t.Errorf("%s: Check = %v, want ErrAlg", tc.name, err)
			}
			continue
		}
		if err != nil || h.Kid != "bilbo.baggins@hobbiton.example" {
			t.Fatalf("%s: Check = %v, kid %q", tc.name, err, h.Kid)
		}
		for _, m := range []string{"d", "p", "q", "dp", "dq", "qi"} {
			delete(cb.Input.Key, m)
		}
		raw, _ := json.Marshal(cb.Input.Key)
		k, err := ParseJWK(raw, alg)
		if err != nil {
			t.Fatalf("%s: key: %v", tc.name, err)
		}
		sig, err := DecodeSegment(c.Signature())
		if err != nil {
			t.Fatal(err)
		}
		if !Verify(alg, k.Key, c.SigningInput(), sig) {
			t.Errorf("%s: does not verify", tc.name)
		}
		if Verify(alg, k.Key, c.SigningInput()[1:], sig) {
			t.Errorf("%s: verifies over other input", tc.name)
		}
	}
}
