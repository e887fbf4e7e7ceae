package storetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// Subtests for devices, device authorization requests (RFC 8628),
// compliance policies and the token-protection fields of clients and
// refresh tokens.

// ---- normalisation ----

func nraw(r json.RawMessage) json.RawMessage { return json.RawMessage(nl([]byte(r))) }

func normDevice(d model.Device) model.Device {
	d.PublicJWK, d.ComplianceFailures, d.Posture = nraw(d.PublicJWK), nraw(d.ComplianceFailures), nraw(d.Posture)
	d.KeyAttestation = nraw(d.KeyAttestation)
	d.ComplianceAt, d.PostureAt = nt(d.ComplianceAt), nt(d.PostureAt)
	d.CreatedAt, d.LastSeen, d.UpdatedAt = nt(d.CreatedAt), nt(d.LastSeen), nt(d.UpdatedAt)
	return d
}

func normDeviceCode(c model.DeviceCode) model.DeviceCode {
	c.Hash, c.AMR = nl(c.Hash), nl(c.AMR)
	c.AuthTime, c.CreatedAt, c.ExpiresAt = nt(c.AuthTime), nt(c.CreatedAt), nt(c.ExpiresAt)
	c.LastPoll, c.UsedAt = nt(c.LastPoll), nt(c.UsedAt)
	return c
}

func normPolicy(p model.CompliancePolicy) model.CompliancePolicy {
	p.Rules = nraw(p.Rules)
	p.CreatedAt, p.UpdatedAt = nt(p.CreatedAt), nt(p.UpdatedAt)
	return p
}

// ---- fixtures ----

func fullDevice(id, user, jkt string) *model.Device {
	return &model.Device{
		ID: id, UserID: user, JKT: jkt,
		// Raw JSON is kept verbatim: whitespace and key order included.
		PublicJWK:  json.RawMessage(`{"kty":"EC", "crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`),
		KeyStorage: "tpm", KeyAttested: true,
		KeyAttestation: json.RawMessage(`{"method":"tpm2", "ek_sha256":"9f86d081884c7d65","ek_chain":"vendor"}`),
		Platform:       "linux", OSName: "Debian GNU/Linux", OSVersion: "13",
		Hostname: "ws-" + id, AgentVersion: "1.4.2", TrustType: model.TrustManaged, Status: model.DeviceActive,
		Compliance:         model.NonCompliant,
		ComplianceFailures: json.RawMessage(`[ {"rule":"disk_encryption","detail":"LUKS not active"} ]`),
		ComplianceAt:       at(2 * time.Minute),
		Posture:            json.RawMessage(`{"firewall":true,"disk_encrypted":false,"os":{"patch":"2026-02"}}`),
		PostureAt:          at(90 * time.Second),
		CreatedAt:          at(0), LastSeen: at(3 * time.Minute), UpdatedAt: at(2 * time.Minute),
	}
}

func fullDeviceCode(hash, userCode string) *model.DeviceCode {
	return &model.DeviceCode{
		Hash: []byte(hash), UserCode: userCode, ClientID: "cli-1", Scope: "openid offline_access",
		DPoPJKT: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I", Status: model.DeviceCodePending,
		// Kept verbatim: whitespace, key order and non-ASCII included.
		Claims:    `{"access_token": {"acr":{"essential":true,"values":["urn:ward:acr:mfa"]},"x":"é"}}`,
		CreatedAt: at(0), ExpiresAt: farFuture, Interval: 5*time.Second + 7*time.Nanosecond,
		DenyReason: "ca_controls_unmet", DenyDescription: "Conditional Access requires a compliant device (reference é-1)",
	}
}

// farFuture is an expiry long after the store's clock in every test (user
// codes are looked up with the store's clock).
var farFuture = at(100 * 365 * 24 * time.Hour)

// ---- tests ----

