package posture

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ward-idp/ward/jws"
)

var (
	keyOnce        sync.Once
	devKey, evilKy *ecdsa.PrivateKey
)

func testKeys(t testing.TB) (*ecdsa.PrivateKey, *ecdsa.PrivateKey) {
	keyOnce.Do(func() {
		devKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		evilKy, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	})
	return devKey, evilKy
}

// fixedNow is the tests' clock.
var fixedNow = time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)

func jkt(t testing.TB, k *ecdsa.PrivateKey) string {
	t.Helper()
	s, err := jws.Thumbprint(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	// The device registers its key with go-jose-compatible thumbprints.
	if g, _ := (&jose.JSONWebKey{Key: &k.PublicKey}).Thumbprint(crypto.SHA256); base64.RawURLEncoding.EncodeToString(g) != s {
		t.Fatal("thumbprint differs from go-jose's")
	}
	return s
}

func samplePosture() *Posture {
	age := Seconds(3600)
	return &Posture{
		Platform: "linux", OSName: "Debian GNU/Linux", OSVersion: "12", Kernel: "6.1.0", Hostname: "alice-laptop",
		DiskEncrypted: Yes, UserIsAdmin: No, AntiMalwarePresent: Yes, AntiMalwareSignatureAge: &age,
		FirewallEnabled: Yes, SecureBoot: Unknown, ScreenLock: No, // Rooted left empty: sent as unknown
		CollectedAt: fixedNow.Add(-10 * time.Second),
		Evidence:    map[string]string{FieldDiskEncrypted: "root on /dev/mapper/luks-x (ext4): dm-0 (dm-crypt LUKS2)"},
	}
}

// nonces is a one-time nonce set, like the server's.
type nonces struct {
	mu   sync.Mutex
	live map[string]bool
}

func newNonces(ns ...string) *nonces {
	n := &nonces{live: map[string]bool{}}
	for _, s := range ns {
		n.live[s] = true
	}
	return n
}

func (n *nonces) check(s string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	ok := n.live[s]
	delete(n.live, s)
	return ok
}

func opts(t testing.TB, k *ecdsa.PrivateKey, ns *nonces) VerifyOptions {
	return VerifyOptions{JKT: jkt(t, k), DeviceID: "dev-1", Now: func() time.Time { return fixedNow }, CheckNonce: ns.check}
}

func sign(t testing.TB, k crypto.Signer, p *Posture, nonce string, at time.Time) string {
	t.Helper()
	tok, err := SignReport(k, p, "dev-1", nonce, at)
	if err != nil {
		t.Fatalf("SignReport: %v", err)
	}
	return tok
}

func TestReportRoundTrip(t *testing.T) {
	k, _ := testKeys(t)
	p := samplePosture()
	tok := sign(t, k, p, "n-1", fixedNow)
	if p.Rooted != "" {
		t.Fatal("SignReport modified the posture")
	}
	r, err := ParseReport(tok, opts(t, k, newNonces("n-1")))
	if err != nil {
		t.Fatalf("ParseReport: %v", err)
	}
	if r.DeviceID != "dev-1" || r.Nonce != "n-1" || !r.IssuedAt.Equal(fixedNow) || r.ExpiresAt.Sub(r.IssuedAt) != ReportLifetime ||
		r.JKT != jkt(t, k) || len(r.JTI) < 20 {
		t.Fatalf("report = %+v", r)
	}
	want := *p
	want.Normalize()
	got, _ := json.Marshal(r.Posture)
	exp, _ := json.Marshal(want)
	if string(got) != string(exp) {
		t.Fatalf("posture\n got %s\nwant %s", got, exp)
	}
	if r.Posture.Rooted != Unknown {
		t.Fatalf("rooted = %q, want unknown", r.Posture.Rooted)
	}

	// Header is exactly what the format says.
	hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if !strings.HasPrefix(string(hdr), `{"typ":"ward-posture+jwt","alg":"ES256","jwk":{"crv":"P-256","kty":"EC","x":"`) {
		t.Fatalf("header %s", hdr)
	}
	// Two reports differ in jti.
	r2, err := ParseReport(sign(t, k, p, "n-2", fixedNow), opts(t, k, newNonces("n-2")))
	if err != nil || r2.JTI == r.JTI {
		t.Fatalf("second report: %v, jti %q", err, r2.JTI)
	}
}

// forge builds a report from raw header and claims JSON, signed by k
// (ES256) unless sig is given.
func forge(t testing.TB, k *ecdsa.PrivateKey, header, claims string) string {
	t.Helper()
	in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(claims))
	d := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func headerFor(k *ecdsa.PrivateKey) string {
	pt, _ := k.PublicKey.Bytes()
	return `{"typ":"ward-posture+jwt","alg":"ES256","jwk":{"crv":"P-256","kty":"EC","x":"` +
		base64.RawURLEncoding.EncodeToString(pt[1:33]) + `","y":"` + base64.RawURLEncoding.EncodeToString(pt[33:]) + `"}}`
}

func jwkMembers(k *ecdsa.PrivateKey) string {
	h := headerFor(k)
	return h[strings.Index(h, `"crv"`) : len(h)-2]
}

func claimsJSON(t testing.TB, iat time.Time, nonce string, p *Posture) string {
	p.Normalize()
	b, err := json.Marshal(reportClaims{Iss: ReportIssuer, Sub: "dev-1", Iat: iat.Unix(), Exp: iat.Add(ReportLifetime).Unix(), JTI: "jti-1", Nonce: nonce, Posture: p})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestReportAttacks(t *testing.T) {
	k, evil := testKeys(t)
	good := claimsJSON(t, fixedNow, "n", samplePosture())
	valid := sign(t, k, samplePosture(), "n", fixedNow)
	parts := strings.Split(valid, ".")
	replaceClaim := func(old, new string) string { return strings.Replace(good, old, new, 1) }
	hs256 := func() string {
		in := base64.RawURLEncoding.EncodeToString([]byte(`{"typ":"ward-posture+jwt","alg":"HS256","jwk":{`+jwkMembers(k)+`}}`)) + "." + base64.RawURLEncoding.EncodeToString([]byte(good))
		m := hmac.New(sha256.New, []byte(jkt(t, k))) // key confusion: MAC with public material
		m.Write([]byte(in))
		return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}

	tests := []struct {
		name  string
		token string
		want  Reason
	}{
		{"tampered claims (signature kept)", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(good, `"disk_encrypted":"yes"`, `"disk_encrypted":"yes"`, 1)+" ")) + "." + parts[2], ReasonSignature},
		{"tampered posture value", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(good, `"user_is_admin":"no"`, `"user_is_admin":"yes"`, 1))) + "." + parts[2], ReasonSignature},
		{"signature of other key", parts[0] + "." + parts[1] + "." + strings.Split(sign(t, evil, samplePosture(), "n", fixedNow), ".")[2], ReasonSignature},
		{"wrong key (attacker's own)", sign(t, evil, samplePosture(), "n", fixedNow), ReasonKeyMismatch},
		{"another device's key, our device id", forge(t, evil, headerFor(evil), good), ReasonKeyMismatch},
		{"alg none", base64.RawURLEncoding.EncodeToString([]byte(`{"typ":"ward-posture+jwt","alg":"none","jwk":{`+jwkMembers(k)+`}}`)) + "." + parts[1] + ".", ReasonAlg},
		{"alg HS256", hs256(), ReasonAlg},
		{"alg ES384", forge(t, k, strings.Replace(headerFor(k), "ES256", "ES384", 1), good), ReasonAlg},
		{"typ jwt", forge(t, k, strings.Replace(headerFor(k), "ward-posture+jwt", "JWT", 1), good), ReasonType},
		{"typ dpop", forge(t, k, strings.Replace(headerFor(k), "ward-posture+jwt", "dpop+jwt", 1), good), ReasonType},
		{"typ case", forge(t, k, strings.Replace(headerFor(k), "ward-posture+jwt", "Ward-Posture+JWT", 1), good), ReasonType},
		{"extra header kid", forge(t, k, strings.Replace(headerFor(k), `"alg"`, `"kid":"x","alg"`, 1), good), ReasonKey},
		{"crit header", forge(t, k, strings.Replace(headerFor(k), `"alg"`, `"crit":["exp"],"alg"`, 1), good), ReasonKey},
		{"private key in jwk", forge(t, k, strings.Replace(headerFor(k), `"kty":"EC"`, `"kty":"EC","d":"`+base64.RawURLEncoding.EncodeToString(k.D.Bytes())+`"`, 1), good), ReasonKey},
		{"jwk P-384", forge(t, k, strings.Replace(headerFor(k), "P-256", "P-384", 1), good), ReasonKey},
		{"no jwk", forge(t, k, `{"typ":"ward-posture+jwt","alg":"ES256","kid":"x"}`, good), ReasonKey},
		{"duplicate header member", forge(t, k, strings.Replace(headerFor(k), `"alg":"ES256"`, `"alg":"ES256","alg":"ES256"`, 1), good), ReasonMalformed},
		{"duplicate jwk member", forge(t, k, strings.Replace(headerFor(k), `"kty":"EC"`, `"kty":"EC","kty":"EC"`, 1), good), ReasonMalformed},
		{"point not on curve", forge(t, k, `{"typ":"ward-posture+jwt","alg":"ES256","jwk":{"crv":"P-256","kty":"EC","x":"`+base64.RawURLEncoding.EncodeToString(make([]byte, 32))+`","y":"`+base64.RawURLEncoding.EncodeToString(append(make([]byte, 31), 1))+`"}}`, good), ReasonKey},
		{"replayed nonce", valid, ReasonNonce}, // the nonce set below holds "n" once; the round trip used it
		{"unknown nonce", sign(t, k, samplePosture(), "never-issued", fixedNow), ReasonNonce},
		{"stale iat", sign(t, k, samplePosture(), "n", fixedNow.Add(-6*time.Minute)), ReasonStale},
		{"future iat", sign(t, k, samplePosture(), "n", fixedNow.Add(2*time.Minute)), ReasonFuture},
		{"exp before iat", forge(t, k, headerFor(k), strings.Replace(good, `"exp":`+itoa(fixedNow.Add(ReportLifetime).Unix()), `"exp":`+itoa(fixedNow.Add(-time.Minute).Unix()), 1)), ReasonClaims},
		{"lifetime too long", forge(t, k, headerFor(k), strings.Replace(good, `"exp":`+itoa(fixedNow.Add(ReportLifetime).Unix()), `"exp":`+itoa(fixedNow.Add(time.Hour).Unix()), 1)), ReasonClaims},
		{"oversized", strings.Repeat("A", MaxReportSize+1), ReasonTooLarge},
		{"oversized posture", forge(t, k, headerFor(k), strings.Replace(good, `"hostname":"alice-laptop"`, `"hostname":"`+strings.Repeat("h", 70<<10)+`"`, 1)), ReasonTooLarge},
		{"unknown posture field", forge(t, k, headerFor(k), replaceClaim(`"platform":"linux"`, `"platform":"linux","jailbreak_hidden":"yes"`)), ReasonPosture},
		{"unknown top-level claim", forge(t, k, headerFor(k), replaceClaim(`"iss":`, `"admin":true,"iss":`)), ReasonClaims},
		{"invalid state value", forge(t, k, headerFor(k), replaceClaim(`"disk_encrypted":"yes"`, `"disk_encrypted":"YES"`)), ReasonPosture},
		{"empty state value", forge(t, k, headerFor(k), replaceClaim(`"disk_encrypted":"yes"`, `"disk_encrypted":""`)), ReasonPosture},
		{"state of wrong type", forge(t, k, headerFor(k), replaceClaim(`"disk_encrypted":"yes"`, `"disk_encrypted":true`)), ReasonPosture},
		{"negative signature age", forge(t, k, headerFor(k), replaceClaim(`"anti_malware_signature_age":3600`, `"anti_malware_signature_age":-1`)), ReasonPosture},
		{"evidence for unknown field", forge(t, k, headerFor(k), replaceClaim(`"evidence":{`, `"evidence":{"x":"y",`)), ReasonPosture},
		{"duplicate claim", forge(t, k, headerFor(k), replaceClaim(`"sub":"dev-1"`, `"sub":"dev-1","sub":"dev-2"`)), ReasonClaims},
		{"escaped duplicate claim", forge(t, k, headerFor(k), replaceClaim(`"sub":"dev-1"`, `"sub":"dev-1","\u0073ub":"dev-2"`)), ReasonClaims},
		{"duplicate posture member", forge(t, k, headerFor(k), replaceClaim(`"disk_encrypted":"yes"`, `"disk_encrypted":"no","disk_encrypted":"yes"`)), ReasonClaims},
		{"wrong issuer", forge(t, k, headerFor(k), replaceClaim(`"iss":"ward-agent"`, `"iss":"ward"`)), ReasonIssuer},
		{"other device id", forge(t, k, headerFor(k), replaceClaim(`"sub":"dev-1"`, `"sub":"dev-2"`)), ReasonSubject},
		{"no posture", forge(t, k, headerFor(k), good[:strings.Index(good, `,"posture"`)]+"}"), ReasonPosture},
		{"collected after iat", forge(t, k, headerFor(k), claimsJSON(t, fixedNow, "n", func() *Posture { p := samplePosture(); p.CollectedAt = fixedNow.Add(time.Hour); return p }())), ReasonPosture},
		{"trailing data", forge(t, k, headerFor(k), good+"{}"), ReasonClaims},
		{"float iat", forge(t, k, headerFor(k), replaceClaim(`"iat":`+itoa(fixedNow.Unix()), `"iat":`+itoa(fixedNow.Unix())+".5")), ReasonClaims},
		{"two parts", parts[0] + "." + parts[1], ReasonMalformed},
		{"four parts", valid + ".x", ReasonMalformed},
		{"padded base64", parts[0] + "=." + parts[1] + "." + parts[2], ReasonMalformed},
		{"empty", "", ReasonMalformed},
	}
	ns := newNonces("n")
	if _, err := ParseReport(valid, opts(t, k, ns)); err != nil {
		t.Fatalf("valid report: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := opts(t, k, ns)
			if tt.name != "replayed nonce" && tt.name != "unknown nonce" {
				o.CheckNonce = newNonces("n").check
			}
			r, err := ParseReport(tt.token, o)
			if err == nil {
				t.Fatalf("accepted: %+v", r)
			}
			if !errors.Is(err, ErrInvalidReport) {
				t.Fatalf("error %v does not match ErrInvalidReport", err)
			}
			if got := ReasonOf(err); got != tt.want {
				t.Fatalf("reason = %q, want %q (%v)", got, tt.want, err)
			}
			if strings.Contains(err.Error(), "dev-1") || (len(tt.token) > 20 && strings.Contains(err.Error(), tt.token[:20])) {
				t.Fatalf("error leaks report content: %v", err)
			}
		})
	}
}

