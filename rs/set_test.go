package rs

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const ssfAud = "https://api.example/ssf"

// setClaims are the claims of a valid SET from idp at now.
func setClaims(idp *testIdP, now time.Time, event string, body map[string]any, subject map[string]any) map[string]any {
	if body == nil {
		body = map[string]any{}
	}
	return map[string]any{
		"iss": idp.issuer, "aud": ssfAud, "iat": now.Unix(), "jti": "set-" + base64.RawURLEncoding.EncodeToString([]byte(time.Now().String()+event)),
		"txn": "t1", "sub_id": subject, "events": map[string]any{event: body},
	}
}

func sessionSubject(sid string) map[string]any { return map[string]any{"format": "opaque", "id": sid} }

type recvFixture struct {
	idp    *testIdP
	clk    *fakeClock
	state  *RevocationState
	r      *Receiver
	events atomic.Int32
	fail   atomic.Bool
}

func newRecvFixture(t *testing.T, mods ...func(*ReceiverConfig)) *recvFixture {
	t.Helper()
	f := &recvFixture{idp: newTestIdP(t), clk: newClock(t0)}
	f.state = NewRevocationState(StateConfig{Now: f.clk.Now})
	cfg := ReceiverConfig{
		Issuer: f.idp.issuer, Audience: ssfAud, State: f.state, Now: f.clk.Now, HTTPClient: f.idp.srv.Client(),
		OnEvent: func(ctx context.Context, set *SET, actions []Action) error {
			if f.fail.Load() {
				return errors.New("downstream unavailable")
			}
			f.events.Add(1)
			return nil
		},
	}
	for _, m := range mods {
		m(&cfg)
	}
	r, err := NewReceiver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	return f
}

func (f *recvFixture) set(event string, body, subject map[string]any, mods ...func(map[string]any)) string {
	c := setClaims(f.idp, f.clk.Now(), event, body, subject)
	for _, m := range mods {
		m(c)
	}
	return f.idp.sign("secevent+jwt", c)
}

func TestReceiverAppliesSessionRevoked(t *testing.T) {
	f := newRecvFixture(t)
	ts := f.clk.Now().Add(-5 * time.Second)
	set := f.set(EventSessionRevoked, map[string]any{"event_timestamp": ts.Unix()}, sessionSubject("sess-1"))
	res, err := f.r.Process(context.Background(), set)
	if err != nil {
		t.Fatal(err)
	}
	want := []Action{{Kind: "revoke_session", ID: "sess-1", At: ts}}
	if !reflect.DeepEqual(norm(res.Actions), norm(want)) || res.Duplicate {
		t.Fatalf("result = %+v", res)
	}
	if d := f.state.Check(&TokenInfo{Issuer: "x", Subject: "y", SessionID: "sess-1", IssuedAt: ts}); d == nil {
		t.Fatal("session not revoked")
	}
	// A duplicate is accepted and changes nothing.
	res, err = f.r.Process(context.Background(), set)
	if err != nil || !res.Duplicate || f.events.Load() != 1 {
		t.Fatalf("duplicate: %+v %v, events %d", res, err, f.events.Load())
	}
}

func TestReceiverCallbackFailureAllowsRetry(t *testing.T) {
	f := newRecvFixture(t)
	set := f.set(EventSessionRevoked, nil, sessionSubject("s"))
	f.fail.Store(true)
	if _, err := f.r.Process(context.Background(), set); err == nil {
		t.Fatal("callback failure not reported")
	}
	f.fail.Store(false)
	res, err := f.r.Process(context.Background(), set)
	if err != nil || res.Duplicate || f.events.Load() != 1 {
		t.Fatalf("retry: %+v %v", res, err)
	}
}