// testProtectionFields: Client.RequireProtectedSessions and
// RefreshToken.DeviceID round-trip through every read path.
func testProtectionFields(t *testing.T, s store.Store) {
	c := &model.Client{ID: "c1", Name: "Admin portal", RequireProtectedSessions: true}
	must(t, "CreateClient", s.CreateClient(ctx, c))
	got, err := s.GetClient(ctx, "c1")
	must(t, "GetClient", err)
	if !got.RequireProtectedSessions {
		t.Errorf("GetClient: RequireProtectedSessions = false, want true")
	}
	for _, v := range []bool{false, true} {
		upd, err := s.UpdateClient(ctx, "c1", func(c *model.Client) error { c.RequireProtectedSessions = v; return nil })
		must(t, "UpdateClient", err)
		got, err := s.GetClient(ctx, "c1")
		must(t, "GetClient", err)
		if upd.RequireProtectedSessions != v || got.RequireProtectedSessions != v {
			t.Errorf("after UpdateClient(%v): result %v, stored %v", v, upd.RequireProtectedSessions, got.RequireProtectedSessions)
		}
	}

	must(t, "CreateSession", s.CreateSession(ctx, fullSession("s1", "u1")))
	bound := &model.RefreshToken{Hash: []byte("bound"), SessionID: "s1", JKT: "jkt-1", DeviceID: "dev-1"}
	unbound := &model.RefreshToken{Hash: []byte("unbound"), SessionID: "s1", JKT: "jkt-2"}
	for _, rt := range []*model.RefreshToken{bound, unbound} {
		must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, rt))
		got, err := s.GetRefreshToken(ctx, rt.Hash)
		must(t, "GetRefreshToken", err)
		if got.DeviceID != rt.DeviceID {
			t.Errorf("GetRefreshToken(%s): DeviceID %q, want %q", rt.Hash, got.DeviceID, rt.DeviceID)
		}
	}
	next := &model.RefreshToken{Hash: []byte("next"), SessionID: "s1", JKT: "jkt-1", DeviceID: "dev-2"}
	old, err := s.RotateRefreshToken(ctx, bound.Hash, at(time.Hour), next)
	must(t, "RotateRefreshToken", err)
	if old.DeviceID != "dev-1" {
		t.Errorf("RotateRefreshToken old record: DeviceID %q, want dev-1", old.DeviceID)
	}
	old, err = s.RotateRefreshToken(ctx, bound.Hash, at(2*time.Hour), &model.RefreshToken{Hash: []byte("n2"), SessionID: "s1"})
	wantErr(t, "RotateRefreshToken reuse", err, store.ErrAlreadyUsed)
	if old == nil || old.DeviceID != "dev-1" {
		t.Errorf("RotateRefreshToken reuse record: got %+v, want DeviceID dev-1", old)
	}
	got2, err := s.GetRefreshToken(ctx, next.Hash)
	must(t, "GetRefreshToken next", err)
	if got2.DeviceID != "dev-2" {
		t.Errorf("successor DeviceID: got %q, want dev-2", got2.DeviceID)
	}
}

func testDeviceRoundTrip(t *testing.T, s store.Store) {
	full := fullDevice("d1", "u1", "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I")
	zero := &model.Device{ID: "d2", JKT: "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"} // zero times, nil JSON
	for _, d := range []*model.Device{full, zero} {
		must(t, "CreateDevice", s.CreateDevice(ctx, d))
	}
	for _, want := range []*model.Device{full, zero} {
		got, err := s.GetDevice(ctx, want.ID)
		must(t, "GetDevice", err)
		same(t, "GetDevice("+want.ID+")", got, want, normDevice)
		got, err = s.GetDeviceByJKT(ctx, want.JKT)
		must(t, "GetDeviceByJKT", err)
		same(t, "GetDeviceByJKT("+want.JKT+")", got, want, normDevice)
	}
	got, err := s.GetDevice(ctx, "d1")
	must(t, "GetDevice", err)
	for _, f := range []struct {
		name      string
		got, want json.RawMessage
	}{
		{"PublicJWK", got.PublicJWK, full.PublicJWK},
		{"ComplianceFailures", got.ComplianceFailures, full.ComplianceFailures},
		{"Posture", got.Posture, full.Posture},
		{"KeyAttestation", got.KeyAttestation, full.KeyAttestation},
	} {
		if !bytes.Equal(f.got, f.want) {
			t.Errorf("%s not verbatim: got %s, want %s", f.name, f.got, f.want)
		}
	}
	got, err = s.GetDevice(ctx, "d2")
	must(t, "GetDevice", err)
	if got.PublicJWK != nil || got.Posture != nil || got.ComplianceFailures != nil || got.KeyAttested || got.KeyAttestation != nil ||
		!got.CreatedAt.IsZero() || !got.PostureAt.IsZero() || !got.LastSeen.IsZero() {
		t.Errorf("zero device: got %+v, want nil JSON and zero times", got)
	}
	// Thumbprints are compared exactly.
	for _, jkt := range []string{"0zcocorznyy-dwpqq30jzyjghtn0d2hglbv3uiguA4I", "0ZcOCORZNYy", ""} {
		_, err := s.GetDeviceByJKT(ctx, jkt)
		wantErr(t, fmt.Sprintf("GetDeviceByJKT(%q)", jkt), err, store.ErrNotFound)
	}
}

