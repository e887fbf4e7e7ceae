// Package storetest is the conformance suite for store.Store. Every
// backend runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
//			return openTestStore(t, WithClock(now))
//		})
//	}
//
// Each subtest gets a fresh, empty store from newStore; newStore must
// arrange for the store to be closed (t.Cleanup) and make now the store's
// clock. now is a fake clock the suite moves itself, so whatever the store
// decides by its own clock (a JTI or user code that has expired, the time
// it stamps on a record) is deterministic. The suite checks every
// contract stated in the store package's doc comments: sentinel errors,
// atomic one-time operations (also under concurrency), filters, ordering,
// and that every field round-trips with times at microsecond precision.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// Run runs the conformance suite against stores made by newStore, each
// with a fake clock reading clockStart when its subtest begins.
func Run(t *testing.T, newStore func(t *testing.T, now func() time.Time) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Ping", testPing},
		{"UserRoundTrip", testUserRoundTrip},
		{"UserConflicts", testUserConflicts},
		{"UserByUsernameExact", testUserByUsernameExact},
		{"UserUpdate", testUserUpdate},
		{"UserDelete", testUserDelete},
		{"GroupRoundTrip", testGroupRoundTrip},
		{"GroupConflicts", testGroupConflicts},
		{"GroupUpdateDelete", testGroupUpdateDelete},
		{"ClientRoundTrip", testClientRoundTrip},
		{"ClientUpdateDelete", testClientUpdateDelete},
		{"SessionRoundTrip", testSessionRoundTrip},
		{"ListSessions", testListSessions},
		{"TouchSession", testTouchSession},
		{"BindSessionKey", testBindSessionKey},
		{"RevokeSession", testRevokeSession},
		{"RevokeSessionConcurrent", testRevokeSessionConcurrent},
		{"RevokeUserSessions", testRevokeUserSessions},
		{"RevokeUserSessionsUnremediated", testRevokeUserSessionsUnremediated},
		{"RevokeUnremediatedSkewedClocks", testRevokeUnremediatedSkewedClocks},
		{"RefreshTokenRoundTrip", testRefreshTokenRoundTrip},
		{"RefreshGrant", testRefreshGrant},
		{"RotateRefreshToken", testRotateRefreshToken},
		{"RotateRefreshTokenConcurrent", testRotateRefreshTokenConcurrent},
		{"RotateRefreshTokenConcurrentEvents", testRotateRefreshTokenConcurrentEvents},
		{"RedeemCodeConcurrent", testRedeemCodeConcurrent},
		{"RefuseAuthCode", testRefuseAuthCode},
		{"AuthCode", testAuthCode},
		{"PushedRequest", testPushedRequest},
		{"SigningKeys", testSigningKeys},
		{"AppendEvent", testAppendEvent},
		{"ListEventsFilter", testListEventsFilter},
		{"ListEventsPaging", testListEventsPaging},
		{"EventsAfter", testEventsAfter},
		{"RecordMAC", testRecordMAC},
		{"ScanEventRecords", testScanEventRecords},
		{"SealEvents", testSealEvents},
		{"InsertEventAt", testInsertEventAt},
		{"AuditCheckpoints", testAuditCheckpoints},
		{"AuditKeysAndSecrets", testAuditKeysAndSecrets},
		{"DeleteAuditSegment", testDeleteAuditSegment},
		{"EventSeqAt", testEventSeqAt},
		{"EventWithChange", testEventWithChange},
		{"SignInReservation", testSignInReservation},
		{"SignInReservationConcurrent", testSignInReservationConcurrent},
		{"PurgeSignInFailures", testPurgeSignInFailures},
		{"UpdateFnError", testUpdateFnError},
		{"NotFound", testNotFound},
		{"ProtectionFields", testProtectionFields},
		{"DeviceRoundTrip", testDeviceRoundTrip},
		{"DeviceKeyAttestation", testDeviceKeyAttestation},
		{"DeviceConflicts", testDeviceConflicts},
		{"ListDevices", testListDevices},
		{"ListDevicesLimit", testListDevicesLimit},
		{"UpdateDeleteDevice", testUpdateDeleteDevice},
		{"RevokeDeviceSessions", testRevokeDeviceSessions},
		{"DeviceCodeUserCodeConcurrent", testDeviceCodeUserCodeConcurrent},
		{"DeviceCodeConcurrent", testDeviceCodeConcurrent},
		{"PolicyVersions", testPolicyVersions},
		{"PolicyVersionsConcurrent", testPolicyVersionsConcurrent},
		{"SSFStreams", testSSFStreams},
		{"SSFQueue", testSSFQueue},
		{"SSFQueueConcurrent", testSSFQueueConcurrent},
		{"SSFPoll", testSSFPoll},
		{"SSFPollSubjectOrder", testSSFPollSubjectOrder},
		{"SSFPollManyHeld", testSSFPollManyHeld},
		{"SSFEnqueueHandOff", testSSFEnqueueHandOff},
		{"SSFLeases", testSSFLeases},
		{"ResealAll", testResealAll},
		{"ExportCursors", testExportCursors},
		{"ExportCursorState", testExportCursorState},
		{"RecoveryCodes", testRecoveryCodes},
		{"RecoveryCodeConcurrent", testRecoveryCodeConcurrent},
		{"SSFReceiverStreams", testSSFReceiverStreams},
		{"UsersByEmail", testUsersByEmail},
		{"RiskRoundTrip", testRiskRoundTrip},
		{"RiskDuplicate", testRiskDuplicate},
		{"RiskStates", testRiskStates},
		{"RiskConcurrent", testRiskConcurrent},
		{"RiskRevoke", testRiskRevoke},
		{"RiskExpiriesPurge", testRiskExpiriesPurge},
		{"GroupEvents", testGroupEvents},
		{"EventsByIDSeq", testEventsByIDSeq},
		{"WebAuthnCredentials", testWebAuthnCredentials},
		{"WebAuthnCounterConcurrent", testWebAuthnCounterConcurrent},
		{"IncidentRoundTrip", testIncidentRoundTrip},
		{"IncidentCandidates", testIncidentCandidates},
		{"IncidentUpdate", testIncidentUpdate},
		{"IncidentList", testIncidentList},
		{"IncidentConcurrent", testIncidentConcurrent},
		{"IncidentPurge", testIncidentPurge},
		{"CountEvents", testCountEvents},
		{"ListEventsConsoleFilters", testListEventsConsoleFilters},
		{"ListDevicesCompliance", testListDevicesCompliance},
		{"SessionBindings", testSessionBindings},
	}
	// These depend on the store's clock: expiry of JTIs and user codes,
	// times the store stamps. They move the clock themselves.
	clocked := []struct {
		name string
		fn   func(t *testing.T, s store.Store, clk *clock.Fake)
	}{
		{"RecordJTI", testRecordJTI},
		{"RecordJTIConcurrent", testRecordJTIConcurrent},
		{"ClientGrantRevocation", testClientGrantRevocation},
		{"PurgeExpired", testPurgeExpired},
		{"DeviceCodeLifecycle", testDeviceCodeLifecycle},
		{"DeviceCodeUserCode", testDeviceCodeUserCode},
		{"CompliancePolicy", testCompliancePolicy},
		{"SSFHandled", testSSFHandled},
		{"SSFSignals", testSSFSignals},
		{"WebAuthnChallenges", testWebAuthnChallenges},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t, clock.NewFake(clockStart).Now))
		})
	}
	for _, tc := range clocked {
		t.Run(tc.name, func(t *testing.T) {
			clk := clock.NewFake(clockStart)
			tc.fn(t, newStore(t, clk.Now), clk)
		})
	}
}

// t0 has nanoseconds and a non-UTC zone on purpose: stores keep
// microseconds and may return another location.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("UTC+1", 3600))

func at(d time.Duration) time.Time { return t0.Add(d) }

// clockStart is the store's clock when a subtest begins: the fixtures'
// time zero.
var clockStart = t0

// ---- normalisation: what a store may change without changing meaning ----

func nt(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Truncate(time.Microsecond).UTC()
}

func nl[T any](v []T) []T {
	if len(v) == 0 {
		return nil
	}
	return v
}

func nm(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}

func normUser(u model.User) model.User {
	u.TOTPSecret, u.Roles = nl(u.TOTPSecret), nl(u.Roles)
	u.LockedUntil, u.CreatedAt, u.UpdatedAt = nt(u.LockedUntil), nt(u.CreatedAt), nt(u.UpdatedAt)
	u.RiskUpdatedAt, u.PasswordChangedAt = nt(u.RiskUpdatedAt), nt(u.PasswordChangedAt)
	return u
}

func normGroup(g model.Group) model.Group {
	g.Members, g.CreatedAt = nl(g.Members), nt(g.CreatedAt)
	return g
}

func normClient(c model.Client) model.Client {
	c.SecretHash, c.RedirectURIs, c.PostLogoutRedirectURIs = nl(c.SecretHash), nl(c.RedirectURIs), nl(c.PostLogoutRedirectURIs)
	c.GrantTypes, c.Scopes, c.Audience = nl(c.GrantTypes), nl(c.Scopes), nl(c.Audience)
	c.JWKS = json.RawMessage(nl([]byte(c.JWKS)))
	c.CreatedAt, c.UpdatedAt = nt(c.CreatedAt), nt(c.UpdatedAt)
	return c
}

func normSession(s model.Session) model.Session {
	s.AMR = nl(s.AMR)
	s.AuthTime, s.CreatedAt, s.LastSeen = nt(s.AuthTime), nt(s.CreatedAt), nt(s.LastSeen)
	s.ExpiresAt, s.RevokedAt = nt(s.ExpiresAt), nt(s.RevokedAt)
	s.DBSCKey = json.RawMessage(nl([]byte(s.DBSCKey)))
	return s
}

func normRefresh(r model.RefreshToken) model.RefreshToken {
	r.AMR = nl(r.AMR)
	r.AuthTime, r.CreatedAt, r.ExpiresAt, r.RotatedAt = nt(r.AuthTime), nt(r.CreatedAt), nt(r.ExpiresAt), nt(r.RotatedAt)
	return r
}

func normCode(c model.AuthCode) model.AuthCode {
	c.AMR = nl(c.AMR)
	c.AuthTime, c.CreatedAt, c.ExpiresAt, c.UsedAt = nt(c.AuthTime), nt(c.CreatedAt), nt(c.ExpiresAt), nt(c.UsedAt)
	return c
}

func normPAR(p model.PushedRequest) model.PushedRequest {
	p.Params, p.ExpiresAt = nm(p.Params), nt(p.ExpiresAt)
	return p
}

func normKey(k model.SigningKey) model.SigningKey {
	k.PrivateEnc, k.PublicJWK = nl(k.PrivateEnc), json.RawMessage(nl([]byte(k.PublicJWK)))
	k.CreatedAt, k.ActiveAt, k.RetireAt = nt(k.CreatedAt), nt(k.ActiveAt), nt(k.RetireAt)
	return k
}

func normEvent(e model.Event) model.Event {
	e.Time, e.Data = nt(e.Time), nm(e.Data)
	return e
}

// same reports a difference between got and want after norm.
func same[T any](t *testing.T, what string, got, want *T, norm func(T) T) {
	t.Helper()
	if got == nil || want == nil {
		if got != want {
			t.Errorf("%s: got %+v, want %+v", what, got, want)
		}
		return
	}
	g, w := norm(*got), norm(*want)
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got  %+v\n want %+v", what, g, w)
	}
}