func TestReceiverRefuses(t *testing.T) {
	f := newRecvFixture(t)
	other := newKey(t)
	now := f.clk.Now()
	ev := EventSessionRevoked
	sub := sessionSubject("s")
	good := func() map[string]any { return setClaims(f.idp, now, ev, nil, sub) }
	with := func(k string, v any) string {
		c := good()
		c[k] = v
		return f.idp.sign("secevent+jwt", c)
	}
	without := func(k string) string {
		c := good()
		delete(c, k)
		return f.idp.sign("secevent+jwt", c)
	}
	rawSigned := func(payload string) string {
		return signRaw(t, f.idp, "secevent+jwt", []byte(payload))
	}
	cases := []struct {
		name, set, code string
	}{
		{"not a JWS", "abc", SETErrInvalidRequest},
		{"typ JWT", f.idp.sign("JWT", good()), SETErrInvalidRequest},
		{"typ at+jwt (an access token)", f.idp.sign("at+jwt", good()), SETErrInvalidRequest},
		{"alg HS256", hsSET(t, f.idp, good()), SETErrInvalidKey},
		{"unknown kid", signJWS(t, other, "nope", "secevent+jwt", good()), SETErrInvalidKey},
		{"forged signature", signJWS(t, other, f.idp.kid, "secevent+jwt", good()), SETErrAuthenticationFailed},
		{"wrong issuer", with("iss", "https://evil.example"), SETErrInvalidIssuer},
		{"wrong audience", with("aud", "https://other.example"), SETErrInvalidAudience},
		{"audience array without us", with("aud", []string{"a", "b"}), SETErrInvalidAudience},
		{"iat too old", with("iat", now.Add(-25*time.Hour).Unix()), SETErrInvalidRequest},
		{"iat in the future", with("iat", now.Add(time.Minute).Unix()), SETErrInvalidRequest},
		{"sub claim (an ID token shape)", with("sub", "alice"), SETErrInvalidRequest},
		{"exp claim", with("exp", now.Add(time.Hour).Unix()), SETErrInvalidRequest},
		{"no jti", without("jti"), SETErrInvalidRequest},
		{"no iat", without("iat"), SETErrInvalidRequest},
		{"no events", without("events"), SETErrInvalidRequest},
		{"no subject", without("sub_id"), SETErrInvalidRequest},
		{"two events", with("events", map[string]any{ev: map[string]any{}, EventCredentialChange: map[string]any{}}), SETErrInvalidRequest},
		{"zero events", with("events", map[string]any{}), SETErrInvalidRequest},
		{"event not an object", with("events", map[string]any{ev: "x"}), SETErrInvalidRequest},
		{"nested complex subject", with("sub_id", map[string]any{"format": "complex", "user": map[string]any{"format": "complex", "user": sub}}), SETErrInvalidRequest},
		{"subject without format", with("sub_id", map[string]any{"id": "x"}), SETErrInvalidRequest},
		{"iss_sub without sub", with("sub_id", map[string]any{"format": "iss_sub", "iss": "x"}), SETErrInvalidRequest},
		{"credential-change without change_type", with("events", map[string]any{EventCredentialChange: map[string]any{"credential_type": "password"}}), SETErrInvalidRequest},
		{"risk level out of range", with("events", map[string]any{EventRiskLevelChange: map[string]any{"principal": "USER", "current_level": "SEVERE"}}), SETErrInvalidRequest},
		{"duplicate iss member", rawSigned(`{"iss":"` + f.idp.issuer + `","iss":"x","jti":"j","iat":` + jsonNum(now) + `,"aud":"` + ssfAud + `","sub_id":{"format":"opaque","id":"s"},"events":{"` + ev + `":{}}}`), SETErrInvalidRequest},
		{"bad NumericDate", rawSigned(`{"iss":"` + f.idp.issuer + `","jti":"j","iat":"soon","aud":"` + ssfAud + `","sub_id":{"format":"opaque","id":"s"},"events":{"` + ev + `":{}}}`), SETErrInvalidRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.r.Process(context.Background(), tc.set)
			var se *SETError
			if !errors.As(err, &se) || se.Code != tc.code {
				t.Fatalf("err = %v, want %s", err, tc.code)
			}
		})
	}
	if f.state.Len() != 0 || f.events.Load() != 0 {
		t.Fatalf("refused SETs changed state: %d entries, %d events", f.state.Len(), f.events.Load())
	}
}

func jsonNum(t time.Time) string { b, _ := json.Marshal(t.Unix()); return string(b) }

// signRaw signs an exact payload (go-jose would re-encode a map).
func signRaw(t *testing.T, idp *testIdP, typ string, payload []byte) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: idp.key},
		(&jose.SignerOptions{}).WithType(jose.ContentType(typ)).WithHeader("kid", idp.kid))
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

