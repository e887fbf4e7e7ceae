package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/clock"
)

func writePair(t *testing.T, certFile, keyFile, cn string, mod time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{certFile, keyFile} {
		if err := os.Chtimes(f, mod, mod); err != nil {
			t.Fatal(err)
		}
	}
}

func cn(t *testing.T, c *tls.Certificate) string {
	t.Helper()
	x, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return x.Subject.CommonName
}

func TestReloadOnChange(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	writePair(t, certFile, keyFile, "one.example", base)

	clk := clock.NewFake(time.Unix(1000, 0))
	r, err := NewReloader(certFile, keyFile, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	if got := cn(t, r.Certificate()); got != "one.example" {
		t.Fatalf("initial cert %q", got)
	}

	writePair(t, certFile, keyFile, "two.example", base.Add(time.Minute))
	clk.Advance(500 * time.Millisecond)
	if got := cn(t, r.Certificate()); got != "one.example" {
		t.Errorf("reloaded before the check interval: %q", got)
	}
	clk.Advance(600 * time.Millisecond)
	if got := cn(t, r.Certificate()); got != "two.example" {
		t.Errorf("after swap: got %q, want two.example", got)
	}

	// A broken replacement keeps the last good certificate.
	if err := os.WriteFile(keyFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Second)
	if got := cn(t, r.Certificate()); got != "two.example" {
		t.Errorf("after broken key: got %q, want two.example kept", got)
	}
	// ...and picks up the fixed pair on a later check.
	writePair(t, certFile, keyFile, "three.example", base.Add(2*time.Minute))
	clk.Advance(2 * time.Second)
	if got := cn(t, r.Certificate()); got != "three.example" {
		t.Errorf("after fix: got %q, want three.example", got)
	}
}

func TestHandshakeSeesNewCert(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	writePair(t, certFile, keyFile, "old.example", base)
	clk := clock.NewFake(time.Unix(1000, 0))
	r, err := NewReloader(certFile, keyFile, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	handshake := func() string {
		c1, c2 := net.Pipe()
		defer c1.Close()
		defer c2.Close()
		go func() {
			s := tls.Server(c1, r.ServerConfig())
			s.Handshake()
		}()
		c := tls.Client(c2, &tls.Config{InsecureSkipVerify: true, ServerName: "x"})
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if got := handshake(); got != "old.example" {
		t.Fatalf("got %q", got)
	}
	writePair(t, certFile, keyFile, "new.example", base.Add(time.Minute))
	clk.Advance(CheckInterval)
	if got := handshake(); got != "new.example" {
		t.Errorf("got %q, want new.example", got)
	}
}

func TestNewReloaderErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := NewReloader(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err == nil {
		t.Error("missing files: no error")
	}
}