func itoa(n int64) string { return big.NewInt(n).String() }

func TestReportNonceOnlyConsumedByValidReports(t *testing.T) {
	k, evil := testKeys(t)
	ns := newNonces("n")
	if _, err := ParseReport(sign(t, evil, samplePosture(), "n", fixedNow), opts(t, k, ns)); ReasonOf(err) != ReasonKeyMismatch {
		t.Fatalf("forged report: %v", err)
	}
	if _, err := ParseReport(sign(t, k, samplePosture(), "n", fixedNow), opts(t, k, ns)); err != nil {
		t.Fatalf("a rejected report used up the nonce: %v", err)
	}
}

func TestParseReportConfig(t *testing.T) {
	k, _ := testKeys(t)
	tok := sign(t, k, samplePosture(), "n", fixedNow)
	for _, o := range []VerifyOptions{{CheckNonce: newNonces("n").check}, {JKT: jkt(t, k)}} {
		if _, err := ParseReport(tok, o); ReasonOf(err) != ReasonConfig {
			t.Fatalf("incomplete options: %v", err)
		}
	}
	o := opts(t, k, newNonces("n"))
	o.DeviceID, o.MaxAge = "", time.Minute
	if _, err := ParseReport(sign(t, k, samplePosture(), "n", fixedNow.Add(-2*time.Minute)), o); ReasonOf(err) != ReasonStale {
		t.Fatalf("MaxAge 1m, iat 2m ago: %v", err)
	}
	o.MaxAge = 10 * time.Minute
	if _, err := ParseReport(sign(t, k, samplePosture(), "n", fixedNow.Add(-6*time.Minute)), o); ReasonOf(err) != ReasonExpired {
		t.Fatalf("MaxAge 10m, iat 6m ago (exp passed): %v", err)
	}
}