func hsSET(t *testing.T, idp *testIdP, claims map[string]any) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")},
		(&jose.SignerOptions{}).WithType("secevent+jwt").WithHeader("kid", idp.kid))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

// TestCAEPVectors parses every CAEP 1.0 example SET, signs it with a real
// key, runs it through a Receiver configured for its issuer and audience,
// and checks the state changes the mapping promises.
func TestCAEPVectors(t *testing.T) {
	aal := func(ns, level string) (string, bool) {
		if ns == "NIST-AAL" && level == "nist-aal2" {
			return "urn:ward:acr:mfa", true
		}
		return "", false
	}
	const ts = 1615304991
	want := map[string][]Action{
		"03-session-revoked-example-session-id-req.json":              {{Kind: "revoke_session", ID: "dMTlD|1600802906337.16|16008.16"}},
		"04-session-revoked-example-user-sub.json":                    {{Kind: "revoke_session", ID: "dMTlD|1600802906337.16|16008.16"}},
		"05-session-revoked-example-user-device.json":                 {{Kind: "revoke_user_device", Issuer: "https://idp.example.com/123456789/", ID: "jane.smith@example.com", DeviceID: "e9297990-14d2-42ec-a4a9-4036db86509a"}},
		"06-token-claims-change-example-oidc.json":                    {{Kind: "revoke_token", Issuer: "https://idp.example.com/987654321/", ID: "f61t6e20zdo3px56gepu8rzlsp4c1dpc0fx7"}},
		"07-token-claims-change-example-oidc-optional.json":           {{Kind: "revoke_token", Issuer: "https://idp.example.com/987654321/", ID: "f61t6e20zdo3px56gepu8rzlsp4c1dpc0fx7"}},
		"08-token-claims-change-example-saml.json":                    nil, // a SAML assertion: nothing of ours
		"09-credential-change-example-fido2.json":                     {{Kind: "revoke_user", Issuer: "https://idp.example.com/3456789/", ID: "jane.smith@example.com"}},
		"10-assurance-level-change-examples-al-increase.json":         {{Kind: "require", Issuer: "https://idp.example.com/3456789/", ID: "jane.smith@example.com", Requirement: &Requirement{ACR: "urn:ward:acr:mfa", Since: time.Unix(ts, 0)}}},
		"11-assurance-level-change-examples-custom.json":              nil, // unknown namespace
		"12-device-compliance-change-examples-out-of-compliance.json": {{Kind: "revoke_device", ID: "e9297990-14d2-42ec-a4a9-4036db86509a"}},
		"13-examples.json": nil,                                                                                                                                          // session-established
		"14-examples.json": nil,                                                                                                                                          // session-presented
		"15-examples.json": {{Kind: "clear_requirement", Issuer: "https://idp.example.com/3456789/", ID: "jane.doe@example.com", Requirement: &Requirement{Risk: true}}}, // risk LOW: lifts a MEDIUM's step-up
	}
	n := 0
	for _, v := range loadVectors(t, "caep") {
		if !strings.Contains(string(v.data), `"events"`) {
			continue // the reason_admin / reason_user fragments
		}
		n++
		t.Run(v.name, func(t *testing.T) {
			set, err := ParseSETClaims(v.data)
			if err != nil {
				t.Fatalf("%s: %v", v.title, err)
			}
			if set.Issuer == "" || set.JTI == "" || set.IssuedAt.Unix() != 1615305159 || set.TXN != "8675309" || set.Subject == nil {
				t.Fatalf("parsed %+v", set)
			}
			idp := newTestIdP(t)
			clk := newClock(set.IssuedAt.Add(10 * time.Second))
			state := NewRevocationState(StateConfig{Now: clk.Now})
			ks, _ := NewStaticKeySet(jose.JSONWebKeySet{Keys: idp.jwks})
			r, err := NewReceiver(ReceiverConfig{Issuer: set.Issuer, Audience: set.Audience[0], State: state, Keys: ks, Now: clk.Now, ACRFor: aal})
			if err != nil {
				t.Fatal(err)
			}
			res, err := r.Process(context.Background(), signRaw(t, idp, "secevent+jwt", v.data))
			if err != nil {
				t.Fatalf("process: %v", err)
			}
			w, ok := want[v.name]
			if !ok {
				t.Fatalf("no expectation for %s", v.name)
			}
			for i := range w {
				w[i].At = time.Unix(ts, 0)
			}
			if !reflect.DeepEqual(norm(res.Actions), norm(w)) {
				t.Fatalf("actions = %+v, want %+v", res.Actions, w)
			}
			if len(w) > 0 && w[0].Kind != "require" && w[0].Kind != "clear_requirement" && state.Len() != 1 {
				t.Fatalf("state holds %d entries", state.Len())
			}
		})
	}
	if n != len(want) {
		t.Fatalf("ran %d vectors, expected %d", n, len(want))
	}
}

