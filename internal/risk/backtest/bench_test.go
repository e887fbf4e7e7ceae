package backtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/risk/detect"
)

// benchTraffic is generated once: 300 users, 4 days, every attack kind.
var benchTraffic = sync.OnceValues(func() ([]byte, []activity.Activity) {
	var ev, lb bytes.Buffer
	if err := Generate(GenOptions{Users: 300, Days: 4, Seed: 7, HistoryDays: 1, Attacks: 3}, &ev, &lb); err != nil {
		panic(err)
	}
	var acts []activity.Activity
	rd := activity.NewReader(bytes.NewReader(ev.Bytes()))
	for {
		a, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			panic(err)
		}
		acts = append(acts, a)
	}
	return ev.Bytes(), acts
})

func benchConfig() detect.Config {
	cfg := detect.DefaultConfig()
	cfg.MaxTokenLifetime = GenMaxTokenLifetime
	cfg.AnonymousIPs, _ = detect.ParseIPList(strings.NewReader(AnonymousList()))
	cfg.MaliciousIPs, _ = detect.ParseIPList(strings.NewReader(MaliciousList()))
	return cfg
}

// BenchmarkObserve is the detectors' CPU per activity (parsed, placed):
// what the online consumer adds per event.
func BenchmarkObserve(b *testing.B) {
	_, acts := benchTraffic()
	cfg := benchConfig()
	e := detect.New(cfg)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		j := i % len(acts)
		if j == 0 && i > 0 {
			b.StopTimer()
			e = detect.New(cfg)
			b.StartTimer()
		}
		e.Observe(acts[j])
	}
}

// BenchmarkReplay is the backtest's work per line: read, parse, observe.
func BenchmarkReplay(b *testing.B) {
	lines, acts := benchTraffic()
	cfg := benchConfig()
	b.SetBytes(int64(len(lines) / len(acts)))
	b.ReportAllocs()
	b.ResetTimer()
	done := 0
	for done < b.N {
		e := detect.New(cfg)
		n := min(len(acts), b.N-done)
		// replay the first n lines
		cut := lines
		if n < len(acts) {
			k := 0
			for i := 0; i < n; i++ {
				k += bytes.IndexByte(lines[k:], '\n') + 1
			}
			cut = lines[:k]
		}
		if _, err := Replay(bytes.NewReader(cut), e, Options{}); err != nil {
			b.Fatal(err)
		}
		done += n
	}
}

// BenchmarkECDSAP256Verify is the yardstick: one ES256 signature check,
// what Ward does for every DPoP proof and token.
func BenchmarkECDSAP256Verify(b *testing.B) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	h := sha256.Sum256([]byte("a DPoP proof's signing input"))
	sig, err := ecdsa.SignASN1(rand.Reader, k, h[:])
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !ecdsa.VerifyASN1(&k.PublicKey, h[:], sig) {
			b.Fatal("verify")
		}
	}
}
