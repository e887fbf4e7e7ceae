package cae

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

func vector(t *testing.T, name string) json.RawMessage {
	t.Helper()
	// testdata/README.md says where each example comes from.
	b, err := os.ReadFile(filepath.Join("testdata", "ssf", name))
	if err != nil {
		t.Fatalf("SSF vector: %v", err)
	}
	return b
}

func mustMatcher(t *testing.T, raw json.RawMessage) subjectMatcher {
	t.Helper()
	_, m, err := parseSubject(raw)
	if err != nil {
		t.Fatalf("parseSubject(%s): %v", raw, err)
	}
	return m
}

// TestSubjectMatchingVectors uses the three examples of SSF 1.0
// §8.1.3.1 (vectors 40-45): receiver subject first, event subject second.
func TestSubjectMatchingVectors(t *testing.T) {
	for _, c := range []struct {
		added, event string
		want         bool
	}{
		{"40-subject-matching.json", "41-subject-matching.json", true},  // less restrictive
		{"42-subject-matching.json", "43-subject-matching.json", true},  // more restrictive
		{"44-subject-matching.json", "45-subject-matching.json", false}, // different group
	} {
		x, ev := mustMatcher(t, vector(t, c.added)), mustMatcher(t, vector(t, c.event))
		if got := x.matches(ev); got != c.want {
			t.Errorf("%s matches %s = %v, want %v", c.added, c.event, got, c.want)
		}
	}
}

func TestSubjectMatchingWard(t *testing.T) {
	iss := "https://ward.example"
	bob := userSubject(iss, "bob")
	sess := &Subject{Format: FormatComplex, User: bob, Session: opaqueSubject("s1")}
	other := &Subject{Format: FormatComplex, User: userSubject(iss, "eve"), Session: opaqueSubject("s2")}
	tenant := &Subject{Format: FormatComplex, Tenant: opaqueSubject(iss)}
	// Member order and whitespace do not matter.
	x := mustMatcher(t, json.RawMessage(`{ "sub": "bob", "format": "iss_sub", "iss": "https://ward.example" }`))
	for _, c := range []struct {
		name string
		ev   *Subject
		want bool
	}{
		{"the user itself", bob, true},
		{"a complex subject with the user as a member", sess, true},
		{"another user's session", other, false},
		{"the tenant", tenant, false},
	} {
		if got := x.matches(matcherOf(c.ev)); got != c.want {
			t.Errorf("simple bob vs %s = %v, want %v", c.name, got, c.want)
		}
	}
	cx := mustMatcher(t, json.RawMessage(`{"format":"complex","user":{"format":"iss_sub","iss":"https://ward.example","sub":"bob"}}`))
	if !cx.matches(matcherOf(sess)) || cx.matches(matcherOf(other)) {
		t.Error("complex {user: bob} must match bob's session and not eve's")
	}
	// Complex subjects with no member in common do not match (Ward's
	// reading: otherwise removing a user would silence tenant events).
	if cx.matches(matcherOf(tenant)) {
		t.Error("complex {user} matched {tenant}")
	}
	if cx.matches(matcherOf(bob)) {
		t.Error("a complex subject matched a simple event subject")
	}
}

func TestParseSubjectInvalid(t *testing.T) {
	for _, raw := range []string{
		``, `null`, `"x"`, `[]`, `{}`, `{"format": 1}`, `{"format": ""}`,
		`{"format": "opaque"}`, `{"format": "opaque", "id": ""}`, `{"format": "opaque", "id": 5}`,
		`{"format": "iss_sub", "iss": "x"}`, `{"format": "email"}`, `{"format": "account", "uri": "mailto:x"}`,
		`{"format": "ip-addresses", "ip-addresses": []}`, `{"format": "aliases", "identifiers": []}`,
		`{"format": "aliases", "identifiers": [{"format": "aliases", "identifiers": [{"format":"opaque","id":"x"}]}]}`,
		`{"format": "complex"}`, `{"format": "complex", "user": "bob"}`,
		`{"format": "complex", "user": {"format": "complex", "user": {"format": "opaque", "id": "x"}}}`,
		`{"format": "catalog_item", "catalog_id": {"nested": true}}`,
		`{"format": "opaque", "id": "x"} trailing`,
		`{"format": "opaque", "id": "` + strings.Repeat("x", maxSubjectSize) + `"}`,
	} {
		if _, _, err := parseSubject(json.RawMessage(raw)); !errors.Is(err, errSubject) {
			t.Errorf("parseSubject(%.60s) = %v, want errSubject", raw, err)
		}
	}
	// Valid ones, including the proprietary format of SSF vector 13.
	for _, raw := range []string{
		`{"format": "email", "email": "foo@example.com"}`,
		`{"format": "catalog_item", "catalog_id": "c0384/winter/2354122"}`,
		`{"format": "aliases", "identifiers": [{"format": "email", "email": "a@example.com"}, {"format": "opaque", "id": "x"}]}`,
		`{"format": "ip-addresses", "ip-addresses": ["10.0.0.1"]}`,
		`{"format": "account", "uri": "acct:a@example.com"}`,
	} {
		if _, _, err := parseSubject(json.RawMessage(raw)); err != nil {
			t.Errorf("parseSubject(%s): %v", raw, err)
		}
	}
}