// testDeviceKeyAttestation: a device registered with an unattested key
// is attested later by UpdateDevice; every read path (by id, by key, in
// lists) shows the attested fact, and an update that changes something
// else keeps it.
func testDeviceKeyAttestation(t *testing.T, s store.Store) {
	d := fullDevice("d1", "u1", "jkt-1")
	d.KeyAttested, d.KeyAttestation = false, nil
	must(t, "CreateDevice", s.CreateDevice(ctx, d))
	got, err := s.GetDevice(ctx, "d1")
	must(t, "GetDevice", err)
	if got.KeyAttested || got.KeyAttestation != nil || got.KeyStorage != "tpm" {
		t.Fatalf("unattested device: KeyAttested %v, KeyAttestation %s, KeyStorage %q; want false, none, the claimed tpm",
			got.KeyAttested, got.KeyAttestation, got.KeyStorage)
	}
	att := json.RawMessage(`{"method":"tpm2","attested_at":"2026-03-01T10:00:00Z","ek_sha256":"ab01","ek_chain":"unverified"}`)
	upd, err := s.UpdateDevice(ctx, "d1", func(d *model.Device) error { d.KeyAttested, d.KeyAttestation = true, att; return nil })
	must(t, "UpdateDevice", err)
	if !upd.KeyAttested || !bytes.Equal(upd.KeyAttestation, att) {
		t.Fatalf("UpdateDevice result: %v %s", upd.KeyAttested, upd.KeyAttestation)
	}
	_, err = s.UpdateDevice(ctx, "d1", func(d *model.Device) error { d.Compliance = model.Compliant; return nil })
	must(t, "UpdateDevice compliance", err)
	byID, err := s.GetDevice(ctx, "d1")
	must(t, "GetDevice", err)
	byKey, err := s.GetDeviceByJKT(ctx, "jkt-1")
	must(t, "GetDeviceByJKT", err)
	list, err := s.ListDevices(ctx, store.DeviceFilter{UserID: "u1"})
	must(t, "ListDevices", err)
	if len(list) != 1 {
		t.Fatalf("ListDevices: %d devices, want 1", len(list))
	}
	for name, g := range map[string]*model.Device{"GetDevice": byID, "GetDeviceByJKT": byKey, "ListDevices": list[0]} {
		if !g.KeyAttested || !bytes.Equal(g.KeyAttestation, att) || g.Compliance != model.Compliant {
			t.Errorf("%s: KeyAttested %v, KeyAttestation %s, compliance %s; want true, %s, compliant", name, g.KeyAttested, g.KeyAttestation, g.Compliance, att)
		}
	}
}

func testDeviceConflicts(t *testing.T, s store.Store) {
	must(t, "CreateDevice", s.CreateDevice(ctx, fullDevice("d1", "u1", "jkt-1")))
	must(t, "CreateDevice", s.CreateDevice(ctx, fullDevice("d2", "u1", "jkt-2")))
	tests := []struct {
		name string
		d    *model.Device
		want error
	}{
		{"same id", fullDevice("d1", "u2", "jkt-3"), store.ErrAlreadyExists},
		{"same jkt", fullDevice("d3", "u2", "jkt-1"), store.ErrAlreadyExists},
		{"same jkt, same user", fullDevice("d4", "u1", "jkt-2"), store.ErrAlreadyExists},
		{"new", fullDevice("d5", "u1", "jkt-5"), nil},
	}
	for _, tc := range tests {
		err := s.CreateDevice(ctx, tc.d)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: CreateDevice got %v, want %v", tc.name, err, tc.want)
		}
	}
	if err := s.CreateDevice(ctx, &model.Device{ID: "d6"}); err == nil {
		t.Errorf("CreateDevice without JKT: got nil error")
	}
	for _, id := range []string{"d3", "d4", "d6"} {
		_, err := s.GetDevice(ctx, id)
		wantErr(t, "GetDevice of a rejected device "+id, err, store.ErrNotFound)
	}
	got, err := s.GetDeviceByJKT(ctx, "jkt-1")
	must(t, "GetDeviceByJKT", err)
	same(t, "device after conflicts", got, fullDevice("d1", "u1", "jkt-1"), normDevice)

	// Moving a device to a taken key fails and saves nothing.
	_, err = s.UpdateDevice(ctx, "d2", func(d *model.Device) error { d.JKT, d.Hostname = "jkt-1", "x"; return nil })
	wantErr(t, "UpdateDevice to a taken JKT", err, store.ErrAlreadyExists)
	got, err = s.GetDevice(ctx, "d2")
	must(t, "GetDevice", err)
	same(t, "device after failed re-key", got, fullDevice("d2", "u1", "jkt-2"), normDevice)
}