func TestSignReportRejects(t *testing.T) {
	k, _ := testKeys(t)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	bad := samplePosture()
	bad.DiskEncrypted = "maybe"
	for name, f := range map[string]func() error{
		"P-384 key":     func() error { _, err := SignReport(p384, samplePosture(), "d", "n", fixedNow); return err },
		"nil key":       func() error { _, err := SignReport(nil, samplePosture(), "d", "n", fixedNow); return err },
		"no device":     func() error { _, err := SignReport(k, samplePosture(), "", "n", fixedNow); return err },
		"no nonce":      func() error { _, err := SignReport(k, samplePosture(), "d", "", fixedNow); return err },
		"invalid state": func() error { _, err := SignReport(k, bad, "d", "n", fixedNow); return err },
		"nil posture":   func() error { _, err := SignReport(k, nil, "d", "n", fixedNow); return err },
	} {
		if f() == nil {
			t.Errorf("%s: SignReport succeeded", name)
		}
	}
}

func TestTable(t *testing.T) {
	tab := samplePosture().Table()
	for _, want := range []string{"CHECK", "Disk encrypted    yes", "dm-crypt LUKS2", "Signature age     1h 0m", "Rooted            unknown", "Operating system  Debian GNU/Linux 12"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	p := samplePosture()
	p.Evidence[FieldDiskEncrypted] = "line1\nline2\tx"
	if strings.Count(p.Table(), "\n") != strings.Count(tab, "\n") {
		t.Error("evidence with control characters broke the table")
	}
}