func sameList[T any](t *testing.T, what string, got, want []*T, norm func(T) T) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d items, want %d", what, len(got), len(want))
		return
	}
	for i := range got {
		same(t, fmt.Sprintf("%s[%d]", what, i), got[i], want[i], norm)
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got error %v, want %v", what, err, want)
	}
}

var ctx = context.Background()

// ---- fixtures ----

func fullUser(id, username string) *model.User {
	return &model.User{
		ID: id, Username: username, Email: username + "@example.com", DisplayName: "User " + id,
		PasswordHash: "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
		TOTPSecret:   []byte{0, 1, 2, 0xff}, Roles: []string{model.RoleAdmin, "auditor"},
		Disabled: true, FailedLogins: 3, LockedUntil: at(time.Hour),
		RiskLevel: "high", RiskUpdatedAt: at(2 * time.Minute), PasswordChangedAt: at(3 * time.Minute),
		CreatedAt: at(0), UpdatedAt: at(time.Minute),
	}
}

func fullClient(id string) *model.Client {
	return &model.Client{
		ID: id, Name: "Client " + id, SecretHash: []byte{9, 8, 7, 0},
		TokenEndpointAuthMethod:  model.AuthPrivateKeyJWT,
		RedirectURIs:             []string{"https://app.example/cb", "http://127.0.0.1/cb"},
		PostLogoutRedirectURIs:   []string{"https://app.example/bye"},
		GrantTypes:               []string{model.GrantAuthorizationCode, model.GrantRefreshToken},
		Scopes:                   []string{"openid", "profile", "offline_access"},
		Audience:                 []string{"https://api.example"},
		JWKS:                     json.RawMessage(`{"keys": [ {"kty":"EC","crv":"P-256","x":"f83O","y":"x_FE"} ]}`),
		DPoPBoundAccessTokens:    true,
		RequireProtectedSessions: true, CAECapable: true,
		ApplicationType: "native", ManagedBy: model.ClientManagedByConfig,
		AccessTokenTTL: 90*time.Second + 5*time.Nanosecond,
		CreatedAt:      at(0), UpdatedAt: at(time.Second),
	}
}

func fullSession(id, user string) *model.Session {
	return &model.Session{
		ID: id, UserID: user, AuthTime: at(-time.Minute), AMR: []string{"pwd", "otp"}, ACR: "urn:ward:acr:mfa",
		IP: "203.0.113.7", UserAgent: "Mozilla/5.0", CreatedAt: at(0), LastSeen: at(time.Second),
		ExpiresAt: at(24 * time.Hour), IdleTimeout: 30 * time.Minute,
		DBSCKeyJKT: "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
		DBSCKey:    json.RawMessage(`{"crv":"P-256","kty":"EC","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`),
	}
}

func fullRefresh(hash, session string) *model.RefreshToken {
	return &model.RefreshToken{
		Hash: []byte(hash), SessionID: session, ClientID: "client-1", UserID: "user-1",
		Scope: "openid offline_access", JKT: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I",
		DeviceID: "device-1", AuthTime: at(-time.Minute), AMR: []string{"pwd"}, ACR: "1", CreatedAt: at(0),
		ExpiresAt: at(30 * 24 * time.Hour), Generation: 2,
	}
}

func fullCode(hash string) *model.AuthCode {
	return &model.AuthCode{
		Hash: []byte(hash), ClientID: "client-1", UserID: "user-1", SessionID: "sess-1",
		RedirectURI: "https://app.example/cb", Scope: "openid", Nonce: "n-0S6_WzA2Mj",
		CodeChallenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", CodeChallengeMethod: "S256",
		DPoPJKT: "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I", AuthTime: at(-time.Second),
		AMR: []string{"pwd", "hwk"}, ACR: "2", CreatedAt: at(0), ExpiresAt: at(time.Minute),
	}
}

func fullKey(kid string, created time.Time) *model.SigningKey {
	return &model.SigningKey{
		KID: kid, Alg: "ES256", PrivateEnc: []byte{1, 2, 3, 0, 4},
		PublicJWK: json.RawMessage(`{"kty":"EC","crv":"P-256","kid":"` + kid + `","x":"a","y":"b"}`),
		CreatedAt: created, ActiveAt: created.Add(time.Hour), RetireAt: created.Add(90 * 24 * time.Hour),
	}
}

// ---- tests ----

func testPing(t *testing.T, s store.Store) {
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping: got %v, want nil", err)
	}
}

func testUserRoundTrip(t *testing.T, s store.Store) {
	full := fullUser("u1", "alice")
	zero := &model.User{ID: "u2", Username: "bob"} // zero times stay zero, nil slices stay empty
	for _, u := range []*model.User{full, zero} {
		must(t, "CreateUser", s.CreateUser(ctx, u))
	}
	for _, want := range []*model.User{full, zero} {
		got, err := s.GetUser(ctx, want.ID)
		must(t, "GetUser", err)
		same(t, "GetUser("+want.ID+")", got, want, normUser)
		got, err = s.GetUserByUsername(ctx, want.Username)
		must(t, "GetUserByUsername", err)
		same(t, "GetUserByUsername("+want.Username+")", got, want, normUser)
	}
	if got, _ := s.GetUser(ctx, "u2"); got != nil && (!got.LockedUntil.IsZero() || !got.CreatedAt.IsZero()) {
		t.Errorf("zero times: got LockedUntil=%v CreatedAt=%v, want zero", got.LockedUntil, got.CreatedAt)
	}
	list, err := s.ListUsers(ctx)
	must(t, "ListUsers", err)
	sameList(t, "ListUsers", list, []*model.User{full, zero}, normUser)
}

func testUserConflicts(t *testing.T, s store.Store) {
	must(t, "CreateUser", s.CreateUser(ctx, fullUser("u1", "alice")))
	tests := []struct {
		name string
		u    *model.User
		want error
	}{
		{"same id", &model.User{ID: "u1", Username: "other"}, store.ErrAlreadyExists},
		{"same username", &model.User{ID: "u2", Username: "alice"}, store.ErrAlreadyExists},
		{"username differing in case", &model.User{ID: "u3", Username: "ALICE"}, store.ErrAlreadyExists},
		{"new", &model.User{ID: "u4", Username: "alice2"}, nil},
	}
	for _, tc := range tests {
		err := s.CreateUser(ctx, tc.u)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: CreateUser got %v, want %v", tc.name, err, tc.want)
		}
	}
	got, err := s.GetUser(ctx, "u1")
	must(t, "GetUser", err)
	same(t, "user after conflicts", got, fullUser("u1", "alice"), normUser)
}

func testUserByUsernameExact(t *testing.T, s store.Store) {
	must(t, "CreateUser", s.CreateUser(ctx, &model.User{ID: "u1", Username: "alice"}))
	for _, name := range []string{"Alice", "ALICE", "alice ", "alic", "%", "alice%", ""} {
		_, err := s.GetUserByUsername(ctx, name)
		wantErr(t, fmt.Sprintf("GetUserByUsername(%q)", name), err, store.ErrNotFound)
	}
}

func testUserUpdate(t *testing.T, s store.Store) {
	must(t, "CreateUser", s.CreateUser(ctx, fullUser("u1", "alice")))
	must(t, "CreateUser", s.CreateUser(ctx, fullUser("u2", "bob")))
	want := fullUser("u1", "alice")
	want.Username = "alice.new"
	want.Roles, want.TOTPSecret, want.Disabled, want.FailedLogins = nil, nil, false, 0
	want.LockedUntil, want.UpdatedAt = time.Time{}, at(time.Hour)
	want.RiskLevel, want.RiskUpdatedAt, want.PasswordChangedAt = "low", at(4*time.Hour), time.Time{}
	got, err := s.UpdateUser(ctx, "u1", func(u *model.User) error {
		u.ID = "ignored" // the id cannot change
		u.Username, u.Roles, u.TOTPSecret, u.Disabled, u.FailedLogins = "alice.new", nil, nil, false, 0
		u.LockedUntil, u.UpdatedAt = time.Time{}, at(time.Hour)
		u.RiskLevel, u.RiskUpdatedAt, u.PasswordChangedAt = "low", at(4*time.Hour), time.Time{}
		return nil
	})
	must(t, "UpdateUser", err)
	same(t, "UpdateUser result", got, want, normUser)
	stored, err := s.GetUser(ctx, "u1")
	must(t, "GetUser", err)
	same(t, "stored after UpdateUser", stored, want, normUser)
	if _, err := s.GetUserByUsername(ctx, "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("old username after rename: got %v, want ErrNotFound", err)
	}

	_, err = s.UpdateUser(ctx, "u1", func(u *model.User) error { u.Username = "bob"; return nil })
	wantErr(t, "UpdateUser to a taken username", err, store.ErrAlreadyExists)
	stored, err = s.GetUser(ctx, "u1")
	must(t, "GetUser", err)
	same(t, "stored after failed rename", stored, want, normUser)
}

func testUserDelete(t *testing.T, s store.Store) {
	must(t, "CreateUser", s.CreateUser(ctx, fullUser("u1", "alice")))
	must(t, "CreateUser", s.CreateUser(ctx, fullUser("u2", "bob")))
	must(t, "CreateGroup", s.CreateGroup(ctx, &model.Group{ID: "g1", Name: "admins", Members: []string{"u1", "u2"}}))
	must(t, "DeleteUser", s.DeleteUser(ctx, "u1"))
	_, err := s.GetUser(ctx, "u1")
	wantErr(t, "GetUser after delete", err, store.ErrNotFound)
	wantErr(t, "DeleteUser again", s.DeleteUser(ctx, "u1"), store.ErrNotFound)
	g, err := s.GetGroup(ctx, "g1")
	must(t, "GetGroup", err)
	if want := []string{"u2"}; !reflect.DeepEqual(g.Members, want) {
		t.Errorf("members after DeleteUser: got %v, want %v", g.Members, want)
	}
	gs, err := s.GroupsOfUser(ctx, "u1")
	must(t, "GroupsOfUser", err)
	if len(gs) != 0 {
		t.Errorf("GroupsOfUser(deleted): got %d groups, want 0", len(gs))
	}
	// The username is free again.
	must(t, "CreateUser reusing username", s.CreateUser(ctx, &model.User{ID: "u3", Username: "alice"}))
}

func testGroupRoundTrip(t *testing.T, s store.Store) {
	groups := []*model.Group{
		{ID: "g2", Name: "admins", Members: []string{"u3", "u1", "u2"}, CreatedAt: at(0)},
		{ID: "g1", Name: "engineers", Members: []string{"u1"}, CreatedAt: at(time.Second)},
		{ID: "g3", Name: "empty"},
	}
	for _, g := range groups {
		must(t, "CreateGroup", s.CreateGroup(ctx, g))
	}
	for _, want := range groups {
		got, err := s.GetGroup(ctx, want.ID)
		must(t, "GetGroup", err)
		same(t, "GetGroup("+want.ID+")", got, want, normGroup)
		got, err = s.GetGroupByName(ctx, want.Name)
		must(t, "GetGroupByName", err)
		same(t, "GetGroupByName("+want.Name+")", got, want, normGroup)
	}
	list, err := s.ListGroups(ctx)
	must(t, "ListGroups", err)
	sameList(t, "ListGroups (by name)", list, []*model.Group{groups[0], groups[2], groups[1]}, normGroup)

	tests := []struct {
		user string
		want []*model.Group
	}{
		{"u1", []*model.Group{groups[0], groups[1]}},
		{"u3", []*model.Group{groups[0]}},
		{"nobody", nil},
	}
	for _, tc := range tests {
		got, err := s.GroupsOfUser(ctx, tc.user)
		must(t, "GroupsOfUser", err)
		sameList(t, "GroupsOfUser("+tc.user+")", got, tc.want, normGroup)
	}
}