func TestCheckPushURL(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://rs.example/events":              true,
		"https://rs.example:8443/e?x=1":          true,
		"http://127.0.0.1:8080/events":           true,
		"http://[::1]/events":                    true,
		"http://localhost/events":                true,
		"http://rs.example/events":               false,
		"http://10.1.2.3/events":                 false,
		"http://127.0.0.1.nip.io/events":         false,
		"ftp://rs.example/events":                false,
		"javascript:alert(1)":                    false,
		"//rs.example/events":                    false,
		"https://user:pass@rs.example/events":    false,
		"https://rs.example/events#frag":         false,
		"":                                       false,
		"https://" + strings.Repeat("a", maxURL): false,
	} {
		_, err := checkURL(raw)
		if (err == nil) != ok {
			t.Errorf("checkURL(%.50q) = %v, want ok=%v", raw, err, ok)
		}
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := time.Second, 5*time.Minute
	prev := time.Duration(0)
	for f := 1; f <= 20; f++ {
		d := backoff(lo, hi, f)
		if d < lo/2 || d > hi {
			t.Fatalf("backoff(%d) = %v out of [%v, %v]", f, d, lo/2, hi)
		}
		if f <= 8 && d < prev/2 {
			t.Errorf("backoff(%d) = %v shrank from %v", f, d, prev)
		}
		prev = d
	}
	if d := backoff(lo, hi, 50); d < hi/2 {
		t.Errorf("backoff after many failures = %v, want about the cap", d)
	}
}

func TestClaimsJSON(t *testing.T) {
	s := &Service{issuer: "https://ward.example", issJSON: []byte(`"https://ward.example"`)}
	tpl := template{typ: EventSessionRevoked, subject: &Subject{Format: FormatComplex,
		User: userSubject("https://ward.example", "u1"), Session: opaqueSubject("s1")},
		body: eventBody{EventTimestamp: 1800000000, InitiatingEntity: InitiatorAdmin, ReasonAdmin: reason("x \"quoted\"")}}
	tail, err := s.claimsTail(time.Unix(1800000001, 0), "txn-1", tpl)
	if err != nil {
		t.Fatal(err)
	}
	raw := claimsJSON(s.issJSON, audJSON([]string{"rcv"}), "jti-1", tail)
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("claims are not JSON: %v\n%s", err, raw)
	}
	if got["iss"] != "https://ward.example" || got["aud"] != "rcv" || got["jti"] != "jti-1" || got["iat"] != float64(1800000001) ||
		got["txn"] != "txn-1" || got["sub"] != nil || got["exp"] != nil {
		t.Errorf("claims = %v", got)
	}
	evs := got["events"].(map[string]any)
	if len(evs) != 1 || evs[EventSessionRevoked] == nil {
		t.Errorf("events = %v", evs)
	}
	if sub := got["sub_id"].(map[string]any); sub["format"] != "complex" || sub["user"].(map[string]any)["sub"] != "u1" {
		t.Errorf("sub_id = %v", sub)
	}
	raw2 := claimsJSON(s.issJSON, audJSON([]string{"a", "b"}), "jti-2", tail)
	json.Unmarshal(raw2, &got)
	if aud, _ := got["aud"].([]any); len(aud) != 2 {
		t.Errorf("two audiences marshal as %v", got["aud"])
	}
}

// echoSigner returns the claims as the "SET"; failOn makes the claims
// containing that text fail.
type echoSigner struct{ failOn string }

func (e echoSigner) MintSET(c any) (string, error) {
	raw := string(c.(json.RawMessage))
	if e.failOn != "" && strings.Contains(raw, e.failOn) {
		return "", errors.New("boom")
	}
	return raw, nil
}

// TestSign: many entries are signed on several goroutines, each with its
// own claims; one failure fails the batch.
func TestSign(t *testing.T) {
	for _, n := range []int{1, 15, 200} {
		s := &Service{o: Options{Keys: echoSigner{}}}
		entries, payloads := make([]*store.SETEntry, n), make([][]byte, n)
		for i := range n {
			entries[i], payloads[i] = &store.SETEntry{}, []byte(fmt.Sprintf(`{"i":%d}`, i))
		}
		if err := s.sign(entries, payloads); err != nil {
			t.Fatal(err)
		}
		for i, e := range entries {
			if e.SET != fmt.Sprintf(`{"i":%d}`, i) {
				t.Fatalf("n=%d: entry %d signed %q", n, i, e.SET)
			}
		}
		s.o.Keys = echoSigner{failOn: fmt.Sprintf(`{"i":%d}`, n-1)}
		if err := s.sign(entries, payloads); err == nil {
			t.Errorf("n=%d: a signing failure was not reported", n)
		}
	}
}

func TestInitiator(t *testing.T) {
	for _, c := range []struct {
		actor, user, want string
	}{
		{"", "u1", InitiatorSystem}, {"system", "u1", InitiatorSystem}, {"u1", "u1", InitiatorUser}, {"admin-7", "u1", InitiatorAdmin},
	} {
		if got := initiator(&model.Event{Actor: c.actor, UserID: c.user}); got != c.want {
			t.Errorf("initiator(actor %q, user %q) = %s, want %s", c.actor, c.user, got, c.want)
		}
	}
	for in, want := range map[string]string{"high": "HIGH", "medium": "MEDIUM", "low": "LOW", "none": "LOW", "": "LOW"} {
		if got := riskLevel(in); got != want {
			t.Errorf("riskLevel(%q) = %s, want %s", in, got, want)
		}
	}
	for in, want := range map[string]string{model.Compliant: "compliant", model.NonCompliant: "not-compliant", model.ComplianceUnknown: "not-compliant", "": "not-compliant"} {
		if got := compliance(in); got != want {
			t.Errorf("compliance(%q) = %s, want %s", in, got, want)
		}
	}
}