func testListDevices(t *testing.T, s store.Store) {
	mk := func(id, user, status string, created time.Duration) *model.Device {
		d := fullDevice(id, user, "jkt-"+id)
		d.Status, d.CreatedAt = status, at(created)
		return d
	}
	all := []*model.Device{
		mk("a-old", "u1", model.DeviceActive, 0),
		mk("a-new", "u1", model.DeviceActive, 10*time.Minute),
		mk("a-lost", "u1", model.DeviceLost, 5*time.Minute),
		mk("a-disabled", "u1", model.DeviceDisabled, time.Minute),
		mk("b-active", "u2", model.DeviceActive, 2*time.Minute),
		mk("b-lost", "u2", model.DeviceLost, 3*time.Minute),
	}
	for _, d := range all {
		must(t, "CreateDevice", s.CreateDevice(ctx, d))
	}
	ids := func(ds []*model.Device) []string {
		var out []string
		for _, d := range ds {
			out = append(out, d.ID)
		}
		return out
	}
	tests := []struct {
		name string
		f    store.DeviceFilter
		want []string // newest first
	}{
		{"all", store.DeviceFilter{}, []string{"a-new", "a-lost", "b-lost", "b-active", "a-disabled", "a-old"}},
		{"user", store.DeviceFilter{UserID: "u1"}, []string{"a-new", "a-lost", "a-disabled", "a-old"}},
		{"status", store.DeviceFilter{Status: model.DeviceLost}, []string{"a-lost", "b-lost"}},
		{"user and status", store.DeviceFilter{UserID: "u1", Status: model.DeviceActive}, []string{"a-new", "a-old"}},
		{"limit", store.DeviceFilter{UserID: "u1", Limit: 2}, []string{"a-new", "a-lost"}},
		{"unknown user", store.DeviceFilter{UserID: "nobody"}, nil},
		{"unknown status", store.DeviceFilter{Status: "stolen"}, nil},
	}
	for _, tc := range tests {
		got, err := s.ListDevices(ctx, tc.f)
		must(t, "ListDevices "+tc.name, err)
		if g := ids(got); !reflect.DeepEqual(g, tc.want) {
			t.Errorf("ListDevices %s: got %v, want %v", tc.name, g, tc.want)
		}
	}
	got, err := s.ListDevices(ctx, store.DeviceFilter{UserID: "u2", Status: model.DeviceActive})
	must(t, "ListDevices", err)
	sameList(t, "ListDevices round trip", got, []*model.Device{all[4]}, normDevice)
}

func testListDevicesLimit(t *testing.T, s store.Store) {
	const n = 1005
	for i := range n {
		d := &model.Device{ID: fmt.Sprintf("d%04d", i), UserID: "u1", JKT: fmt.Sprintf("jkt-%04d", i),
			Status: model.DeviceActive, CreatedAt: at(time.Duration(i) * time.Millisecond)}
		must(t, "CreateDevice", s.CreateDevice(ctx, d))
	}
	tests := []struct {
		name  string
		f     store.DeviceFilter
		want  int
		first string
	}{
		{"default limit", store.DeviceFilter{}, 100, "d1004"},
		{"negative limit", store.DeviceFilter{Limit: -1}, 100, "d1004"},
		{"max limit", store.DeviceFilter{UserID: "u1", Limit: 5000}, 1000, "d1004"},
		{"exact limit", store.DeviceFilter{Status: model.DeviceActive, Limit: 7}, 7, "d1004"},
	}
	for _, tc := range tests {
		got, err := s.ListDevices(ctx, tc.f)
		must(t, "ListDevices "+tc.name, err)
		first := ""
		if len(got) > 0 {
			first = got[0].ID
		}
		if len(got) != tc.want || first != tc.first {
			t.Errorf("ListDevices %s: got %d devices, first %q; want %d, first %q", tc.name, len(got), first, tc.want, tc.first)
		}
	}
}

func testUpdateDeleteDevice(t *testing.T, s store.Store) {
	must(t, "CreateDevice", s.CreateDevice(ctx, fullDevice("d1", "u1", "jkt-1")))
	want := fullDevice("d1", "u1", "jkt-new")
	want.Status, want.Compliance, want.ComplianceFailures = model.DeviceDisabled, model.Compliant, nil
	want.Posture, want.PostureAt = json.RawMessage(`{"firewall":true}`), at(time.Hour)
	want.LastSeen, want.UpdatedAt = at(time.Hour), at(time.Hour)
	got, err := s.UpdateDevice(ctx, "d1", func(d *model.Device) error {
		d.ID = "ignored" // the id cannot change
		d.JKT = "jkt-new"
		d.Status, d.Compliance, d.ComplianceFailures = model.DeviceDisabled, model.Compliant, nil
		d.Posture, d.PostureAt = json.RawMessage(`{"firewall":true}`), at(time.Hour)
		d.LastSeen, d.UpdatedAt = at(time.Hour), at(time.Hour)
		return nil
	})
	must(t, "UpdateDevice", err)
	same(t, "UpdateDevice result", got, want, normDevice)
	stored, err := s.GetDevice(ctx, "d1")
	must(t, "GetDevice", err)
	same(t, "stored after UpdateDevice", stored, want, normDevice)
	stored, err = s.GetDeviceByJKT(ctx, "jkt-new")
	must(t, "GetDeviceByJKT new key", err)
	same(t, "by new JKT", stored, want, normDevice)
	_, err = s.GetDeviceByJKT(ctx, "jkt-1")
	wantErr(t, "GetDeviceByJKT old key", err, store.ErrNotFound)
	_, err = s.GetDevice(ctx, "ignored")
	wantErr(t, "GetDevice of the ignored id", err, store.ErrNotFound)

	must(t, "DeleteDevice", s.DeleteDevice(ctx, "d1"))
	_, err = s.GetDevice(ctx, "d1")
	wantErr(t, "GetDevice after delete", err, store.ErrNotFound)
	_, err = s.GetDeviceByJKT(ctx, "jkt-new")
	wantErr(t, "GetDeviceByJKT after delete", err, store.ErrNotFound)
	wantErr(t, "DeleteDevice again", s.DeleteDevice(ctx, "d1"), store.ErrNotFound)
	// Id and key are free again.
	must(t, "CreateDevice reuse", s.CreateDevice(ctx, fullDevice("d1", "u2", "jkt-new")))
}