func testGroupConflicts(t *testing.T, s store.Store) {
	must(t, "CreateGroup", s.CreateGroup(ctx, &model.Group{ID: "g1", Name: "admins"}))
	wantErr(t, "CreateGroup same id", s.CreateGroup(ctx, &model.Group{ID: "g1", Name: "x"}), store.ErrAlreadyExists)
	wantErr(t, "CreateGroup same name", s.CreateGroup(ctx, &model.Group{ID: "g2", Name: "admins"}), store.ErrAlreadyExists)
	must(t, "CreateGroup", s.CreateGroup(ctx, &model.Group{ID: "g3", Name: "ops"}))
	_, err := s.UpdateGroup(ctx, "g3", func(g *model.Group) error { g.Name = "admins"; return nil })
	wantErr(t, "UpdateGroup to a taken name", err, store.ErrAlreadyExists)
}

func testGroupUpdateDelete(t *testing.T, s store.Store) {
	must(t, "CreateGroup", s.CreateGroup(ctx, &model.Group{ID: "g1", Name: "admins", Members: []string{"u1", "u2"}, CreatedAt: at(0)}))
	want := &model.Group{ID: "g1", Name: "operators", Members: []string{"u3", "u1"}, CreatedAt: at(0)}
	got, err := s.UpdateGroup(ctx, "g1", func(g *model.Group) error {
		g.Name, g.Members = "operators", []string{"u3", "u1"}
		return nil
	})
	must(t, "UpdateGroup", err)
	same(t, "UpdateGroup result", got, want, normGroup)
	stored, err := s.GetGroup(ctx, "g1")
	must(t, "GetGroup", err)
	same(t, "stored after UpdateGroup", stored, want, normGroup)
	for user, n := range map[string]int{"u1": 1, "u2": 0, "u3": 1} {
		gs, err := s.GroupsOfUser(ctx, user)
		must(t, "GroupsOfUser", err)
		if len(gs) != n {
			t.Errorf("GroupsOfUser(%s) after update: got %d groups, want %d", user, len(gs), n)
		}
	}
	must(t, "DeleteGroup", s.DeleteGroup(ctx, "g1"))
	_, err = s.GetGroup(ctx, "g1")
	wantErr(t, "GetGroup after delete", err, store.ErrNotFound)
	gs, err := s.GroupsOfUser(ctx, "u1")
	must(t, "GroupsOfUser", err)
	if len(gs) != 0 {
		t.Errorf("GroupsOfUser after DeleteGroup: got %d, want 0", len(gs))
	}
	wantErr(t, "DeleteGroup again", s.DeleteGroup(ctx, "g1"), store.ErrNotFound)
	// Name and id are free again.
	must(t, "CreateGroup reuse", s.CreateGroup(ctx, &model.Group{ID: "g1", Name: "operators"}))
}

func testClientRoundTrip(t *testing.T, s store.Store) {
	full := fullClient("c2")
	public := &model.Client{ID: "c1", Name: "SPA", TokenEndpointAuthMethod: model.AuthNone}
	for _, c := range []*model.Client{full, public} {
		must(t, "CreateClient", s.CreateClient(ctx, c))
	}
	wantErr(t, "CreateClient same id", s.CreateClient(ctx, fullClient("c2")), store.ErrAlreadyExists)
	for _, want := range []*model.Client{full, public} {
		got, err := s.GetClient(ctx, want.ID)
		must(t, "GetClient", err)
		same(t, "GetClient("+want.ID+")", got, want, normClient)
	}
	got, err := s.GetClient(ctx, "c2")
	must(t, "GetClient", err)
	if !bytes.Equal(got.JWKS, full.JWKS) {
		t.Errorf("JWKS not verbatim: got %s, want %s", got.JWKS, full.JWKS)
	}
	if got.AccessTokenTTL != full.AccessTokenTTL {
		t.Errorf("AccessTokenTTL: got %v, want %v", got.AccessTokenTTL, full.AccessTokenTTL)
	}
	list, err := s.ListClients(ctx)
	must(t, "ListClients", err)
	sameList(t, "ListClients (by id)", list, []*model.Client{public, full}, normClient)
}

func testClientUpdateDelete(t *testing.T, s store.Store) {
	must(t, "CreateClient", s.CreateClient(ctx, fullClient("c1")))
	want := fullClient("c1")
	want.SecretHash, want.JWKS, want.DPoPBoundAccessTokens = []byte("new-hash"), nil, false
	want.RequireProtectedSessions, want.CAECapable = false, false
	want.ApplicationType, want.ManagedBy = "web", ""
	want.GrantTypes, want.AccessTokenTTL, want.UpdatedAt = []string{model.GrantClientCredentials}, 0, at(time.Hour)
	got, err := s.UpdateClient(ctx, "c1", func(c *model.Client) error {
		c.SecretHash, c.JWKS, c.DPoPBoundAccessTokens = []byte("new-hash"), nil, false
		c.RequireProtectedSessions, c.CAECapable = false, false
		c.ApplicationType, c.ManagedBy = "web", ""
		c.GrantTypes, c.AccessTokenTTL, c.UpdatedAt = []string{model.GrantClientCredentials}, 0, at(time.Hour)
		return nil
	})
	must(t, "UpdateClient", err)
	same(t, "UpdateClient result", got, want, normClient)
	stored, err := s.GetClient(ctx, "c1")
	must(t, "GetClient", err)
	same(t, "stored after UpdateClient", stored, want, normClient)
	must(t, "DeleteClient", s.DeleteClient(ctx, "c1"))
	_, err = s.GetClient(ctx, "c1")
	wantErr(t, "GetClient after delete", err, store.ErrNotFound)
	wantErr(t, "DeleteClient again", s.DeleteClient(ctx, "c1"), store.ErrNotFound)
}

func testSessionRoundTrip(t *testing.T, s store.Store) {
	full := fullSession("s1", "u1")
	full.RevokedAt, full.RevokeCause = at(time.Hour), "admin"
	zero := &model.Session{ID: "s2", UserID: "u1"}
	for _, se := range []*model.Session{full, zero} {
		must(t, "CreateSession", s.CreateSession(ctx, se))
	}
	wantErr(t, "CreateSession same id", s.CreateSession(ctx, fullSession("s1", "u2")), store.ErrAlreadyExists)
	for _, want := range []*model.Session{full, zero} {
		got, err := s.GetSession(ctx, want.ID)
		must(t, "GetSession", err)
		same(t, "GetSession("+want.ID+")", got, want, normSession)
	}
}

func testBindSessionKey(t *testing.T, s store.Store) {
	ctx := context.Background()
	key := json.RawMessage(`{"kty":"EC","crv":"P-256","x":"a","y":"b"}`)
	must(t, "CreateSession", s.CreateSession(ctx, &model.Session{ID: "b1", UserID: "u1", ExpiresAt: at(time.Hour)}))
	must(t, "BindSessionKey", s.BindSessionKey(ctx, "b1", "jkt-1", key))
	got, err := s.GetSession(ctx, "b1")
	must(t, "GetSession", err)
	if got.DBSCKeyJKT != "jkt-1" || string(got.DBSCKey) != string(key) {
		t.Fatalf("bound session: jkt %q key %s", got.DBSCKeyJKT, got.DBSCKey)
	}
	wantErr(t, "BindSessionKey again", s.BindSessionKey(ctx, "b1", "jkt-2", key), store.ErrAlreadyExists)
	got, _ = s.GetSession(ctx, "b1")
	if got.DBSCKeyJKT != "jkt-1" {
		t.Fatalf("second bind changed the key to %q", got.DBSCKeyJKT)
	}
	wantErr(t, "BindSessionKey missing", s.BindSessionKey(ctx, "nope", "jkt-1", key), store.ErrNotFound)
	must(t, "CreateSession", s.CreateSession(ctx, &model.Session{ID: "b2", UserID: "u1", ExpiresAt: at(time.Hour)}))
	must(t, "RevokeSession", revoke(s, "b2", at(0), "test"))
	wantErr(t, "BindSessionKey revoked", s.BindSessionKey(ctx, "b2", "jkt-1", key), store.ErrNotFound)
}

func testListSessions(t *testing.T, s store.Store) {
	now := at(time.Hour)
	mk := func(id, user string, created time.Duration, expires time.Duration, revoked bool) *model.Session {
		se := fullSession(id, user)
		se.CreatedAt, se.ExpiresAt = at(created), at(expires)
		if revoked {
			se.RevokedAt, se.RevokeCause = at(created+time.Minute), "logout"
		}
		return se
	}
	all := []*model.Session{
		mk("a-active-old", "u1", 0, 48*time.Hour, false),
		mk("a-active-new", "u1", 10*time.Minute, 48*time.Hour, false),
		mk("a-revoked", "u1", 5*time.Minute, 48*time.Hour, true),
		mk("a-expired", "u1", 1*time.Minute, time.Hour, false), // expires exactly at now
		mk("b-active", "u2", 2*time.Minute, 48*time.Hour, false),
	}
	for _, se := range all {
		must(t, "CreateSession", s.CreateSession(ctx, se))
	}
	ids := func(ss []*model.Session) []string {
		var out []string
		for _, se := range ss {
			out = append(out, se.ID)
		}
		return out
	}
	tests := []struct {
		name string
		f    store.SessionFilter
		want []string // newest first
	}{
		{"all", store.SessionFilter{}, []string{"a-active-new", "a-revoked", "b-active", "a-expired", "a-active-old"}},
		{"user", store.SessionFilter{UserID: "u1"}, []string{"a-active-new", "a-revoked", "a-expired", "a-active-old"}},
		{"user active", store.SessionFilter{UserID: "u1", ActiveOnly: true, Now: now}, []string{"a-active-new", "a-active-old"}},
		{"active", store.SessionFilter{ActiveOnly: true, Now: now}, []string{"a-active-new", "b-active", "a-active-old"}},
		{"active earlier", store.SessionFilter{UserID: "u1", ActiveOnly: true, Now: at(time.Hour - time.Microsecond)},
			[]string{"a-active-new", "a-expired", "a-active-old"}},
		{"limit", store.SessionFilter{UserID: "u1", Limit: 2}, []string{"a-active-new", "a-revoked"}},
		{"unknown user", store.SessionFilter{UserID: "nobody"}, nil},
	}
	for _, tc := range tests {
		got, err := s.ListSessions(ctx, tc.f)
		must(t, tc.name, err)
		if g := ids(got); !reflect.DeepEqual(g, tc.want) {
			t.Errorf("ListSessions %s: got %v, want %v", tc.name, g, tc.want)
		}
	}
	got, err := s.ListSessions(ctx, store.SessionFilter{UserID: "u2"})
	must(t, "ListSessions", err)
	sameList(t, "ListSessions round trip", got, []*model.Session{all[4]}, normSession)
}

func testTouchSession(t *testing.T, s store.Store) {
	must(t, "CreateSession", s.CreateSession(ctx, fullSession("s1", "u1")))
	must(t, "TouchSession", s.TouchSession(ctx, "s1", at(time.Hour)))
	got, err := s.GetSession(ctx, "s1")
	must(t, "GetSession", err)
	want := fullSession("s1", "u1")
	want.LastSeen = at(time.Hour)
	same(t, "after TouchSession", got, want, normSession)

	wantErr(t, "TouchSession missing", s.TouchSession(ctx, "nope", at(time.Hour)), store.ErrNotFound)

	must(t, "RevokeSession", revoke(s, "s1", at(2*time.Hour), "logout"))
	wantErr(t, "TouchSession revoked", s.TouchSession(ctx, "s1", at(3*time.Hour)), store.ErrNotFound)
	got, err = s.GetSession(ctx, "s1")
	must(t, "GetSession", err)
	if !got.LastSeen.Equal(nt(at(time.Hour))) {
		t.Errorf("LastSeen after touching a revoked session: got %v, want %v", got.LastSeen, nt(at(time.Hour)))
	}
}