// TestCAEPVectorFields checks event fields read from the examples.
func TestCAEPVectorFields(t *testing.T) {
	byName := map[string]*SET{}
	for _, v := range loadVectors(t, "caep") {
		if s, err := ParseSETClaims(v.data); err == nil {
			byName[v.name] = s
		}
	}
	s := byName["04-session-revoked-example-user-sub.json"]
	if s.Subject.Format != "complex" || s.Subject.Session.ID != "dMTlD|1600802906337.16|16008.16" ||
		s.Subject.User.Sub != "99beb27c-c1c2-4955-882a-e0dc4996fcbc" || s.Subject.Tenant.ID != "123456789" ||
		s.Event.InitiatingEntity != "policy" || s.Event.ReasonUser["es-410"] != "Intento de acceso desde varias regiones." {
		t.Errorf("04: %+v %+v", s.Subject, s.Event)
	}
	s = byName["09-credential-change-example-fido2.json"]
	if s.Event.CredentialType != "fido2-roaming" || s.Event.ChangeType != "create" {
		t.Errorf("09: %+v", s.Event)
	}
	s = byName["10-assurance-level-change-examples-al-increase.json"]
	if s.Event.Namespace != "NIST-AAL" || s.Event.CurrentLevel != "nist-aal2" || s.Event.PreviousLevel != "nist-aal1" || s.Event.ChangeDirection != "increase" {
		t.Errorf("10: %+v", s.Event)
	}
	s = byName["12-device-compliance-change-examples-out-of-compliance.json"]
	if s.Event.CurrentStatus != "not-compliant" || s.Event.PreviousStatus != "compliant" || s.Subject.Device.Sub != "e9297990-14d2-42ec-a4a9-4036db86509a" {
		t.Errorf("12: %+v", s.Event)
	}
	s = byName["07-token-claims-change-example-oidc-optional.json"]
	if string(s.Event.Claims) == "" || !strings.Contains(string(s.Event.Claims), "trusted_network") {
		t.Errorf("07 claims: %s", s.Event.Claims)
	}
	s = byName["15-examples.json"]
	if s.Event.Principal != "USER" || s.Event.CurrentLevel != "LOW" || s.Event.RiskReason != "PASSWORD_FOUND_IN_DATA_BREACH" {
		t.Errorf("15: %+v", s.Event)
	}
	s = byName["13-examples.json"]
	if s.Subject.Format != "email" || s.Subject.Email != "someuser@somedomain.com" {
		t.Errorf("13: %+v", s.Subject)
	}
}

