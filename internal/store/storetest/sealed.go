package storetest

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// sealedValues reads every sealed value through the ordinary getters:
// kind:owner -> ciphertext.
func sealedValues(t *testing.T, s store.Store) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	keys, err := s.ListSigningKeys(ctx)
	must(t, "ListSigningKeys", err)
	for _, k := range keys {
		out[store.SealedSigningKey+":"+k.KID] = k.PrivateEnc
	}
	users, err := s.ListUsers(ctx)
	must(t, "ListUsers", err)
	for _, u := range users {
		out[store.SealedTOTP+":"+u.ID] = u.TOTPSecret
	}
	streams, err := s.ListSSFStreams(ctx, "")
	must(t, "ListSSFStreams", err)
	for _, st := range streams {
		out[store.SealedSSFAuthHeader+":"+st.ID] = st.AuthHeaderEnc
	}
	aks, err := s.ListAuditKeys(ctx)
	must(t, "ListAuditKeys", err)
	for _, k := range aks {
		out[store.SealedAuditKey+":"+k.KID] = k.PublicEnc
	}
	sec, err := s.AuditSecret(ctx, "record-mac", func() ([]byte, error) { return nil, errors.New("the fixture has this secret") })
	must(t, "AuditSecret", err)
	out[store.SealedAuditSecret+":record-mac"] = sec
	return out
}

// testResealAll checks the rewrite of every value sealed under the KEK: it
// visits exactly the stored values of every kind, writes what reseal
// returns in one transaction with its pending event, and a reseal that
// fails halfway (a crash, as far as the data is concerned) changes
// nothing.
func testResealAll(t *testing.T, s store.Store) {
	must(t, "CreateSigningKey", s.CreateSigningKey(ctx, fullKey("k1", at(0))))
	must(t, "CreateSigningKey", s.CreateSigningKey(ctx, fullKey("k2", at(time.Hour))))
	u1, u2, u3 := fullUser("u1", "alice"), fullUser("u2", "bob"), fullUser("u3", "carol")
	u2.TOTPSecret = nil // no second factor: nothing to reseal
	u3.TOTPSecret = []byte{7, 7, 7}
	for _, u := range []*model.User{u1, u2, u3} {
		must(t, "CreateUser", s.CreateUser(ctx, u))
	}
	s1, s2 := ssfStream("s1", "c1", model.DeliveryPush), ssfStream("s2", "c2", model.DeliveryPoll)
	s2.AuthHeaderEnc = nil
	must(t, "CreateSSFStream", s.CreateSSFStream(ctx, s1))
	must(t, "CreateSSFStream", s.CreateSSFStream(ctx, s2))
	must(t, "PutAuditKey", s.PutAuditKey(ctx, &store.AuditKey{KID: "ak1", PublicEnc: []byte{4, 4}, CreatedAt: at(0)}))
	if _, err := s.AuditSecret(ctx, "record-mac", func() ([]byte, error) { return []byte{5, 5}, nil }); err != nil {
		t.Fatalf("AuditSecret: %v", err)
	}
	before := sealedValues(t, s)
	v0, err := s.SSFStreamsVersion(ctx)
	must(t, "SSFStreamsVersion", err)

	// A reseal that fails at the third value: nothing is written, not
	// even the first two, and the pending event is not recorded.
	boom := errors.New("crash")
	calls := 0
	ev := pendingEvent("ev-reseal-failed", model.EventKeyRotated, "")
	ectx := store.WithEvent(ctx, ev)
	n, err := s.ResealAll(ectx, func(v *store.Sealed) ([]byte, error) {
		calls++
		if calls == 3 {
			return nil, boom
		}
		return append([]byte("new:"), v.Ciphertext...), nil
	})
	if !errors.Is(err, boom) || n != 0 {
		t.Fatalf("ResealAll failing at the third value = %d, %v; want 0, the error", n, err)
	}
	if got := sealedValues(t, s); !reflect.DeepEqual(got, before) {
		t.Fatalf("a failed ResealAll changed values:\n got %v\nwant %v", got, before)
	}
	if store.EventStored(ectx, ev) || storedEvents(t, s)[ev.ID] != nil {
		t.Error("the event of a failed ResealAll was recorded")
	}

	// Every stored value is visited once, in kind order; nil leaves one.
	var visited []string
	var gotIDs []string
	ev = pendingEvent("ev-resealed", model.EventKeyRotated, "")
	ectx = store.WithEventFunc(ctx, ev, func(ids []string) bool {
		gotIDs = ids
		return len(ids) > 0
	})
	n, err = s.ResealAll(ectx, func(v *store.Sealed) ([]byte, error) {
		visited = append(visited, v.Kind+":"+v.Owner)
		if !bytes.Equal(v.Ciphertext, before[v.Kind+":"+v.Owner]) {
			t.Errorf("%s:%s handed over as %v, stored %v", v.Kind, v.Owner, v.Ciphertext, before[v.Kind+":"+v.Owner])
		}
		if v.Kind == store.SealedSigningKey && v.Owner == "k2" {
			return nil, nil
		}
		return append([]byte("new:"), v.Ciphertext...), nil
	})
	must(t, "ResealAll", err)
	// A backend may run the transaction again: the last run counts.
	visited = visited[len(visited)-7:]
	want := []string{"signing_key:k1", "signing_key:k2", "totp:u1", "totp:u3", "ssf_authorization_header:s1",
		"audit_key:ak1", "audit_secret:record-mac"}
	if !slices.Equal(visited, want) {
		t.Errorf("visited %v, want %v", visited, want)
	}
	wantIDs := []string{"signing_key:k1", "totp:u1", "totp:u3", "ssf_authorization_header:s1", "audit_key:ak1", "audit_secret:record-mac"}
	if n != 6 || !slices.Equal(gotIDs, wantIDs) {
		t.Errorf("ResealAll = %d, ids %v; want 6, %v", n, gotIDs, wantIDs)
	}
	after := sealedValues(t, s)
	for k, v := range before {
		w := v
		if slices.Contains(wantIDs, k) {
			w = append([]byte("new:"), v...)
		}
		if !bytes.Equal(after[k], w) {
			t.Errorf("%s = %v, want %v", k, after[k], w)
		}
	}
	if !store.EventStored(ectx, ev) || storedEvents(t, s)[ev.ID] == nil {
		t.Error("the pending event was not recorded with the change")
	}
	if v1, _ := s.SSFStreamsVersion(ctx); v1 <= v0 {
		t.Errorf("streams version %d -> %d: a rewritten header must bump it", v0, v1)
	}
	// The rest of the rows is untouched.
	got, err := s.GetUser(ctx, "u1")
	must(t, "GetUser", err)
	u1.TOTPSecret = after["totp:u1"]
	same(t, "user after ResealAll", got, u1, normUser)

	// Nothing to change: nothing written, nothing recorded.
	v1, _ := s.SSFStreamsVersion(ctx)
	ev = pendingEvent("ev-nothing", model.EventKeyRotated, "")
	ectx = store.WithEventFunc(ctx, ev, func(ids []string) bool { return len(ids) > 0 })
	n, err = s.ResealAll(ectx, func(*store.Sealed) ([]byte, error) { return nil, nil })
	must(t, "ResealAll unchanged", err)
	if v2, _ := s.SSFStreamsVersion(ctx); n != 0 || v2 != v1 || storedEvents(t, s)[ev.ID] != nil {
		t.Errorf("ResealAll changing nothing = %d, version %d -> %d", n, v1, v2)
	}
	if got := sealedValues(t, s); !reflect.DeepEqual(got, after) {
		t.Error("ResealAll changing nothing changed values")
	}
}