func testRevokeSession(t *testing.T, s store.Store) {
	must(t, "CreateSession", s.CreateSession(ctx, fullSession("s1", "u1")))
	must(t, "CreateSession", s.CreateSession(ctx, fullSession("s2", "u1")))
	for _, rt := range []*model.RefreshToken{fullRefresh("h1", "s1"), fullRefresh("h2", "s1"), fullRefresh("h3", "s2")} {
		must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, rt))
	}
	revoked, err := s.RevokeSession(ctx, "s1", at(time.Hour), "admin_revoked")
	must(t, "RevokeSession", err)
	if !revoked {
		t.Error("RevokeSession of an active session reported false, want true")
	}
	got, err := s.GetSession(ctx, "s1")
	must(t, "GetSession", err)
	want := fullSession("s1", "u1")
	want.RevokedAt, want.RevokeCause = at(time.Hour), "admin_revoked"
	same(t, "revoked session", got, want, normSession)
	if got.Active(at(time.Hour)) {
		t.Errorf("revoked session: Active() = true, want false")
	}
	for _, h := range []string{"h1", "h2"} {
		_, err := s.GetRefreshToken(ctx, []byte(h))
		wantErr(t, "refresh token of revoked session "+h, err, store.ErrNotFound)
	}
	if _, err := s.GetRefreshToken(ctx, []byte("h3")); err != nil {
		t.Errorf("refresh token of another session: got %v, want nil", err)
	}
	// Idempotent: no error, first revocation kept, nothing reported.
	if revoked, err := s.RevokeSession(ctx, "s1", at(2*time.Hour), "again"); err != nil || revoked {
		t.Errorf("RevokeSession again: got %v, %v; want false, nil", revoked, err)
	}
	// A refresh token written to the revoked session (a write that raced
	// the revocation) goes on a second revocation.
	must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, fullRefresh("h4", "s1")))
	if _, err := s.RevokeSession(ctx, "s1", at(3*time.Hour), "again"); err != nil {
		t.Errorf("RevokeSession a third time: %v", err)
	}
	_, err = s.GetRefreshToken(ctx, []byte("h4"))
	wantErr(t, "refresh token written after the revocation", err, store.ErrNotFound)
	got, err = s.GetSession(ctx, "s1")
	must(t, "GetSession", err)
	same(t, "session revoked twice", got, want, normSession)
	wantErr(t, "RevokeSession missing", revoke(s, "nope", at(time.Hour), "x"), store.ErrNotFound)
}

// revoke is RevokeSession without its report.
func revoke(s store.Store, id string, at time.Time, cause string) error {
	_, err := s.RevokeSession(ctx, id, at, cause)
	return err
}

// Concurrent revocations of one session: exactly one reports that it
// revoked it, and the session keeps that one's time and cause.
func testRevokeSessionConcurrent(t *testing.T, s store.Store) {
	must(t, "CreateSession", s.CreateSession(ctx, fullSession("s1", "u1")))
	must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, fullRefresh("h1", "s1")))
	errs := race(func(i int) error {
		revoked, err := s.RevokeSession(ctx, "s1", at(time.Duration(i+1)*time.Second), fmt.Sprintf("cause-%d", i))
		if err == nil && !revoked {
			return store.ErrAlreadyUsed // a loser
		}
		return err
	})
	w := oneWinner(t, "concurrent RevokeSession", errs, store.ErrAlreadyUsed)
	if w < 0 {
		return
	}
	got, err := s.GetSession(ctx, "s1")
	must(t, "GetSession", err)
	if !got.RevokedAt.Equal(nt(at(time.Duration(w+1)*time.Second))) || got.RevokeCause != fmt.Sprintf("cause-%d", w) {
		t.Errorf("session revoked at %v for %q, want the winner's (%d)", got.RevokedAt, got.RevokeCause, w)
	}
	_, err = s.GetRefreshToken(ctx, []byte("h1"))
	wantErr(t, "refresh token of the revoked session", err, store.ErrNotFound)
}

func testRevokeUserSessions(t *testing.T, s store.Store) {
	for _, se := range []*model.Session{fullSession("s3", "u1"), fullSession("s1", "u1"), fullSession("s2", "u1"), fullSession("o1", "u2")} {
		must(t, "CreateSession", s.CreateSession(ctx, se))
		must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, fullRefresh("rt-"+se.ID, se.ID)))
	}
	must(t, "RevokeSession", revoke(s, "s2", at(time.Minute), "logout"))

	ids, err := s.RevokeUserSessions(ctx, "u1", at(time.Hour), "password_changed")
	must(t, "RevokeUserSessions", err)
	if want := []string{"s1", "s3"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("RevokeUserSessions ids: got %v, want %v (already revoked s2 excluded)", ids, want)
	}
	tests := []struct {
		id        string
		revokedAt time.Time
		cause     string
		tokenGone bool
	}{
		{"s1", at(time.Hour), "password_changed", true},
		{"s3", at(time.Hour), "password_changed", true},
		{"s2", at(time.Minute), "logout", true},
		{"o1", time.Time{}, "", false},
	}
	for _, tc := range tests {
		got, err := s.GetSession(ctx, tc.id)
		must(t, "GetSession", err)
		if !got.RevokedAt.Equal(nt(tc.revokedAt)) || got.RevokeCause != tc.cause {
			t.Errorf("session %s: got revoked %v %q, want %v %q", tc.id, got.RevokedAt, got.RevokeCause, nt(tc.revokedAt), tc.cause)
		}
		_, err = s.GetRefreshToken(ctx, []byte("rt-"+tc.id))
		if gone := errors.Is(err, store.ErrNotFound); gone != tc.tokenGone {
			t.Errorf("refresh token of %s: got err %v, want gone=%v", tc.id, err, tc.tokenGone)
		}
	}
	ids, err = s.RevokeUserSessions(ctx, "u1", at(2*time.Hour), "again")
	must(t, "RevokeUserSessions again", err)
	if len(ids) != 0 {
		t.Errorf("RevokeUserSessions again: got %v, want none", ids)
	}
	ids, err = s.RevokeUserSessions(ctx, "nobody", at(2*time.Hour), "x")
	must(t, "RevokeUserSessions unknown user", err)
	if len(ids) != 0 {
		t.Errorf("RevokeUserSessions unknown user: got %v, want none", ids)
	}
}

func testRefreshTokenRoundTrip(t *testing.T, s store.Store) {
	must(t, "CreateSession", s.CreateSession(ctx, fullSession("s1", "u1")))
	full := fullRefresh("\x00hash-1\xff", "s1")
	zero := &model.RefreshToken{Hash: []byte("hash-2"), SessionID: "s1"}
	for _, rt := range []*model.RefreshToken{full, zero} {
		must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, rt))
	}
	wantErr(t, "CreateRefreshToken same hash", s.CreateRefreshToken(ctx, fullRefresh("hash-2", "s1")), store.ErrAlreadyExists)
	for _, want := range []*model.RefreshToken{full, zero} {
		got, err := s.GetRefreshToken(ctx, want.Hash)
		must(t, "GetRefreshToken", err)
		same(t, fmt.Sprintf("GetRefreshToken(%q)", want.Hash), got, want, normRefresh)
	}
	// Hashes compare as bytes, not prefixes.
	_, err := s.GetRefreshToken(ctx, []byte("\x00hash-1"))
	wantErr(t, "GetRefreshToken prefix", err, store.ErrNotFound)
	must(t, "DeleteRefreshToken", s.DeleteRefreshToken(ctx, full.Hash))
	_, err = s.GetRefreshToken(ctx, full.Hash)
	wantErr(t, "GetRefreshToken after delete", err, store.ErrNotFound)
	wantErr(t, "DeleteRefreshToken again", s.DeleteRefreshToken(ctx, full.Hash), store.ErrNotFound)
}

func testRefreshGrant(t *testing.T, s store.Store) {
	u := fullUser("user-1", "alice")
	must(t, "CreateUser", s.CreateUser(ctx, u))
	must(t, "CreateSession", s.CreateSession(ctx, fullSession("s1", "user-1")))
	rt := fullRefresh("hash-1", "s1")
	must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, rt))
	noDevice := fullRefresh("hash-2", "s1")
	noDevice.DeviceID = ""
	must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, noDevice))

	for _, want := range []*model.RefreshToken{rt, noDevice} {
		g, err := s.GetRefreshGrant(ctx, want.Hash, "")
		must(t, "GetRefreshGrant", err)
		same(t, "GetRefreshGrant token", g.Token, want, normRefresh)
		same(t, "GetRefreshGrant session", g.Session, fullSession("s1", "user-1"), normSession)
		same(t, "GetRefreshGrant user", g.User, u, normUser)
	}
	_, err := s.GetRefreshGrant(ctx, []byte("missing"), "")
	wantErr(t, "GetRefreshGrant missing", err, store.ErrNotFound)

	// The device holding the request's key comes with the grant, read in
	// full; another key, or none, gives none.
	dev := fullDevice("dev-g", "user-1", "jkt-grant")
	must(t, "CreateDevice", s.CreateDevice(ctx, dev))
	must(t, "CreateDevice", s.CreateDevice(ctx, fullDevice("dev-other", "user-2", "jkt-other")))
	for jkt, want := range map[string]*model.Device{"jkt-grant": dev, "jkt-unknown": nil, "": nil} {
		g, err := s.GetRefreshGrant(ctx, rt.Hash, jkt)
		must(t, "GetRefreshGrant with key", err)
		same(t, "GetRefreshGrant token with key", g.Token, rt, normRefresh)
		if want == nil {
			if g.Device != nil {
				t.Errorf("GetRefreshGrant(%q): device %s, want none", jkt, g.Device.ID)
			}
			continue
		}
		if g.Device == nil {
			t.Fatalf("GetRefreshGrant(%q): no device", jkt)
		}
		same(t, "GetRefreshGrant device", g.Device, want, normDevice)
	}

	// The user is gone: the token and session come back, the user nil.
	must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, func() *model.RefreshToken {
		o := fullRefresh("orphan-user", "s1")
		o.UserID = "nobody"
		return o
	}()))
	g, err := s.GetRefreshGrant(ctx, []byte("orphan-user"), "")
	must(t, "GetRefreshGrant without user", err)
	if g.Token == nil || g.Session == nil || g.User != nil {
		t.Errorf("GetRefreshGrant without user: got token %v, session %v, user %v; want token, session, no user",
			g.Token != nil, g.Session != nil, g.User != nil)
	}
	// The session is gone (revoking deletes the tokens, so delete it by
	// purging): the token and user come back, the session nil.
	must(t, "CreateSession", s.CreateSession(ctx, func() *model.Session {
		se := fullSession("s2", "user-1")
		se.ExpiresAt = at(time.Minute)
		return se
	}()))
	must(t, "PurgeExpired", s.PurgeExpired(ctx, at(2*time.Minute)))
	must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, fullRefresh("orphan-session", "s2")))
	g, err = s.GetRefreshGrant(ctx, []byte("orphan-session"), "jkt-grant")
	must(t, "GetRefreshGrant without session", err)
	if g.Token == nil || g.Session != nil || g.User == nil || g.Device == nil || g.Device.ID != "dev-g" {
		t.Errorf("GetRefreshGrant without session: got token %v, session %v, user %v, device %v; want token, no session, user, device",
			g.Token != nil, g.Session != nil, g.User != nil, g.Device != nil)
	}
}