// TestSSFVectors parses the SSF 1.0 example SETs and subject identifiers.
func TestSSFVectors(t *testing.T) {
	type expect struct {
		event   string
		format  string
		actions int
	}
	sets := map[string]expect{
		"07-figarrayaud.json":                   {EventVerification, "opaque", 0},
		"08-subject-ids-ex-simple.json":         {EventAccountEnabled, "email", 0},
		"09-risc-event-subject-example.json":    {EventAccountDisabled, "phone_number", 0}, // no mapping for phone numbers
		"10-caep-event-properties-example.json": {EventTokenClaimsChange, "email", 0},
		"11-subject-ids-ex-complex.json":        {EventSessionRevoked, "complex", 1},
		"12-subject-properties-ex.json":         {EventTokenClaimsChange, "email", 0},
		"13-subject-custom-type-ex.json":        {EventTokenClaimsChange, "catalog_item", 0},
		"52-figverifyset.json":                  {EventVerification, "opaque", 0},
		"53-figstreamupdatedset.json":           {EventStreamUpdated, "opaque", 0},
	}
	subjects := map[string]string{
		"03-sub-id-jwtid.json": "jwt_id", "04-sub-id-samlassertionid.json": "saml_assertion_id",
		"05-sub-id-ips-example.json": "ip-addresses", "40-subject-matching.json": "complex",
		"41-subject-matching.json": "complex", "42-subject-matching.json": "complex", "43-subject-matching.json": "complex",
		"44-subject-matching.json": "complex", "45-subject-matching.json": "complex",
	}
	seen := 0
	for _, v := range loadVectors(t, "ssf") {
		if e, ok := sets[v.name]; ok {
			seen++
			set, err := ParseSETClaims(v.data)
			if err != nil {
				t.Errorf("%s: %v", v.name, err)
				continue
			}
			if set.Event.Type != e.event || set.Subject.Format != e.format {
				t.Errorf("%s: event %s subject %s", v.name, set.Event.Type, set.Subject.Format)
			}
			r, _ := NewReceiver(ReceiverConfig{Issuer: set.Issuer, Audience: set.Audience[0], State: NewRevocationState(StateConfig{}), Keys: &KeySet{static: true}})
			if acts := r.Apply(set); len(acts) != e.actions {
				t.Errorf("%s: actions %+v", v.name, acts)
			}
			continue
		}
		if f, ok := subjects[v.name]; ok {
			seen++
			s, err := parseSubject(v.data, true)
			if err != nil || s.Format != f {
				t.Errorf("%s: %+v %v", v.name, s, err)
			}
		}
	}
	if seen != len(sets)+len(subjects) {
		t.Fatalf("checked %d SSF vectors, expected %d", seen, len(sets)+len(subjects))
	}
	// The verification SET's state and the stream-updated status.
	data := readVector(t, "ssf", "53-figstreamupdatedset.json")
	set, _ := ParseSETClaims(data)
	if set.Event.Status != "paused" || set.Event.Reason != "Internal error" {
		t.Errorf("stream-updated: %+v", set.Event)
	}
	data = readVector(t, "ssf", "05-sub-id-ips-example.json")
	s, _ := parseSubject(data, true)
	if len(s.IPAddresses) != 2 {
		t.Errorf("ip-addresses: %v", s.IPAddresses)
	}
	// The fragments 01 and 02 hold a "sub_id" member, not a document.
	for _, name := range []string{"01-simple-subject-ex.json", "02-complex-subject-ex.json"} {
		data := readVector(t, "ssf", name)
		var doc map[string]json.RawMessage
		if err := json.Unmarshal([]byte("{"+string(data)+"}"), &doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := parseSubject(doc["sub_id"], true); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestApplyMapping(t *testing.T) {
	f := newRecvFixture(t)
	iss := f.idp.issuer
	user := map[string]any{"format": "iss_sub", "iss": iss, "sub": "alice"}
	now := f.clk.Now()
	cases := []struct {
		name    string
		event   string
		body    map[string]any
		subject map[string]any
		want    []Action
	}{
		{"session-revoked, user subject", EventSessionRevoked, nil, user,
			[]Action{{Kind: "revoke_user", Issuer: iss, ID: "alice", At: now}}},
		{"session-revoked, complex device only", EventSessionRevoked, nil, map[string]any{"format": "complex", "device": map[string]any{"format": "opaque", "id": "d1"}},
			[]Action{{Kind: "revoke_device", ID: "d1", At: now}}},
		{"credential-change, opaque user at the SET issuer", EventCredentialChange, map[string]any{"credential_type": "password", "change_type": "update"}, map[string]any{"format": "opaque", "id": "bob"},
			[]Action{{Kind: "revoke_user", Issuer: iss, ID: "bob", At: now}}},
		{"account-disabled, aliases", EventAccountDisabled, nil, map[string]any{"format": "aliases", "identifiers": []any{map[string]any{"format": "email", "email": "a@x"}, user}},
			[]Action{{Kind: "revoke_user", Issuer: iss, ID: "alice", At: now}}},
		{"credential-compromise", EventCredentialCompromise, map[string]any{"credential_type": "password"}, user,
			[]Action{{Kind: "revoke_user", Issuer: iss, ID: "alice", At: now}}},
		{"account-purged", EventAccountPurged, nil, user, []Action{{Kind: "revoke_user", Issuer: iss, ID: "alice", At: now}}},
		{"device compliant again", EventDeviceComplianceChange, map[string]any{"current_status": "compliant", "previous_status": "not-compliant"}, map[string]any{"format": "opaque", "id": "d1"}, nil},
		{"risk HIGH user", EventRiskLevelChange, map[string]any{"principal": "USER", "current_level": "HIGH"}, user,
			[]Action{{Kind: "revoke_user", Issuer: iss, ID: "alice", At: now}}},
		{"risk HIGH device in complex", EventRiskLevelChange, map[string]any{"principal": "DEVICE", "current_level": "HIGH"}, map[string]any{"format": "complex", "user": user, "device": map[string]any{"format": "opaque", "id": "d9"}},
			[]Action{{Kind: "revoke_device", ID: "d9", At: now}}},
		{"risk MEDIUM user: step-up", EventRiskLevelChange, map[string]any{"principal": "USER", "current_level": "MEDIUM"}, user,
			[]Action{{Kind: "require", Issuer: iss, ID: "alice", At: now, Requirement: &Requirement{ACR: "urn:ward:acr:mfa", AuthTimeAfter: now, Since: now, Risk: true}}}},
		{"risk LOW user: lifts the step-up", EventRiskLevelChange, map[string]any{"principal": "USER", "current_level": "LOW", "previous_level": "MEDIUM"}, user,
			[]Action{{Kind: "clear_requirement", Issuer: iss, ID: "alice", At: now, Requirement: &Requirement{Risk: true}}}},
		{"risk LOW device: nothing", EventRiskLevelChange, map[string]any{"principal": "DEVICE", "current_level": "LOW"}, map[string]any{"format": "opaque", "id": "d9"}, nil},
		{"assurance decrease clears", EventAssuranceLevelChange, map[string]any{"namespace": "x", "current_level": "urn:ward:acr:password", "change_direction": "decrease"}, user,
			[]Action{{Kind: "clear_requirement", Issuer: iss, ID: "alice", At: now}}},
		{"assurance increase to a Ward acr", EventAssuranceLevelChange, map[string]any{"namespace": "ward", "current_level": "urn:ward:acr:mfa"}, user,
			[]Action{{Kind: "require", Issuer: iss, ID: "alice", At: now, Requirement: &Requirement{ACR: "urn:ward:acr:mfa", Since: now}}}},
		{"event_timestamp after iat is clamped", EventAccountDisabled, map[string]any{"event_timestamp": now.Add(time.Hour).Unix()}, user,
			[]Action{{Kind: "revoke_user", Issuer: iss, ID: "alice", At: now}}},
		{"verification", EventVerification, map[string]any{"state": "abc"}, nil, nil},
		{"unknown event", "https://example.com/event/x", nil, user, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sub := tc.subject
			set := f.set(tc.event, tc.body, sub, func(c map[string]any) {
				if sub == nil {
					delete(c, "sub_id")
				}
			})
			res, err := f.r.Process(context.Background(), set)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(norm(res.Actions), norm(tc.want)) {
				t.Fatalf("actions = %+v, want %+v", res.Actions, tc.want)
			}
		})
	}
}

func TestPushHandler(t *testing.T) {
	f := newRecvFixture(t)
	denied := false
	srv := httptest.NewServer(f.r.PushHandler(func(r *http.Request) error {
		if denied {
			return ErrAccessDenied
		}
		return RequireBearer("push-secret")(r)
	}))
	defer srv.Close()
	post := func(body, ctype, authz string) (int, map[string]string) {
		req, _ := http.NewRequest("POST", srv.URL, strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		req.Header.Set("Accept", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	const ct = "application/secevent+jwt"
	const auth = "Bearer push-secret"
	good := f.set(EventSessionRevoked, nil, sessionSubject("s1"))
	if code, _ := post(good, ct, auth); code != http.StatusAccepted {
		t.Fatalf("good SET: %d", code)
	}
	if code, _ := post(good, ct, auth); code != http.StatusAccepted {
		t.Fatalf("duplicate: %d", code)
	}
	wrongAud := f.set(EventSessionRevoked, nil, sessionSubject("s2"), func(c map[string]any) { c["aud"] = "x" })
	for _, tc := range []struct {
		name, body, ctype, authz string
		status                   int
		err                      string
	}{
		{"wrong audience", wrongAud, ct, auth, 400, SETErrInvalidAudience},
		{"garbage", "not a jwt", ct, auth, 400, SETErrInvalidRequest},
		{"wrong content type", good, "application/jwt", auth, 400, SETErrInvalidRequest},
		{"too large", strings.Repeat("a", maxSETSize+1), ct, auth, 400, SETErrInvalidRequest},
		{"no authorization", good, ct, "", 401, SETErrAuthenticationFailed},
		{"wrong secret", good, ct, "Bearer nope", 401, SETErrAuthenticationFailed},
	} {
		code, body := post(tc.body, tc.ctype, tc.authz)
		if code != tc.status || body["err"] != tc.err || body["description"] == "" {
			t.Errorf("%s: %d %v, want %d %s", tc.name, code, body, tc.status, tc.err)
		}
	}
	denied = true
	if code, body := post(good, ct, auth); code != 403 || body["err"] != SETErrAccessDenied {
		t.Errorf("denied: %d %v", code, body)
	}
	denied = false
	resp, _ := srv.Client().Get(srv.URL)
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", resp.StatusCode)
	}
	resp.Body.Close()
	if f.state.Len() != 1 {
		t.Fatalf("state: %d entries", f.state.Len())
	}
}

func TestPushKeysUnavailable(t *testing.T) {
	f := newRecvFixture(t)
	f.idp.jwksDown.Store(true)
	w := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/events", strings.NewReader(f.set(EventSessionRevoked, nil, sessionSubject("s"))))
	req.Header.Set("Content-Type", "application/secevent+jwt")
	f.r.PushHandler(nil).ServeHTTP(w, req)
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status = %d (a transmitter must retry, not drop, when our keys are down)", w.Code)
	}
}

func TestSSFDiscovery(t *testing.T) {
	// The receiver finds the transmitter's keys through
	// /.well-known/ssf-configuration.
	f := newRecvFixture(t)
	if _, err := f.r.Process(context.Background(), f.set(EventSessionRevoked, nil, sessionSubject("s"))); err != nil {
		t.Fatal(err)
	}
	if f.idp.fetches.Load() != 1 {
		t.Fatalf("JWKS fetches = %d", f.idp.fetches.Load())
	}
}

// FuzzParseSETClaims: arbitrary payloads never panic; accepted ones hold
// what the SSF requires.
func FuzzParseSETClaims(f *testing.F) {
	for _, sub := range []string{"caep", "ssf"} {
		for _, v := range loadVectors(f, sub) {
			f.Add(v.data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := ParseSETClaims(data)
		if err != nil {
			var se *SETError
			if !errors.As(err, &se) || se.Code != SETErrInvalidRequest {
				t.Fatalf("error %v is not an invalid_request SETError", err)
			}
			return
		}
		if set.Issuer == "" || set.JTI == "" || len(set.Audience) == 0 || slices.Contains(set.Audience, "") || set.Event.Type == "" {
			t.Fatalf("accepted incomplete SET %+v", set)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("accepted what encoding/json rejects: %v", err)
		}
		if _, ok := m["sub"]; ok {
			t.Fatal("accepted a SET with sub")
		}
		if _, ok := m["exp"]; ok {
			t.Fatal("accepted a SET with exp")
		}
		var evs map[string]json.RawMessage
		if json.Unmarshal(m["events"], &evs) != nil || len(evs) != 1 {
			t.Fatalf("accepted events %s", m["events"])
		}
		// Mapping must not panic on whatever parsed.
		r := &Receiver{cfg: ReceiverConfig{State: NewRevocationState(StateConfig{}), StepUpACR: "x"}}
		r.Apply(set)
	})
}

// norm makes actions comparable with DeepEqual: times in one location,
// requirements by value.
func norm(acts []Action) []any {
	unix := func(t time.Time) int64 {
		if t.IsZero() {
			return 0
		}
		return t.Unix()
	}
	var out []any
	for _, a := range acts {
		var r any = [4]any{}
		if a.Requirement != nil {
			r = [4]any{a.Requirement.ACR, unix(a.Requirement.AuthTimeAfter), unix(a.Requirement.Since), a.Requirement.Risk}
		}
		out = append(out, [6]any{a.Kind, a.Issuer, a.ID, a.DeviceID, unix(a.At), r})
	}
	return out
}
