package online

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/risk/detect"
	"github.com/ward-idp/ward/internal/store"
)

type noHistory struct{}

func (noHistory) ListEvents(context.Context, store.EventFilter) ([]*store.StoredEvent, error) {
	return nil, nil
}

// TestSignInJudgeSetConfig: the judge compiles its configuration once and
// judges with the new rules after SetConfig.
func TestSignInJudgeSetConfig(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	j := &SignInJudge{Store: noHistory{}, Config: detect.DefaultConfig(), Now: func() time.Time { return now }}
	a := activity.Activity{ID: "signin-attempt:1", Time: now, Kind: activity.KindSignIn, UserID: "u1", ClientID: "web",
		IP: "198.51.100.7", UserAgent: "Mozilla/5.0"}
	ds, err := j.DetectSignIn(context.Background(), a)
	if err != nil || len(ds) != 0 {
		t.Fatalf("without lists: %v %v", ds, err)
	}
	first := j.judge.Load()
	if _, err := j.DetectSignIn(context.Background(), a); err != nil || j.judge.Load() != first {
		t.Fatal("the configuration was compiled again for a second sign-in")
	}
	cfg := detect.DefaultConfig()
	cfg.MaliciousIPs, _ = detect.ParseIPList(strings.NewReader("198.51.100.0/24\n"))
	j.SetConfig(cfg)
	ds, err = j.DetectSignIn(context.Background(), a)
	if err != nil || len(ds) != 1 || ds[0].Type != detect.TypeMaliciousIP {
		t.Fatalf("after SetConfig with a malicious list: %v %v", ds, err)
	}
}