func testRotateRefreshToken(t *testing.T, s store.Store) {
	must(t, "CreateSession", s.CreateSession(ctx, fullSession("s1", "u1")))
	old := fullRefresh("old", "s1")
	must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, old))
	next := fullRefresh("next", "s1")
	next.CreatedAt = at(time.Hour)
	next.Generation = old.Generation + 1

	got, err := s.RotateRefreshToken(ctx, old.Hash, at(time.Hour), next)
	must(t, "RotateRefreshToken", err)
	wantOld := fullRefresh("old", "s1")
	wantOld.RotatedAt = at(time.Hour)
	same(t, "RotateRefreshToken result (old, rotated)", got, wantOld, normRefresh)
	stored, err := s.GetRefreshToken(ctx, old.Hash)
	must(t, "GetRefreshToken old", err)
	same(t, "old after rotation", stored, wantOld, normRefresh)
	stored, err = s.GetRefreshToken(ctx, next.Hash)
	must(t, "GetRefreshToken next", err)
	same(t, "next after rotation", stored, next, normRefresh)
	if stored.Generation != 3 {
		t.Errorf("generation of the successor: got %d, want 3", stored.Generation)
	}
	if g, err := s.GetRefreshGrant(ctx, next.Hash, ""); err != nil || g.Token.Generation != 3 {
		t.Errorf("GetRefreshGrant generation: got %+v, %v; want 3", g, err)
	}

	// Reuse: old record back with ErrAlreadyUsed, nothing stored, RotatedAt unchanged.
	next2 := fullRefresh("next2", "s1")
	got, err = s.RotateRefreshToken(ctx, old.Hash, at(2*time.Hour), next2)
	wantErr(t, "second RotateRefreshToken", err, store.ErrAlreadyUsed)
	same(t, "second RotateRefreshToken record", got, wantOld, normRefresh)
	_, err = s.GetRefreshToken(ctx, next2.Hash)
	wantErr(t, "successor of a reused token", err, store.ErrNotFound)
	stored, err = s.GetRefreshToken(ctx, old.Hash)
	must(t, "GetRefreshToken old", err)
	same(t, "old after reuse", stored, wantOld, normRefresh)

	// The chain continues from next.
	_, err = s.RotateRefreshToken(ctx, next.Hash, at(3*time.Hour), fullRefresh("next3", "s1"))
	must(t, "RotateRefreshToken next", err)

	// Missing token: ErrNotFound, nothing stored.
	_, err = s.RotateRefreshToken(ctx, []byte("missing"), at(time.Hour), fullRefresh("orphan", "s1"))
	wantErr(t, "RotateRefreshToken missing", err, store.ErrNotFound)
	_, err = s.GetRefreshToken(ctx, []byte("orphan"))
	wantErr(t, "successor of a missing token", err, store.ErrNotFound)

	// A successor whose hash exists already: ErrAlreadyExists and the old token stays unrotated.
	must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, fullRefresh("fresh", "s1")))
	_, err = s.RotateRefreshToken(ctx, []byte("fresh"), at(time.Hour), fullRefresh("next", "s1"))
	wantErr(t, "RotateRefreshToken onto an existing hash", err, store.ErrAlreadyExists)
	stored, err = s.GetRefreshToken(ctx, []byte("fresh"))
	must(t, "GetRefreshToken fresh", err)
	if !stored.RotatedAt.IsZero() {
		t.Errorf("failed rotation left RotatedAt = %v, want zero", stored.RotatedAt)
	}
}

const racers = 8

// race runs fn from racers goroutines at once and returns their errors.
func race(fn func(i int) error) []error {
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		errs  = make([]error, racers)
	)
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = fn(i)
		}()
	}
	close(start)
	wg.Wait()
	return errs
}

// oneWinner checks that exactly one error is nil and all others are loser.
func oneWinner(t *testing.T, what string, errs []error, loser error) int {
	t.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner < 0:
			winner = i
		case err == nil:
			t.Errorf("%s: goroutines %d and %d both succeeded", what, winner, i)
		case !errors.Is(err, loser):
			t.Errorf("%s: goroutine %d: got %v, want %v", what, i, err, loser)
		}
	}
	if winner < 0 {
		t.Errorf("%s: no goroutine succeeded", what)
	}
	return winner
}

func testRotateRefreshTokenConcurrent(t *testing.T, s store.Store) {
	must(t, "CreateSession", s.CreateSession(ctx, fullSession("s1", "u1")))
	must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, fullRefresh("old", "s1")))
	records := make([]*model.RefreshToken, racers)
	errs := race(func(i int) error {
		var err error
		records[i], err = s.RotateRefreshToken(ctx, []byte("old"), at(time.Duration(i+1)*time.Second),
			fullRefresh(fmt.Sprintf("next-%d", i), "s1"))
		return err
	})
	w := oneWinner(t, "concurrent RotateRefreshToken", errs, store.ErrAlreadyUsed)
	if w < 0 {
		return
	}
	for i := range racers {
		_, err := s.GetRefreshToken(ctx, []byte(fmt.Sprintf("next-%d", i)))
		if stored := err == nil; stored != (i == w) {
			t.Errorf("successor next-%d: stored=%v (err %v), want stored=%v", i, stored, err, i == w)
		}
		if records[i] == nil || !bytes.Equal(records[i].Hash, []byte("old")) {
			t.Errorf("goroutine %d: got record %+v, want the old token", i, records[i])
		} else if !records[i].RotatedAt.Equal(nt(at(time.Duration(w+1) * time.Second))) {
			t.Errorf("goroutine %d: RotatedAt %v, want the winner's %v", i, records[i].RotatedAt, nt(at(time.Duration(w+1)*time.Second)))
		}
	}
}

func testAuthCode(t *testing.T, s store.Store) {
	code := fullCode("code-1")
	must(t, "CreateAuthCode", s.CreateAuthCode(ctx, code))
	wantErr(t, "CreateAuthCode same hash", s.CreateAuthCode(ctx, fullCode("code-1")), store.ErrAlreadyExists)
	zero := &model.AuthCode{Hash: []byte("code-2")}
	must(t, "CreateAuthCode", s.CreateAuthCode(ctx, zero))

	// Reading does not use the code.
	got, err := s.GetAuthCode(ctx, code.Hash)
	must(t, "GetAuthCode", err)
	same(t, "GetAuthCode", got, fullCode("code-1"), normCode)
	_, err = s.GetAuthCode(ctx, []byte("no-such-code"))
	wantErr(t, "GetAuthCode of an unknown code", err, store.ErrNotFound)

	got, err = s.RedeemAuthCode(ctx, code.Hash, at(10*time.Second), nil)
	must(t, "RedeemAuthCode", err)
	want := fullCode("code-1")
	want.UsedAt = at(10 * time.Second)
	same(t, "RedeemAuthCode", got, want, normCode)

	got, err = s.GetAuthCode(ctx, code.Hash)
	must(t, "GetAuthCode of a used code", err)
	same(t, "GetAuthCode of a used code", got, want, normCode)

	got, err = s.RedeemAuthCode(ctx, code.Hash, at(20*time.Second), nil)
	wantErr(t, "second RedeemAuthCode", err, store.ErrAlreadyUsed)
	same(t, "second RedeemAuthCode record (first UsedAt kept)", got, want, normCode)

	got, err = s.RedeemAuthCode(ctx, zero.Hash, at(time.Second), nil)
	must(t, "RedeemAuthCode zero", err)
	wantZero := &model.AuthCode{Hash: []byte("code-2"), UsedAt: at(time.Second)}
	same(t, "RedeemAuthCode zero", got, wantZero, normCode)

	_, err = s.RedeemAuthCode(ctx, []byte("missing"), at(time.Second), nil)
	wantErr(t, "RedeemAuthCode missing", err, store.ErrNotFound)
}

func testPushedRequest(t *testing.T, s store.Store) {
	p := &model.PushedRequest{
		RequestURI: "urn:ietf:params:oauth:request_uri:abc", ClientID: "c1",
		Params:    map[string]string{"response_type": "code", "scope": "openid profile", "state": "ü&=?"},
		ExpiresAt: at(time.Minute),
	}
	must(t, "CreatePushedRequest", s.CreatePushedRequest(ctx, p))
	wantErr(t, "CreatePushedRequest same uri", s.CreatePushedRequest(ctx, p), store.ErrAlreadyExists)
	must(t, "CreatePushedRequest", s.CreatePushedRequest(ctx, &model.PushedRequest{RequestURI: "urn:x:expired", ClientID: "c1", ExpiresAt: at(time.Minute)}))
	must(t, "CreatePushedRequest", s.CreatePushedRequest(ctx, &model.PushedRequest{RequestURI: "urn:x:empty", ExpiresAt: at(time.Minute)}))

	got, err := s.ConsumePushedRequest(ctx, p.RequestURI, at(time.Second))
	must(t, "ConsumePushedRequest", err)
	same(t, "ConsumePushedRequest", got, p, normPAR)
	_, err = s.ConsumePushedRequest(ctx, p.RequestURI, at(2*time.Second))
	wantErr(t, "second ConsumePushedRequest", err, store.ErrAlreadyUsed)

	got, err = s.ConsumePushedRequest(ctx, "urn:x:empty", at(time.Second))
	must(t, "ConsumePushedRequest empty", err)
	same(t, "ConsumePushedRequest empty", got, &model.PushedRequest{RequestURI: "urn:x:empty", ExpiresAt: at(time.Minute)}, normPAR)

	tests := []struct {
		name string
		uri  string
		at   time.Time
	}{
		{"at expiry", "urn:x:expired", at(time.Minute)},
		{"after expiry", "urn:x:expired", at(time.Hour)},
		{"missing", "urn:x:missing", at(time.Second)},
	}
	for _, tc := range tests {
		_, err := s.ConsumePushedRequest(ctx, tc.uri, tc.at)
		wantErr(t, "ConsumePushedRequest "+tc.name, err, store.ErrNotFound)
	}
}

func testSigningKeys(t *testing.T, s store.Store) {
	k2 := fullKey("k2", at(time.Hour))
	k1 := fullKey("k1", at(0))
	k3 := &model.SigningKey{KID: "k3", Alg: "ES256", CreatedAt: at(2 * time.Hour)} // zero RetireAt
	for _, k := range []*model.SigningKey{k2, k1, k3} {
		must(t, "CreateSigningKey", s.CreateSigningKey(ctx, k))
	}
	wantErr(t, "CreateSigningKey same kid", s.CreateSigningKey(ctx, fullKey("k1", at(0))), store.ErrAlreadyExists)
	list, err := s.ListSigningKeys(ctx)
	must(t, "ListSigningKeys", err)
	sameList(t, "ListSigningKeys (oldest first)", list, []*model.SigningKey{k1, k2, k3}, normKey)

	want := fullKey("k1", at(0))
	want.RetireAt = at(3 * time.Hour)
	got, err := s.UpdateSigningKey(ctx, "k1", func(k *model.SigningKey) error { k.RetireAt = at(3 * time.Hour); return nil })
	must(t, "UpdateSigningKey", err)
	same(t, "UpdateSigningKey result", got, want, normKey)
	must(t, "DeleteSigningKey", s.DeleteSigningKey(ctx, "k2"))
	wantErr(t, "DeleteSigningKey again", s.DeleteSigningKey(ctx, "k2"), store.ErrNotFound)
	list, err = s.ListSigningKeys(ctx)
	must(t, "ListSigningKeys", err)
	sameList(t, "ListSigningKeys after update and delete", list, []*model.SigningKey{want, k3}, normKey)
}