func testRevokeDeviceSessions(t *testing.T, s store.Store) {
	tok := func(hash, session, device string) *model.RefreshToken {
		rt := fullRefresh(hash, session)
		rt.DeviceID = device
		return rt
	}
	prevRevoked := fullSession("s-revoked", "u1")
	prevRevoked.RevokedAt, prevRevoked.RevokeCause = at(time.Minute), "logout"
	// Created out of id order: the result is sorted.
	for _, se := range []*model.Session{fullSession("s4", "u2"), fullSession("s1", "u1"), fullSession("s2", "u1"),
		fullSession("s3", "u1"), prevRevoked} {
		must(t, "CreateSession", s.CreateSession(ctx, se))
	}
	tokens := []*model.RefreshToken{
		tok("s1-bound", "s1", "dev-1"),
		tok("s1-unbound", "s1", ""),    // goes with its session
		tok("s2-other", "s2", "dev-2"), // other device: untouched
		tok("s2-unbound", "s2", ""),
		tok("s4-bound-a", "s4", "dev-1"), // another user's session on the same device
		tok("s4-bound-b", "s4", "dev-1"),
		tok("rev-bound", "s-revoked", "dev-1"), // revoked before: keeps its revocation
	}
	for _, rt := range tokens {
		must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, rt))
	}
	// A rotated (no longer current) token still binds its session.
	_, err := s.RotateRefreshToken(ctx, []byte("s4-bound-b"), at(time.Minute), tok("s4-next", "s4", "dev-1"))
	must(t, "RotateRefreshToken", err)

	ids, err := s.RevokeDeviceSessions(ctx, "dev-1", at(time.Hour), "device_lost")
	must(t, "RevokeDeviceSessions", err)
	if want := []string{"s1", "s4"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("RevokeDeviceSessions ids: got %v, want %v", ids, want)
	}
	sessions := []struct {
		id        string
		revokedAt time.Time
		cause     string
	}{
		{"s1", at(time.Hour), "device_lost"},
		{"s4", at(time.Hour), "device_lost"},
		{"s2", time.Time{}, ""},
		{"s3", time.Time{}, ""},
		{"s-revoked", at(time.Minute), "logout"},
	}
	for _, tc := range sessions {
		got, err := s.GetSession(ctx, tc.id)
		must(t, "GetSession", err)
		if !got.RevokedAt.Equal(nt(tc.revokedAt)) || got.RevokeCause != tc.cause {
			t.Errorf("session %s: got revoked %v %q, want %v %q", tc.id, got.RevokedAt, got.RevokeCause, nt(tc.revokedAt), tc.cause)
		}
	}
	gone := map[string]bool{
		"s1-bound": true, "s1-unbound": true, "s4-bound-a": true, "s4-bound-b": true, "s4-next": true,
		"s2-other": false, "s2-unbound": false, "rev-bound": false,
	}
	for h, wantGone := range gone {
		_, err := s.GetRefreshToken(ctx, []byte(h))
		if isGone := errors.Is(err, store.ErrNotFound); isGone != wantGone || err != nil && !isGone {
			t.Errorf("refresh token %s: got err %v, want gone=%v", h, err, wantGone)
		}
	}

	ids, err = s.RevokeDeviceSessions(ctx, "dev-1", at(2*time.Hour), "again")
	must(t, "RevokeDeviceSessions again", err)
	if len(ids) != 0 {
		t.Errorf("RevokeDeviceSessions again: got %v, want none", ids)
	}
	ids, err = s.RevokeDeviceSessions(ctx, "no-such-device", at(2*time.Hour), "x")
	must(t, "RevokeDeviceSessions unknown device", err)
	if len(ids) != 0 {
		t.Errorf("RevokeDeviceSessions unknown device: got %v, want none", ids)
	}
	ids, err = s.RevokeDeviceSessions(ctx, "dev-2", at(3*time.Hour), "device_disabled")
	must(t, "RevokeDeviceSessions dev-2", err)
	if want := []string{"s2"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("RevokeDeviceSessions dev-2: got %v, want %v", ids, want)
	}
	if _, err := s.GetRefreshToken(ctx, []byte("s2-unbound")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unbound token of a revoked device session: got %v, want ErrNotFound", err)
	}
}

