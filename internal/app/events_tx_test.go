package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/store"
)

// committedWith records, for every published event, whether it was
// committed in the transaction of its change (store.EventStored when the
// subscribers run). It subscribes after the audit persister.
type committedWith struct {
	mu sync.Mutex
	m  map[string]bool // event id -> stored with the change
}

func watchCommitted(b bus.Bus) *committedWith {
	c := &committedWith{m: map[string]bool{}}
	b.Subscribe("test-committed-with-change", func(ctx context.Context, e *model.Event) error {
		c.mu.Lock()
		c.m[e.ID] = store.EventStored(ctx, e)
		c.mu.Unlock()
		return nil
	})
	return c
}

func (c *committedWith) of(id string) (stored, published bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	stored, published = c.m[id]
	return stored, published
}

// TestCriticalEventsCommitWithChange: the identity, device and
// Conditional Access changes behind CAE signals store their event in the
// transaction of the change; the audit persister then skips it, so it is
// stored exactly once, with the request's origin, and every other
// subscriber still gets it.
func TestCriticalEventsCommitWithChange(t *testing.T) {
	cfg := testConfig(t, false)
	clk := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	a, err := OpenWith(context.Background(), cfg, nil, Options{Now: clk.Now, LookupEnv: env(map[string]string{"WARD_KEK": testKEK})})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	seen := watchCommitted(a.Bus)
	base := context.Background()
	origin := func(corr string) context.Context {
		return bus.WithOrigin(base, bus.Origin{IP: "198.51.100.4", UserAgent: "ward-admin/1", CorrelationID: corr})
	}
	// check finds the events of one call (by correlation id): exactly one
	// of each type in want, committed with the change, with the origin.
	check := func(t *testing.T, corr string, want ...model.EventType) {
		t.Helper()
		evs, err := a.Store.ListEvents(base, store.EventFilter{CorrelationID: corr, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, typ := range want {
			var found []*store.StoredEvent
			for _, e := range evs {
				if e.Type == typ {
					found = append(found, e)
				}
			}
			if len(found) != 1 {
				t.Errorf("%s: %d %s events stored, want 1", corr, len(found), typ)
				continue
			}
			e := found[0]
			if e.IP != "198.51.100.4" || e.UserAgent != "ward-admin/1" || e.ID == "" || e.Time.IsZero() || e.Outcome != model.OutcomeSuccess {
				t.Errorf("%s: %s stored as %+v", corr, typ, e.Event)
			}
			if stored, published := seen.of(e.ID); !published || !stored {
				t.Errorf("%s: %s published %v, committed with its change %v; want both", corr, typ, published, stored)
			}
		}
	}

	u, err := a.Identity.CreateUser(origin("create"), "admin-1", identity.NewUser{Username: "zoe", Password: "a long passphrase"})
	if err != nil {
		t.Fatal(err)
	}
	// A user's creation commits with its user.created too.
	check(t, "create", model.EventUserCreated)

	steps := []struct {
		corr string
		do   func(ctx context.Context) error
		want []model.EventType
	}{
		{"disable", func(ctx context.Context) error { return a.Identity.SetDisabled(ctx, "admin-1", u.ID, true) },
			[]model.EventType{model.EventUserDisabled}},
		{"enable", func(ctx context.Context) error { return a.Identity.SetDisabled(ctx, "admin-1", u.ID, false) },
			[]model.EventType{model.EventUserUpdated}},
		{"risk", func(ctx context.Context) error {
			return a.Identity.SetRisk(ctx, "admin-1", u.ID, identity.RiskHigh, "test")
		},
			[]model.EventType{model.EventUserRiskChanged}},
		{"password", func(ctx context.Context) error {
			return a.Identity.SetPassword(ctx, "admin-1", u.ID, "another long passphrase")
		}, []model.EventType{model.EventPasswordChanged}},
		{"totp", func(ctx context.Context) error {
			sec, _, err := a.Identity.NewTOTPKey(u, "Ward")
			if err != nil {
				return err
			}
			code, err := totp.GenerateCode(sec, clk.Now())
			if err != nil {
				return err
			}
			return a.Identity.EnrollTOTP(ctx, u.ID, u.ID, sec, code)
		}, []model.EventType{model.EventMFAEnrolled}},
		{"policy", func(ctx context.Context) error {
			d, err := policy.DecodeYAML([]byte("locations:\n  - {id: corp, trusted: true, ip_ranges: [203.0.113.0/24]}\npolicies: []\n"))
			if err != nil {
				return err
			}
			_, err = a.Access.Apply(ctx, d, access.ApplyOptions{Actor: "admin-1", ExpectVersion: access.AnyVersion})
			return err
		}, []model.EventType{model.EventAccessPolicyChanged}},
	}
	for _, s := range steps {
		if err := s.do(origin(s.corr)); err != nil {
			t.Fatalf("%s: %v", s.corr, err)
		}
		check(t, s.corr, s.want...)
	}
	// Setting the same risk level again records nothing. (The password
	// change above remediated the risk: set it once more first.)
	if err := a.Identity.SetRisk(origin("risk-high"), "admin-1", u.ID, identity.RiskHigh, "test"); err != nil {
		t.Fatal(err)
	}
	check(t, "risk-high", model.EventUserRiskChanged)
	if err := a.Identity.SetRisk(origin("risk-again"), "admin-1", u.ID, identity.RiskHigh, "test"); err != nil {
		t.Fatal(err)
	}
	if evs, _ := a.Store.ListEvents(base, store.EventFilter{CorrelationID: "risk-again"}); len(evs) != 0 {
		t.Errorf("unchanged risk level recorded %v", evs)
	}

	// Devices: disable, lost, and a compliance change by the sweep.
	register := func() *model.Device {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		s, err := dpop.NewSigner(k)
		if err != nil {
			t.Fatal(err)
		}
		jwk, err := s.PublicJWK().MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		d, err := a.Devices.Register(base, u.ID, device.Registration{PublicJWK: jwk, KeyStorage: "tpm", Platform: "linux",
			OSName: "Debian GNU/Linux", OSVersion: "13", Hostname: "zoe-laptop", AgentVersion: "1.0.0"})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	d1, d2, d3 := register(), register(), register()
	if _, err := a.Devices.Disable(origin("device-disable"), "admin-1", d1.ID); err != nil {
		t.Fatal(err)
	}
	check(t, "device-disable", model.EventDeviceDisabled)
	if _, err := a.Devices.MarkLost(origin("device-lost"), "admin-1", d2.ID); err != nil {
		t.Fatal(err)
	}
	check(t, "device-lost", model.EventDeviceLost)
	clk.Advance(device.DefaultPostureGrace + time.Hour)
	if n, err := a.Devices.SweepStale(origin("sweep")); err != nil || n != 1 {
		t.Fatalf("SweepStale = %d, %v; want 1 device re-evaluated", n, err)
	}
	check(t, "sweep", model.EventDeviceComplianceChanged)
	if evs, _ := a.Store.ListEvents(base, store.EventFilter{CorrelationID: "sweep"}); len(evs) != 1 || evs[0].DeviceID != d3.ID {
		t.Errorf("sweep events %v", evs)
	}

	// Deleting the user (last: it ends the account).
	if err := a.Identity.DeleteUser(origin("delete"), "admin-1", u.ID); err != nil {
		t.Fatal(err)
	}
	check(t, "delete", model.EventUserDeleted)
}