func fullEvent(typ model.EventType, user, session, client string, tm time.Time) *model.Event {
	return &model.Event{
		ID: "ev-" + string(typ) + "-" + user, Type: typ, Time: tm, Actor: user, UserID: user,
		SessionID: session, ClientID: client, DeviceID: "dev-1", TokenID: "jti-1",
		IP: "2001:db8::1", UserAgent: "curl/8", Outcome: model.OutcomeSuccess, Reason: "ok",
		Binding: model.BindingUnbound, BindingReason: model.UnboundNoProof, CorrelationID: "corr-1",
		Data: map[string]string{"scope": "openid", "unicode": "ü→✓", "empty": ""},
	}
}

func testAppendEvent(t *testing.T, s store.Store) {
	events := []*model.Event{
		fullEvent(model.EventTokenIssued, "u1", "s1", "c1", at(0)),
		{Type: model.EventSessionRevoked}, // zero time, no data
		fullEvent(model.EventSignInFailed, "u2", "", "c1", at(time.Second)),
	}
	var last int64
	for i, e := range events {
		seq, err := s.AppendEvent(ctx, e)
		must(t, "AppendEvent", err)
		if seq <= last {
			t.Errorf("AppendEvent %d: got seq %d, want > %d", i, seq, last)
		}
		last = seq
	}
	got, err := s.ListEvents(ctx, store.EventFilter{})
	must(t, "ListEvents", err)
	if len(got) != len(events) {
		t.Fatalf("ListEvents: got %d events, want %d", len(got), len(events))
	}
	for i, ge := range got {
		want := events[len(events)-1-i] // newest first
		same(t, fmt.Sprintf("event %d", i), &ge.Event, want, normEvent)
	}
	if !got[1].Time.IsZero() {
		t.Errorf("zero event time: got %v, want zero", got[1].Time)
	}
}

func testListEventsFilter(t *testing.T, s store.Store) {
	type ev struct {
		typ                   model.EventType
		user, session, client string
		t                     time.Duration
	}
	input := []ev{
		{model.EventSignInSucceeded, "u1", "s1", "c1", 0},
		{model.EventTokenIssued, "u1", "s1", "c1", time.Second},
		{model.EventTokenIssued, "u2", "s2", "c2", 2 * time.Second},
		{model.EventSignInFailed, "u2", "", "c1", 3 * time.Second},
		{model.EventSessionRevoked, "u1", "s1", "", 4 * time.Second},
		{model.EventTokenIssued, "", "", "c2", 5 * time.Second},
	}
	seqs := make([]int64, len(input))
	for i, e := range input {
		var err error
		fe := fullEvent(e.typ, e.user, e.session, e.client, at(e.t))
		if i == 2 {
			fe.CorrelationID = "corr-2"
		}
		seqs[i], err = s.AppendEvent(ctx, fe)
		must(t, "AppendEvent", err)
	}
	tests := []struct {
		name string
		f    store.EventFilter
		want []int // indexes into input, newest first
	}{
		{"all", store.EventFilter{}, []int{5, 4, 3, 2, 1, 0}},
		{"type", store.EventFilter{Types: []model.EventType{model.EventTokenIssued}}, []int{5, 2, 1}},
		{"types", store.EventFilter{Types: []model.EventType{model.EventSignInSucceeded, model.EventSignInFailed}}, []int{3, 0}},
		{"unknown type", store.EventFilter{Types: []model.EventType{"no.such"}}, nil},
		{"user", store.EventFilter{UserID: "u1"}, []int{4, 1, 0}},
		{"session", store.EventFilter{SessionID: "s1"}, []int{4, 1, 0}},
		{"client", store.EventFilter{ClientID: "c1"}, []int{3, 1, 0}},
		{"correlation id", store.EventFilter{CorrelationID: "corr-2"}, []int{2}},
		{"unknown correlation id", store.EventFilter{CorrelationID: "corr-x"}, nil},
		{"since inclusive", store.EventFilter{Since: at(3 * time.Second)}, []int{5, 4, 3}},
		{"until exclusive", store.EventFilter{Until: at(2 * time.Second)}, []int{1, 0}},
		{"range", store.EventFilter{Since: at(time.Second), Until: at(4 * time.Second)}, []int{3, 2, 1}},
		{"user and type", store.EventFilter{UserID: "u1", Types: []model.EventType{model.EventTokenIssued, model.EventSessionRevoked}}, []int{4, 1}},
		{"client and range", store.EventFilter{ClientID: "c2", Since: at(3 * time.Second)}, []int{5}},
		{"before seq", store.EventFilter{BeforeSeq: seqs[3]}, []int{2, 1, 0}},
		{"before seq and user", store.EventFilter{BeforeSeq: seqs[4], UserID: "u1"}, []int{1, 0}},
		{"limit", store.EventFilter{Limit: 2}, []int{5, 4}},
		{"nothing", store.EventFilter{UserID: "nobody"}, nil},
	}
	for _, tc := range tests {
		got, err := s.ListEvents(ctx, tc.f)
		must(t, "ListEvents "+tc.name, err)
		var gotSeqs, wantSeqs []int64
		for _, e := range got {
			gotSeqs = append(gotSeqs, e.Seq)
		}
		for _, i := range tc.want {
			wantSeqs = append(wantSeqs, seqs[i])
		}
		if !reflect.DeepEqual(gotSeqs, wantSeqs) {
			t.Errorf("ListEvents %s: got seqs %v, want %v", tc.name, gotSeqs, wantSeqs)
		}
	}
}

func testListEventsPaging(t *testing.T, s store.Store) {
	const n = 1005
	for i := range n {
		e := &model.Event{Type: model.EventTokenIssued, Time: at(time.Duration(i) * time.Millisecond), UserID: "u1"}
		_, err := s.AppendEvent(ctx, e)
		must(t, "AppendEvent", err)
	}
	count := func(f store.EventFilter) int {
		got, err := s.ListEvents(ctx, f)
		must(t, "ListEvents", err)
		return len(got)
	}
	tests := []struct {
		name string
		f    store.EventFilter
		want int
	}{
		{"default limit", store.EventFilter{}, 100},
		{"negative limit", store.EventFilter{Limit: -1}, 100},
		{"max limit", store.EventFilter{Limit: 5000}, 1000},
		{"exact limit", store.EventFilter{Limit: 7}, 7},
	}
	for _, tc := range tests {
		if got := count(tc.f); got != tc.want {
			t.Errorf("ListEvents %s: got %d events, want %d", tc.name, got, tc.want)
		}
	}
	// Page through everything newest first: no gaps, no repeats.
	var (
		seen   int
		before int64
		prev   int64
	)
	for {
		page, err := s.ListEvents(ctx, store.EventFilter{UserID: "u1", Limit: 300, BeforeSeq: before})
		must(t, "ListEvents page", err)
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			if prev != 0 && e.Seq >= prev {
				t.Fatalf("paging: seq %d after %d, want strictly decreasing", e.Seq, prev)
			}
			prev = e.Seq
		}
		seen += len(page)
		before = page[len(page)-1].Seq
	}
	if seen != n {
		t.Errorf("paging: saw %d events, want %d", seen, n)
	}
}

// testClientGrantRevocation: revoking one client's grant in a session
// deletes that client's refresh tokens of that session and nothing else,
// and records the revoked access token until its expiry (HasJTI).
func testClientGrantRevocation(t *testing.T, s store.Store, clk *clock.Fake) {
	must(t, "CreateSession", s.CreateSession(ctx, fullSession("s1", "user-1")))
	must(t, "CreateSession", s.CreateSession(ctx, fullSession("s2", "user-1")))
	mine, other, otherSession := fullRefresh("rt-mine", "s1"), fullRefresh("rt-other", "s1"), fullRefresh("rt-s2", "s2")
	other.ClientID = "client-2"
	for _, rt := range []*model.RefreshToken{mine, other, otherSession} {
		must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, rt))
	}
	exp := clk.Now().Add(10 * time.Minute)
	if has, err := s.HasJTI(ctx, "at-revoked:j1"); err != nil || has {
		t.Fatalf("HasJTI before: %v %v", has, err)
	}
	fresh, err := s.RevokeClientGrant(ctx, "s1", "client-1", "at-revoked:j1", exp)
	if err != nil || !fresh {
		t.Fatalf("RevokeClientGrant: %v %v", fresh, err)
	}
	_, err = s.GetRefreshToken(ctx, mine.Hash)
	wantErr(t, "the client's refresh token", err, store.ErrNotFound)
	for _, rt := range []*model.RefreshToken{other, otherSession} {
		if _, err := s.GetRefreshToken(ctx, rt.Hash); err != nil {
			t.Errorf("refresh token %s of another grant: %v", rt.Hash, err)
		}
	}
	if has, err := s.HasJTI(ctx, "at-revoked:j1"); err != nil || !has {
		t.Errorf("HasJTI after: %v %v", has, err)
	}
	if fresh, err := s.RevokeClientGrant(ctx, "s1", "client-1", "at-revoked:j1", exp); err != nil || fresh {
		t.Errorf("RevokeClientGrant again: %v %v", fresh, err)
	}
	_, err = s.RevokeClientGrant(ctx, "nope", "client-1", "at-revoked:j2", exp)
	wantErr(t, "RevokeClientGrant of an unknown session", err, store.ErrNotFound)
	if has, _ := s.HasJTI(ctx, "at-revoked:j2"); has {
		t.Error("a refused revocation recorded its key")
	}
	clk.Set(exp)
	if has, err := s.HasJTI(ctx, "at-revoked:j1"); err != nil || has {
		t.Errorf("HasJTI at expiry: %v %v", has, err)
	}
}