func testDeviceCodeLifecycle(t *testing.T, s store.Store, clk *clock.Fake) {
	full := fullDeviceCode("\x00dc-1\xff", "WDJBMJHT")
	zero := &model.DeviceCode{Hash: []byte("dc-2"), UserCode: "BCDFGHJK", ExpiresAt: clk.Now().Add(time.Hour)}
	for _, c := range []*model.DeviceCode{full, zero} {
		must(t, "CreateDeviceCode", s.CreateDeviceCode(ctx, c))
	}
	wantErr(t, "CreateDeviceCode same hash", s.CreateDeviceCode(ctx, fullDeviceCode("dc-2", "OTHERCOD")), store.ErrAlreadyExists)
	for _, want := range []*model.DeviceCode{full, zero} {
		got, err := s.GetDeviceCode(ctx, want.Hash)
		must(t, "GetDeviceCode", err)
		same(t, fmt.Sprintf("GetDeviceCode(%q)", want.Hash), got, want, normDeviceCode)
		got, err = s.GetDeviceCodeByUserCode(ctx, want.UserCode)
		must(t, "GetDeviceCodeByUserCode", err)
		same(t, "GetDeviceCodeByUserCode("+want.UserCode+")", got, want, normDeviceCode)
	}
	if got, _ := s.GetDeviceCode(ctx, full.Hash); got != nil && got.Interval != full.Interval {
		t.Errorf("Interval: got %v, want %v", got.Interval, full.Interval)
	}
	_, err := s.GetDeviceCode(ctx, []byte("\x00dc-1"))
	wantErr(t, "GetDeviceCode prefix", err, store.ErrNotFound)
	_, err = s.GetDeviceCodeByUserCode(ctx, "wdjbmjht")
	wantErr(t, "GetDeviceCodeByUserCode other case", err, store.ErrNotFound)
	_, err = s.GetDeviceCodeByUserCode(ctx, "OTHERCOD")
	wantErr(t, "GetDeviceCodeByUserCode of a rejected request", err, store.ErrNotFound)

	want := fullDeviceCode("\x00dc-1\xff", "WDJBMJHT")
	steps := []struct {
		name string
		fn   func(c *model.DeviceCode)
	}{
		{"poll", func(c *model.DeviceCode) { c.LastPoll = at(5 * time.Second) }},
		{"slow down", func(c *model.DeviceCode) { c.Interval = 10 * time.Second }},
		{"claims", func(c *model.DeviceCode) { c.Claims = `{"access_token":null}` }},
		{"denial", func(c *model.DeviceCode) {
			c.DenyReason, c.DenyDescription = "ca_block", "access is blocked by a Conditional Access policy (reference r-2)"
		}},
		{"approve", func(c *model.DeviceCode) {
			c.Status, c.UserID, c.SessionID = model.DeviceCodeApproved, "u1", "sess-1"
			c.AuthTime, c.AMR, c.ACR = at(time.Second), []string{"pwd", "hwk"}, "urn:ward:acr:mfa"
		}},
		{"redeem", func(c *model.DeviceCode) { c.UsedAt, c.LastPoll = at(20*time.Second), at(20*time.Second) }},
	}
	for _, st := range steps {
		st.fn(want)
		got, err := s.UpdateDeviceCode(ctx, full.Hash, func(c *model.DeviceCode) error {
			c.Hash = []byte("ignored") // the hash cannot change
			st.fn(c)
			return nil
		})
		must(t, "UpdateDeviceCode "+st.name, err)
		same(t, "UpdateDeviceCode "+st.name+" result", got, want, normDeviceCode)
		stored, err := s.GetDeviceCode(ctx, full.Hash)
		must(t, "GetDeviceCode", err)
		same(t, "stored after "+st.name, stored, want, normDeviceCode)
	}
	_, err = s.GetDeviceCode(ctx, []byte("ignored"))
	wantErr(t, "GetDeviceCode of the ignored hash", err, store.ErrNotFound)
	// Changing the user code to one in use fails and saves nothing.
	_, err = s.UpdateDeviceCode(ctx, full.Hash, func(c *model.DeviceCode) error { c.UserCode, c.Scope = "BCDFGHJK", "x"; return nil })
	wantErr(t, "UpdateDeviceCode to a taken user code", err, store.ErrAlreadyExists)
	stored, err := s.GetDeviceCode(ctx, full.Hash)
	must(t, "GetDeviceCode", err)
	same(t, "stored after failed user-code change", stored, want, normDeviceCode)
}

