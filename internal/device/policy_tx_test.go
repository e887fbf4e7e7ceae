package device_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/backendtest"
)

// noRevoker is a SessionRevoker for tests that revoke nothing.
type noRevoker struct{}

func (noRevoker) RevokeDevice(context.Context, string, string, string, model.RevocationCause) ([]string, error) {
	return nil, nil
}

// A compliance policy put or deleted commits with its
// compliance.policy_changed: refused, the policy is as it was; accepted,
// the change and exactly one record.
func TestPolicyCommitsWithEvent(t *testing.T) {
	ctx := context.Background()
	for _, k := range backendtest.Kinds(t) {
		t.Run(k.Name, func(t *testing.T) {
			b := k.New(t)
			st := b.Open(t, nil)
			svc := device.New(device.Options{Store: st, Bus: bus.NewLocal(), Sessions: noRevoker{}, NonceKey: bytes.Repeat([]byte{1}, 32)})
			changes := func() int {
				evs, err := st.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventCompliancePolicyChanged}})
				if err != nil {
					t.Fatal(err)
				}
				return len(evs)
			}
			rules := []byte(`{"require_firewall": true}`)
			lift := b.RefuseEvents(t, model.EventCompliancePolicyChanged)
			if _, err := svc.PutPolicy(ctx, "admin", "linux", rules); err == nil {
				t.Fatal("PutPolicy with its record refused: got nil")
			}
			if _, err := st.GetCompliancePolicy(ctx, "linux"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("policy after a refused put: %v, want none", err)
			}
			lift()
			if _, err := svc.PutPolicy(ctx, "admin", "linux", rules); err != nil {
				t.Fatal(err)
			}
			if n := changes(); n != 1 {
				t.Fatalf("%d compliance.policy_changed after the put, want 1", n)
			}
			lift = b.RefuseEvents(t, model.EventCompliancePolicyChanged)
			if err := svc.DeletePolicy(ctx, "admin", "linux"); err == nil {
				t.Fatal("DeletePolicy with its record refused: got nil")
			}
			if _, err := st.GetCompliancePolicy(ctx, "linux"); err != nil {
				t.Fatalf("policy after a refused deletion: %v, want it kept", err)
			}
			lift()
			if err := svc.DeletePolicy(ctx, "admin", "linux"); err != nil {
				t.Fatal(err)
			}
			if _, err := st.GetCompliancePolicy(ctx, "linux"); !errors.Is(err, store.ErrNotFound) || changes() != 2 {
				t.Fatalf("after the deletion: %v, %d records; want no policy and 2 records", err, changes())
			}
		})
	}
}