func testRecordJTI(t *testing.T, s store.Store, clk *clock.Fake) {
	future := clk.Now().Add(time.Hour)
	past := clk.Now().Add(-time.Hour)
	tests := []struct {
		name string
		key  string
		exp  time.Time
		want error
	}{
		{"first", "jti-1", future, nil},
		{"replay", "jti-1", future, store.ErrReplay},
		{"replay with later exp", "jti-1", future.Add(time.Hour), store.ErrReplay},
		{"other key", "jti-2", future, nil},
		{"keys are case-sensitive", "JTI-1", future, nil},
		{"already expired entry", "jti-3", past, nil},
		{"after expiry allowed again", "jti-3", future, nil},
		{"replay of renewed entry", "jti-3", future, store.ErrReplay},
	}
	for _, tc := range tests {
		err := s.RecordJTI(ctx, tc.key, tc.exp)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("RecordJTI %s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	// The store's clock decides expiry: jti-1 is a replay until the clock
	// reaches its exp (the first one recorded; a replay did not extend it).
	clk.Advance(time.Hour - time.Microsecond)
	wantErr(t, "RecordJTI a microsecond before exp", s.RecordJTI(ctx, "jti-1", future.Add(time.Hour)), store.ErrReplay)
	clk.Advance(time.Microsecond)
	must(t, "RecordJTI at exp", s.RecordJTI(ctx, "jti-1", future.Add(time.Hour)))
	wantErr(t, "RecordJTI renewed at exp", s.RecordJTI(ctx, "jti-1", future.Add(time.Hour)), store.ErrReplay)
}

func testRecordJTIConcurrent(t *testing.T, s store.Store, clk *clock.Fake) {
	exp := clk.Now().Add(time.Minute)
	errs := race(func(int) error { return s.RecordJTI(ctx, "shared", exp) })
	oneWinner(t, "concurrent RecordJTI", errs, store.ErrReplay)
}

func testPurgeExpired(t *testing.T, s store.Store, clk *clock.Fake) {
	now := at(time.Hour)
	live, dead := at(2*time.Hour), at(30*time.Minute)

	sLive, sDead := fullSession("live", "u1"), fullSession("dead", "u1")
	sLive.ExpiresAt, sDead.ExpiresAt = live, dead
	must(t, "CreateSession", s.CreateSession(ctx, sLive))
	must(t, "CreateSession", s.CreateSession(ctx, sDead))
	rLive, rDead, rOfDead := fullRefresh("r-live", "live"), fullRefresh("r-dead", "live"), fullRefresh("r-of-dead", "dead")
	rLive.ExpiresAt, rDead.ExpiresAt, rOfDead.ExpiresAt = live, now, live
	for _, r := range []*model.RefreshToken{rLive, rDead, rOfDead} {
		must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, r))
	}
	cLive, cDead := fullCode("c-live"), fullCode("c-dead")
	cLive.ExpiresAt, cDead.ExpiresAt = live, dead
	must(t, "CreateAuthCode", s.CreateAuthCode(ctx, cLive))
	must(t, "CreateAuthCode", s.CreateAuthCode(ctx, cDead))
	dcLive, dcDead := fullDeviceCode("dc-live", "LIVELIVE"), fullDeviceCode("dc-dead", "DEADDEAD")
	dcLive.ExpiresAt, dcDead.ExpiresAt = live, dead
	must(t, "CreateDeviceCode", s.CreateDeviceCode(ctx, dcLive))
	must(t, "CreateDeviceCode", s.CreateDeviceCode(ctx, dcDead))
	must(t, "CreatePushedRequest", s.CreatePushedRequest(ctx, &model.PushedRequest{RequestURI: "p-live", ExpiresAt: live}))
	must(t, "CreatePushedRequest", s.CreatePushedRequest(ctx, &model.PushedRequest{RequestURI: "p-dead", ExpiresAt: dead}))
	// The store's clock (at(0)) decides replays, the argument of
	// PurgeExpired (at(1h)) the purge: j-dead is still a replay for the
	// store until it is purged.
	must(t, "RecordJTI", s.RecordJTI(ctx, "j-dead", dead))
	must(t, "RecordJTI", s.RecordJTI(ctx, "j-live", live.Add(time.Hour)))
	wantErr(t, "RecordJTI j-dead before the purge", s.RecordJTI(ctx, "j-dead", live), store.ErrReplay)
	_, err := s.AppendEvent(ctx, &model.Event{Type: model.EventTokenIssued, Time: dead})
	must(t, "AppendEvent", err)

	must(t, "PurgeExpired", s.PurgeExpired(ctx, now))

	exists := map[string]func() error{
		"session live":      func() error { _, err := s.GetSession(ctx, "live"); return err },
		"session dead":      func() error { _, err := s.GetSession(ctx, "dead"); return err },
		"refresh live":      func() error { _, err := s.GetRefreshToken(ctx, []byte("r-live")); return err },
		"refresh dead":      func() error { _, err := s.GetRefreshToken(ctx, []byte("r-dead")); return err },
		"refresh of dead":   func() error { _, err := s.GetRefreshToken(ctx, []byte("r-of-dead")); return err },
		"code live":         func() error { _, err := s.RedeemAuthCode(ctx, []byte("c-live"), now, nil); return err },
		"code dead":         func() error { _, err := s.RedeemAuthCode(ctx, []byte("c-dead"), now, nil); return err },
		"device code live":  func() error { _, err := s.GetDeviceCode(ctx, []byte("dc-live")); return err },
		"device code dead":  func() error { _, err := s.GetDeviceCode(ctx, []byte("dc-dead")); return err },
		"par live":          func() error { _, err := s.ConsumePushedRequest(ctx, "p-live", now); return err },
		"par dead at early": func() error { _, err := s.ConsumePushedRequest(ctx, "p-dead", at(0)); return err },
	}
	tests := []struct {
		name string
		want error
	}{
		{"session live", nil},
		{"session dead", store.ErrNotFound},
		{"refresh live", nil},
		{"refresh dead", store.ErrNotFound},
		{"refresh of dead", store.ErrNotFound},
		{"code live", nil},
		{"code dead", store.ErrNotFound},
		{"device code live", nil},
		{"device code dead", store.ErrNotFound},
		{"par live", nil},
		{"par dead at early", store.ErrNotFound}, // purged, so not found even before its expiry
	}
	for _, tc := range tests {
		err := exists[tc.name]()
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("after PurgeExpired, %s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	// A purged JTI can be recorded again; a live one is still a replay.
	if err := s.RecordJTI(ctx, "j-dead", clk.Now().Add(time.Hour)); err != nil {
		t.Errorf("RecordJTI after purge: got %v, want nil", err)
	}
	wantErr(t, "RecordJTI live after purge", s.RecordJTI(ctx, "j-live", clk.Now().Add(time.Hour)), store.ErrReplay)
	evs, err := s.ListEvents(ctx, store.EventFilter{})
	must(t, "ListEvents", err)
	if len(evs) != 1 {
		t.Errorf("events after PurgeExpired: got %d, want 1 (events are not purged)", len(evs))
	}
}

var errAbort = errors.New("storetest: abort")

func testUpdateFnError(t *testing.T, s store.Store) {
	must(t, "CreateUser", s.CreateUser(ctx, fullUser("u1", "alice")))
	must(t, "CreateGroup", s.CreateGroup(ctx, &model.Group{ID: "g1", Name: "admins", Members: []string{"u1"}}))
	must(t, "CreateClient", s.CreateClient(ctx, fullClient("c1")))
	must(t, "CreateSigningKey", s.CreateSigningKey(ctx, fullKey("k1", at(0))))
	must(t, "CreateDevice", s.CreateDevice(ctx, fullDevice("d1", "u1", "jkt-1")))
	must(t, "CreateDeviceCode", s.CreateDeviceCode(ctx, fullDeviceCode("dc1", "ABCDEFGH")))
	wrapped := fmt.Errorf("wrapped: %w", errAbort)
	tests := []struct {
		name  string
		run   func() (any, error)
		check func(t *testing.T)
	}{
		{"user", func() (any, error) {
			return s.UpdateUser(ctx, "u1", func(u *model.User) error { u.Username, u.Roles = "mallory", nil; return wrapped })
		}, func(t *testing.T) {
			got, err := s.GetUser(ctx, "u1")
			must(t, "GetUser", err)
			same(t, "user after failed update", got, fullUser("u1", "alice"), normUser)
		}},
		{"group", func() (any, error) {
			return s.UpdateGroup(ctx, "g1", func(g *model.Group) error { g.Name, g.Members = "x", nil; return wrapped })
		}, func(t *testing.T) {
			got, err := s.GetGroup(ctx, "g1")
			must(t, "GetGroup", err)
			same(t, "group after failed update", got, &model.Group{ID: "g1", Name: "admins", Members: []string{"u1"}}, normGroup)
		}},
		{"client", func() (any, error) {
			return s.UpdateClient(ctx, "c1", func(c *model.Client) error { c.SecretHash, c.Scopes = nil, nil; return wrapped })
		}, func(t *testing.T) {
			got, err := s.GetClient(ctx, "c1")
			must(t, "GetClient", err)
			same(t, "client after failed update", got, fullClient("c1"), normClient)
		}},
		{"signing key", func() (any, error) {
			return s.UpdateSigningKey(ctx, "k1", func(k *model.SigningKey) error { k.RetireAt = at(0); return wrapped })
		}, func(t *testing.T) {
			got, err := s.ListSigningKeys(ctx)
			must(t, "ListSigningKeys", err)
			sameList(t, "keys after failed update", got, []*model.SigningKey{fullKey("k1", at(0))}, normKey)
		}},
		{"device", func() (any, error) {
			return s.UpdateDevice(ctx, "d1", func(d *model.Device) error {
				d.Status, d.JKT, d.Posture = model.DeviceLost, "jkt-other", nil
				return wrapped
			})
		}, func(t *testing.T) {
			got, err := s.GetDevice(ctx, "d1")
			must(t, "GetDevice", err)
			same(t, "device after failed update", got, fullDevice("d1", "u1", "jkt-1"), normDevice)
			_, err = s.GetDeviceByJKT(ctx, "jkt-other")
			wantErr(t, "GetDeviceByJKT of the aborted JKT", err, store.ErrNotFound)
		}},
		{"device code", func() (any, error) {
			return s.UpdateDeviceCode(ctx, []byte("dc1"), func(c *model.DeviceCode) error {
				c.Status, c.UserID, c.UsedAt = model.DeviceCodeApproved, "mallory", at(time.Hour)
				return wrapped
			})
		}, func(t *testing.T) {
			got, err := s.GetDeviceCode(ctx, []byte("dc1"))
			must(t, "GetDeviceCode", err)
			same(t, "device code after failed update", got, fullDeviceCode("dc1", "ABCDEFGH"), normDeviceCode)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.run()
			if err != wrapped { //nolint:errorlint // the very error fn returned
				t.Errorf("Update%s: got error %v, want fn's error returned unchanged", tc.name, err)
			}
			if !reflect.ValueOf(got).IsNil() {
				t.Errorf("Update%s: got result %+v, want nil", tc.name, got)
			}
			tc.check(t)
		})
	}
}

func testNotFound(t *testing.T, s store.Store) {
	called := false
	tests := []struct {
		name string
		run  func() error
	}{
		{"GetUser", func() error { _, err := s.GetUser(ctx, "nope"); return err }},
		{"GetUserByUsername", func() error { _, err := s.GetUserByUsername(ctx, "nope"); return err }},
		{"UpdateUser", func() error {
			_, err := s.UpdateUser(ctx, "nope", func(*model.User) error { called = true; return nil })
			return err
		}},
		{"DeleteUser", func() error { return s.DeleteUser(ctx, "nope") }},
		{"GetGroup", func() error { _, err := s.GetGroup(ctx, "nope"); return err }},
		{"GetGroupByName", func() error { _, err := s.GetGroupByName(ctx, "nope"); return err }},
		{"UpdateGroup", func() error {
			_, err := s.UpdateGroup(ctx, "nope", func(*model.Group) error { called = true; return nil })
			return err
		}},
		{"DeleteGroup", func() error { return s.DeleteGroup(ctx, "nope") }},
		{"GetClient", func() error { _, err := s.GetClient(ctx, "nope"); return err }},
		{"UpdateClient", func() error {
			_, err := s.UpdateClient(ctx, "nope", func(*model.Client) error { called = true; return nil })
			return err
		}},
		{"DeleteClient", func() error { return s.DeleteClient(ctx, "nope") }},
		{"GetSession", func() error { _, err := s.GetSession(ctx, "nope"); return err }},
		{"TouchSession", func() error { return s.TouchSession(ctx, "nope", at(0)) }},
		{"RevokeSession", func() error { return revoke(s, "nope", at(0), "x") }},
		{"GetRefreshToken", func() error { _, err := s.GetRefreshToken(ctx, []byte("nope")); return err }},
		{"RotateRefreshToken", func() error {
			_, err := s.RotateRefreshToken(ctx, []byte("nope"), at(0), fullRefresh("n", "s"))
			return err
		}},
		{"DeleteRefreshToken", func() error { return s.DeleteRefreshToken(ctx, []byte("nope")) }},
		{"RedeemAuthCode", func() error { _, err := s.RedeemAuthCode(ctx, []byte("nope"), at(0), nil); return err }},
		{"ConsumePushedRequest", func() error { _, err := s.ConsumePushedRequest(ctx, "nope", at(0)); return err }},
		{"UpdateSigningKey", func() error {
			_, err := s.UpdateSigningKey(ctx, "nope", func(*model.SigningKey) error { called = true; return nil })
			return err
		}},
		{"DeleteSigningKey", func() error { return s.DeleteSigningKey(ctx, "nope") }},
		{"GetDevice", func() error { _, err := s.GetDevice(ctx, "nope"); return err }},
		{"GetDeviceByJKT", func() error { _, err := s.GetDeviceByJKT(ctx, "nope"); return err }},
		{"UpdateDevice", func() error {
			_, err := s.UpdateDevice(ctx, "nope", func(*model.Device) error { called = true; return nil })
			return err
		}},
		{"DeleteDevice", func() error { return s.DeleteDevice(ctx, "nope") }},
		{"GetDeviceCode", func() error { _, err := s.GetDeviceCode(ctx, []byte("nope")); return err }},
		{"GetDeviceCodeByUserCode", func() error { _, err := s.GetDeviceCodeByUserCode(ctx, "NOPE"); return err }},
		{"UpdateDeviceCode", func() error {
			_, err := s.UpdateDeviceCode(ctx, []byte("nope"), func(*model.DeviceCode) error { called = true; return nil })
			return err
		}},
		{"GetCompliancePolicy", func() error { _, err := s.GetCompliancePolicy(ctx, "nope"); return err }},
		{"DeleteCompliancePolicy", func() error { return s.DeleteCompliancePolicy(ctx, "nope") }},
	}
	for _, tc := range tests {
		wantErr(t, tc.name, tc.run(), store.ErrNotFound)
	}
	if called {
		t.Errorf("an Update func was called for a missing record")
	}
	lists := []struct {
		name string
		run  func() (int, error)
	}{
		{"ListUsers", func() (int, error) { l, err := s.ListUsers(ctx); return len(l), err }},
		{"ListGroups", func() (int, error) { l, err := s.ListGroups(ctx); return len(l), err }},
		{"ListClients", func() (int, error) { l, err := s.ListClients(ctx); return len(l), err }},
		{"ListSigningKeys", func() (int, error) { l, err := s.ListSigningKeys(ctx); return len(l), err }},
		{"ListSessions", func() (int, error) { l, err := s.ListSessions(ctx, store.SessionFilter{}); return len(l), err }},
		{"ListEvents", func() (int, error) { l, err := s.ListEvents(ctx, store.EventFilter{}); return len(l), err }},
		{"GroupsOfUser", func() (int, error) { l, err := s.GroupsOfUser(ctx, "nope"); return len(l), err }},
		{"ListDevices", func() (int, error) { l, err := s.ListDevices(ctx, store.DeviceFilter{}); return len(l), err }},
		{"ListCompliancePolicies", func() (int, error) { l, err := s.ListCompliancePolicies(ctx); return len(l), err }},
		{"RevokeDeviceSessions", func() (int, error) {
			l, err := s.RevokeDeviceSessions(ctx, "nope", at(0), "x")
			return len(l), err
		}},
	}
	for _, tc := range lists {
		n, err := tc.run()
		if err != nil || n != 0 {
			t.Errorf("%s on an empty store: got %d items, err %v; want 0, nil", tc.name, n, err)
		}
	}
}

// testRevokeUnremediatedSkewedClocks: a response that runs now (Now)
// revokes every session it sees when no remediation came after the
// activity, even one stamped after Until by an instance whose clock is
// ahead (it was committed before the response, under a decision on the
// level before it), and counts a remediation stamped after Until the
// same way: a session created after that remediation is spared. Without
// Now, Until bounds both, as before.
func testRevokeUnremediatedSkewedClocks(t *testing.T, s store.Store) {
	activity, until := at(10*time.Minute), at(time.Hour)
	mk := func(user string, created map[string]time.Time) {
		for id, c := range created {
			se := fullSession(id, user)
			se.CreatedAt = c
			must(t, "CreateSession", s.CreateSession(ctx, se))
			must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, fullRefresh("rt-"+id, id)))
		}
	}
	revoke := func(user string, now bool) ([]string, time.Time) {
		t.Helper()
		b := &store.RemediationBound{Activity: activity, Until: until, Now: now}
		ids, err := s.RevokeUserSessionsUnremediated(ctx, user, until, "user_risk", b)
		must(t, "RevokeUserSessionsUnremediated", err)
		return ids, b.Applied
	}
	// No remediation; a session stamped 2 s ahead of the response.
	mk("sk1", map[string]time.Time{"sk1-old": at(0), "sk1-ahead": until.Add(2 * time.Second)})
	if ids, applied := revoke("sk1", true); !reflect.DeepEqual(ids, []string{"sk1-ahead", "sk1-old"}) || !applied.Equal(until.Truncate(time.Microsecond)) {
		t.Errorf("now, no remediation: revoked %v, bound %v; want both and %v", ids, applied, until)
	}
	mk("sk2", map[string]time.Time{"sk2-old": at(0), "sk2-ahead": until.Add(2 * time.Second)})
	if ids, _ := revoke("sk2", false); !reflect.DeepEqual(ids, []string{"sk2-old"}) {
		t.Errorf("not now: revoked %v, want only sk2-old (Until bounds)", ids)
	}
	// A remediation stamped 1 s after Until (its instance's clock is
	// ahead) and a session the user signed in with after it.
	rem := until.Add(time.Second)
	for _, u := range []string{"sk3", "sk4"} {
		e := fullEvent(model.EventPasswordChanged, u, "", "", rem)
		e.ID = "rem-" + u
		_, err := s.AppendEvent(ctx, e)
		must(t, "AppendEvent", err)
		mk(u, map[string]time.Time{u + "-old": at(0), u + "-mine": rem.Add(time.Second)})
	}
	if ids, applied := revoke("sk3", true); !reflect.DeepEqual(ids, []string{"sk3-old"}) || !applied.Equal(rem.Truncate(time.Microsecond)) {
		t.Errorf("now, remediation ahead: revoked %v, bound %v; want sk3-old and %v", ids, applied, rem)
	}
	if ids, applied := revoke("sk4", false); !reflect.DeepEqual(ids, []string{"sk4-old"}) || !applied.Equal(until.Truncate(time.Microsecond)) {
		t.Errorf("not now, remediation after Until: revoked %v, bound %v; want sk4-old and %v", ids, applied, until)
	}
}