func testDeviceCodeUserCode(t *testing.T, s store.Store, clk *clock.Fake) {
	now := clk.Now()
	live := fullDeviceCode("live", "ABCDEFGH")
	must(t, "CreateDeviceCode", s.CreateDeviceCode(ctx, live))
	// Unique while unexpired.
	wantErr(t, "CreateDeviceCode same user code", s.CreateDeviceCode(ctx, fullDeviceCode("other", "ABCDEFGH")), store.ErrAlreadyExists)
	_, err := s.GetDeviceCode(ctx, []byte("other"))
	wantErr(t, "GetDeviceCode of the rejected request", err, store.ErrNotFound)
	got, err := s.GetDeviceCodeByUserCode(ctx, "ABCDEFGH")
	must(t, "GetDeviceCodeByUserCode", err)
	same(t, "request after a rejected duplicate", got, live, normDeviceCode)

	// An expired request is not found by its user code (it still is by its
	// hash, so that polling can answer expired_token) ...
	expired := fullDeviceCode("expired", "KLMNPQRS")
	expired.ExpiresAt = now.Add(-time.Second)
	must(t, "CreateDeviceCode expired", s.CreateDeviceCode(ctx, expired))
	_, err = s.GetDeviceCodeByUserCode(ctx, "KLMNPQRS")
	wantErr(t, "GetDeviceCodeByUserCode expired", err, store.ErrNotFound)
	got, err = s.GetDeviceCode(ctx, []byte("expired"))
	must(t, "GetDeviceCode expired", err)
	same(t, "expired request by hash", got, expired, normDeviceCode)

	// ... and its user code can be given out again.
	reuse := fullDeviceCode("reuse", "KLMNPQRS")
	must(t, "CreateDeviceCode reusing an expired user code", s.CreateDeviceCode(ctx, reuse))
	got, err = s.GetDeviceCodeByUserCode(ctx, "KLMNPQRS")
	must(t, "GetDeviceCodeByUserCode after reuse", err)
	same(t, "request reusing the user code", got, reuse, normDeviceCode)
	got, err = s.GetDeviceCode(ctx, []byte("reuse"))
	must(t, "GetDeviceCode reuse", err)
	same(t, "reusing request by hash", got, reuse, normDeviceCode)
	// The reusing request is unexpired: the user code is taken again.
	wantErr(t, "CreateDeviceCode third use", s.CreateDeviceCode(ctx, fullDeviceCode("third", "KLMNPQRS")), store.ErrAlreadyExists)
	// Reusing an expired user code does not allow a taken hash.
	expired2 := fullDeviceCode("expired2", "TVWXZBCD")
	expired2.ExpiresAt = now.Add(-time.Second)
	must(t, "CreateDeviceCode expired2", s.CreateDeviceCode(ctx, expired2))
	wantErr(t, "CreateDeviceCode taken hash with an expired user code",
		s.CreateDeviceCode(ctx, fullDeviceCode("live", "TVWXZBCD")), store.ErrAlreadyExists)
	got, err = s.GetDeviceCode(ctx, []byte("live"))
	must(t, "GetDeviceCode live", err)
	same(t, "live request after a hash conflict", got, live, normDeviceCode)

	// A request expires by the store's clock: its user code is found until
	// the clock reaches ExpiresAt, and no longer from then on.
	soon := fullDeviceCode("soon", "MNPQRSTV")
	soon.ExpiresAt = now.Add(time.Minute)
	must(t, "CreateDeviceCode soon", s.CreateDeviceCode(ctx, soon))
	clk.Advance(time.Minute - time.Microsecond)
	got, err = s.GetDeviceCodeByUserCode(ctx, "MNPQRSTV")
	must(t, "GetDeviceCodeByUserCode a microsecond before expiry", err)
	same(t, "request before expiry", got, soon, normDeviceCode)
	wantErr(t, "CreateDeviceCode reusing the user code before expiry",
		s.CreateDeviceCode(ctx, fullDeviceCode("early", "MNPQRSTV")), store.ErrAlreadyExists)
	clk.Advance(time.Microsecond)
	_, err = s.GetDeviceCodeByUserCode(ctx, "MNPQRSTV")
	wantErr(t, "GetDeviceCodeByUserCode at expiry", err, store.ErrNotFound)
	must(t, "CreateDeviceCode reusing the user code at expiry", s.CreateDeviceCode(ctx, fullDeviceCode("soon2", "MNPQRSTV")))
}

func testDeviceCodeUserCodeConcurrent(t *testing.T, s store.Store) {
	errs := race(func(i int) error {
		return s.CreateDeviceCode(ctx, fullDeviceCode(fmt.Sprintf("dc-%d", i), "RACERACE"))
	})
	w := oneWinner(t, "concurrent CreateDeviceCode", errs, store.ErrAlreadyExists)
	if w < 0 {
		return
	}
	got, err := s.GetDeviceCodeByUserCode(ctx, "RACERACE")
	must(t, "GetDeviceCodeByUserCode", err)
	if want := fmt.Sprintf("dc-%d", w); string(got.Hash) != want {
		t.Errorf("user code belongs to %s, want the winner %s", got.Hash, want)
	}
}

var errDecided = errors.New("storetest: request already decided")

func testDeviceCodeConcurrent(t *testing.T, s store.Store) {
	must(t, "CreateDeviceCode", s.CreateDeviceCode(ctx, fullDeviceCode("dc", "ABCDEFGH")))
	errs := race(func(i int) error {
		_, err := s.UpdateDeviceCode(ctx, []byte("dc"), func(c *model.DeviceCode) error {
			if c.Status != model.DeviceCodePending {
				return fmt.Errorf("%w: %s", errDecided, c.Status)
			}
			// Widen the read-modify-write window so that a store without
			// a row lock loses the race reliably.
			time.Sleep(2 * time.Millisecond)
			c.Status, c.UserID = model.DeviceCodeApproved, fmt.Sprintf("u%d", i)
			return nil
		})
		return err
	})
	w := oneWinner(t, "concurrent UpdateDeviceCode", errs, errDecided)
	if w < 0 {
		return
	}
	got, err := s.GetDeviceCode(ctx, []byte("dc"))
	must(t, "GetDeviceCode", err)
	if got.Status != model.DeviceCodeApproved || got.UserID != fmt.Sprintf("u%d", w) {
		t.Errorf("after the race: status %q user %q, want approved by u%d", got.Status, got.UserID, w)
	}
}

func testCompliancePolicy(t *testing.T, s store.Store, clk *clock.Fake) {
	linux := &model.CompliancePolicy{ID: "pol-1", Name: "Linux baseline", Platform: "linux",
		Rules:     json.RawMessage(`{"disk_encryption": true, "min_os_version": "12"}`),
		CreatedAt: at(0), UpdatedAt: at(0)}
	all := &model.CompliancePolicy{ID: "pol-2", Name: "Everyone", Platform: "*",
		Rules: json.RawMessage(`{"firewall":true}`), CreatedAt: at(time.Minute), UpdatedAt: at(2 * time.Minute)}
	for _, p := range []*model.CompliancePolicy{linux, all} {
		must(t, "PutCompliancePolicy", s.PutCompliancePolicy(ctx, p))
	}
	for _, want := range []*model.CompliancePolicy{linux, all} {
		got, err := s.GetCompliancePolicy(ctx, want.Platform)
		must(t, "GetCompliancePolicy", err)
		same(t, "GetCompliancePolicy("+want.Platform+")", got, want, normPolicy)
		if got != nil && !bytes.Equal(got.Rules, want.Rules) {
			t.Errorf("Rules not verbatim: got %s, want %s", got.Rules, want.Rules)
		}
	}
	_, err := s.GetCompliancePolicy(ctx, "Linux")
	wantErr(t, "GetCompliancePolicy other case", err, store.ErrNotFound)

	// Upsert: everything replaced but CreatedAt.
	v2 := &model.CompliancePolicy{ID: "pol-3", Name: "Linux strict", Platform: "linux",
		Rules: json.RawMessage(`{"disk_encryption":true,"tpm":true}`), CreatedAt: at(5 * time.Hour), UpdatedAt: at(time.Hour)}
	must(t, "PutCompliancePolicy replace", s.PutCompliancePolicy(ctx, v2))
	want := *v2
	want.CreatedAt = linux.CreatedAt
	got, err := s.GetCompliancePolicy(ctx, "linux")
	must(t, "GetCompliancePolicy", err)
	same(t, "policy after replace", got, &want, normPolicy)

	// Zero times: the store sets UpdatedAt (its clock) and CreatedAt of a new policy.
	stamp := clk.Advance(3 * time.Hour)
	must(t, "PutCompliancePolicy zero times", s.PutCompliancePolicy(ctx, &model.CompliancePolicy{Platform: "darwin", Name: "macOS"}))
	got, err = s.GetCompliancePolicy(ctx, "darwin")
	must(t, "GetCompliancePolicy darwin", err)
	if !got.UpdatedAt.Equal(nt(stamp)) || !got.CreatedAt.Equal(got.UpdatedAt) || got.Rules != nil {
		t.Errorf("policy stored with zero times: got %+v, want UpdatedAt = CreatedAt = now, nil Rules", got)
	}
	if err := s.PutCompliancePolicy(ctx, &model.CompliancePolicy{Name: "no platform"}); err == nil {
		t.Errorf("PutCompliancePolicy without platform: got nil error")
	}

	list, err := s.ListCompliancePolicies(ctx)
	must(t, "ListCompliancePolicies", err)
	var platforms []string
	for _, p := range list {
		platforms = append(platforms, p.Platform)
		if p.Platform == "linux" {
			same(t, "listed linux policy", p, &want, normPolicy)
		}
	}
	// The order of "*" relative to letters depends on the collation.
	if !sort.StringsAreSorted(without(platforms, "*")) || len(platforms) != 3 {
		t.Errorf("ListCompliancePolicies: got platforms %v, want *, darwin, linux ordered by platform", platforms)
	}

	must(t, "DeleteCompliancePolicy", s.DeleteCompliancePolicy(ctx, "linux"))
	_, err = s.GetCompliancePolicy(ctx, "linux")
	wantErr(t, "GetCompliancePolicy after delete", err, store.ErrNotFound)
	wantErr(t, "DeleteCompliancePolicy again", s.DeleteCompliancePolicy(ctx, "linux"), store.ErrNotFound)
	if _, err := s.GetCompliancePolicy(ctx, "*"); err != nil {
		t.Errorf("other policy after delete: got %v, want nil", err)
	}
	// A new policy for the platform starts afresh.
	must(t, "PutCompliancePolicy after delete", s.PutCompliancePolicy(ctx, v2))
	got, err = s.GetCompliancePolicy(ctx, "linux")
	must(t, "GetCompliancePolicy", err)
	same(t, "policy recreated after delete", got, v2, normPolicy)
}

func without(v []string, drop string) []string {
	var out []string
	for _, s := range v {
		if s != drop {
			out = append(out, s)
		}
	}
	return out
}