// testRevokeUserSessionsUnremediated: the revocation is bounded by the
// user's first remediation after the activity (a password change, an
// administrator's or a confirmed compromise's revocation of every
// session), else by Until; other events, other users' remediations and
// remediations before the activity or after Until do not count; the
// subject session is revoked whatever its creation time; Applied says
// where the bound was, also when nothing was revoked.
func testRevokeUserSessionsUnremediated(t *testing.T, s store.Store) {
	activity, until := at(10*time.Minute), at(time.Hour)
	app := func(id string, typ model.EventType, user, reason string, tm time.Time) {
		e := fullEvent(typ, user, "", "", tm)
		e.ID, e.Reason = id, reason
		_, err := s.AppendEvent(ctx, e)
		must(t, "AppendEvent "+id, err)
	}
	// Not remediations, or not this user's, or not in (activity, until].
	app("before", model.EventPasswordChanged, "u1", "", activity)
	app("auto", model.EventUserSessionsRevoked, "u1", "user_risk", at(12*time.Minute))
	app("mfa", model.EventRiskRemediated, "u1", "mfa", at(13*time.Minute))
	app("other", model.EventPasswordChanged, "u2", "", at(14*time.Minute))
	// The first remediation and a later one.
	first := at(20 * time.Minute)
	app("first", model.EventUserSessionsRevoked, "u1", "admin_revoked", first)
	app("later", model.EventPasswordChanged, "u1", "", at(30*time.Minute))
	for id, created := range map[string]time.Time{"old": at(0), "between": at(15 * time.Minute), "edge": first,
		"after": first.Add(time.Millisecond), "subject": at(40 * time.Minute)} {
		se := fullSession(id, "u1")
		se.CreatedAt = created
		must(t, "CreateSession", s.CreateSession(ctx, se))
		must(t, "CreateRefreshToken", s.CreateRefreshToken(ctx, fullRefresh("rt-"+id, id)))
	}
	se := fullSession("u2-s", "u2")
	must(t, "CreateSession", s.CreateSession(ctx, se))
	b := &store.RemediationBound{Activity: activity, Until: until, Subject: "subject"}
	ids, err := s.RevokeUserSessionsUnremediated(ctx, "u1", at(2*time.Hour), "user_risk", b)
	must(t, "RevokeUserSessionsUnremediated", err)
	if want := []string{"between", "edge", "old", "subject"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("revoked %v, want %v", ids, want)
	}
	if !b.Applied.Equal(first.Truncate(time.Microsecond)) { // stores keep microseconds
		t.Errorf("applied bound %v, want the first remediation %v", b.Applied, first)
	}
	for id, want := range map[string]bool{"old": true, "between": true, "edge": true, "after": false, "subject": true} {
		got, err := s.GetSession(ctx, id)
		must(t, "GetSession", err)
		if revoked := !got.RevokedAt.IsZero(); revoked != want || revoked && got.RevokeCause != "user_risk" {
			t.Errorf("session %s: revoked %v (%q), want %v", id, revoked, got.RevokeCause, want)
		}
		_, err = s.GetRefreshToken(ctx, []byte("rt-"+id))
		if gone := errors.Is(err, store.ErrNotFound); gone != want {
			t.Errorf("refresh token of %s: gone %v, want %v", id, gone, want)
		}
	}
	if got, _ := s.GetSession(ctx, "u2-s"); !got.RevokedAt.IsZero() {
		t.Errorf("another user's session revoked")
	}
	// An activity after every remediation: bounded by Until. A subject
	// of another user is not revoked.
	b = &store.RemediationBound{Activity: at(35 * time.Minute), Until: until, Subject: "u2-s"}
	ids, err = s.RevokeUserSessionsUnremediated(ctx, "u1", at(2*time.Hour), "user_risk", b)
	must(t, "RevokeUserSessionsUnremediated again", err)
	if want := []string{"after"}; !reflect.DeepEqual(ids, want) || !b.Applied.Equal(until.Truncate(time.Microsecond)) {
		t.Errorf("again: revoked %v, bound %v; want %v and %v", ids, b.Applied, want, until)
	}
	// Nothing left: the bound is reported all the same.
	b = &store.RemediationBound{Activity: activity, Until: until}
	ids, err = s.RevokeUserSessionsUnremediated(ctx, "u1", at(2*time.Hour), "user_risk", b)
	must(t, "RevokeUserSessionsUnremediated, nothing left", err)
	if len(ids) != 0 || !b.Applied.Equal(first.Truncate(time.Microsecond)) {
		t.Errorf("nothing left: revoked %v, bound %v; want none and %v", ids, b.Applied, first)
	}
	if got, _ := s.GetSession(ctx, "u2-s"); !got.RevokedAt.IsZero() {
		t.Errorf("another user's session revoked as the subject")
	}
	_, err = s.RevokeUserSessionsUnremediated(ctx, "u1", at(2*time.Hour), "user_risk", &store.RemediationBound{})
	if err == nil {
		t.Errorf("no Until: accepted")
	}
}
