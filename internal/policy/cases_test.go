package policy

import (
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const casesPolicies = `
locations:
  - {id: corp, trusted: true, ip_ranges: [203.0.113.0/24, "2001:db8:100::/48"]}
policies:
  - id: p-mfa
    state: enabled
    assignments: {users: {include: [all], exclude: [breakglass]}, applications: {include: [all]}}
    grant: {controls: [mfa]}
    session: {sign_in_frequency: 8h, access_token_lifetime: 30m}
  - id: p-refresh
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {flows: [refresh], locations: {include: [all], exclude: [trusted]}}
    grant: {block: true}
    session: {strict_location: true}
  - id: p-report
    state: report_only
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    grant: {controls: [compliant_device]}
  - id: p-off
    state: disabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    grant: {block: true}
`

const casesYAML = `
- name: mfa needed
  input:
    user: {id: alice, groups: [staff]}
    app: {client_id: wiki, public: true, native: true}
    device: {id: d1, registered: true, status: active, compliance: compliant, platform: linux}
    ip: 203.0.113.7
    country: JP
    flow: interactive
    auth: {strength: password, methods: [pwd]}
  expect:
    outcome: allow_with_controls
    controls: [mfa]
    applied: [p-mfa]
    not_applied: [p-off, p-refresh]
    report_only: [p-report]
    blocked_by: []
    session: {sign_in_frequency: 8h, access_token_lifetime: 30m}
- name: refresh from outside over IPv6
  input:
    user: {id: breakglass}
    app: {client_id: wiki}
    ip: 2001:db8:200::1
    flow: refresh
  expect:
    outcome: block
    blocked_by: [p-refresh]
    session: {strict_location: true}
- name: wrong expectations
  input:
    user: {id: bob}
    app: {client_id: wiki}
    ip: "2001:db8:100::1"
    flow: refresh
  expect:
    outcome: block
    controls: [mfa]
    applied: [p-refresh, p-refresh, p-typo]
    not_applied: [p-off, p-mfa, p-report]
    session: {sign_in_every_time: true, sign_in_frequency: 1h}
`

func TestDecodeAndRunCases(t *testing.T) {
	set, err := Load([]byte(casesPolicies))
	if err != nil {
		t.Fatal(err)
	}
	cases, err := DecodeCases([]byte(casesYAML))
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) != 3 {
		t.Fatalf("%d cases", len(cases))
	}
	c0 := cases[0]
	wantIn := Input{
		User:   UserInput{ID: "alice", Groups: []string{"staff"}},
		App:    AppInput{ClientID: "wiki", Public: true, Native: true},
		Device: &DeviceInput{ID: "d1", Registered: true, Status: "active", Compliance: "compliant", Platform: "linux"},
		IP:     netip.MustParseAddr("203.0.113.7"), Country: "JP", Flow: FlowInteractive,
		Auth: AuthInput{Strength: StrengthPassword, Methods: []string{"pwd"}},
	}
	if !reflect.DeepEqual(c0.Input, wantIn) {
		t.Errorf("input %+v\nwant %+v", c0.Input, wantIn)
	}
	if c0.Expect.BlockedBy == nil || len(c0.Expect.BlockedBy) != 0 {
		t.Errorf("blocked_by: [] must decode as given and empty, got %#v", c0.Expect.BlockedBy)
	}
	if cases[1].Input.IP != netip.MustParseAddr("2001:db8:200::1") {
		t.Errorf("unquoted IPv6 decoded as %v", cases[1].Input.IP)
	}

	res := set.RunCases(cases)
	if len(res) != 3 {
		t.Fatalf("%d results", len(res))
	}
	for _, r := range res[:2] {
		if !r.Pass || len(r.Mismatches) > 0 {
			t.Errorf("%s: %v", r.Name, r.Mismatches)
		}
	}
	r := res[2]
	if r.Pass || r.Name != "wrong expectations" || r.Decision.Outcome != OutcomeAllowWithControls {
		t.Fatalf("failing case: %+v", r)
	}
	want := []string{
		"outcome: want block, got allow_with_controls",
		"applied: missing p-refresh, p-typo (no such policy), unexpected p-mfa",
		"not_applied: missing p-mfa, p-report",
		"session.sign_in_every_time: want true, got false",
		"session.sign_in_frequency: want 1h0m0s, got 8h0m0s",
		"session.access_token_lifetime: want none, got 30m0s",
	}
	if !slices.Equal(r.Mismatches, want) {
		t.Errorf("mismatches:\n%s\nwant:\n%s", strings.Join(r.Mismatches, "\n"), strings.Join(want, "\n"))
	}
}

func TestRunCasesMessages(t *testing.T) {
	set, err := Load([]byte(casesPolicies))
	if err != nil {
		t.Fatal(err)
	}
	in := Input{User: UserInput{ID: "u"}, App: AppInput{ClientID: "c"}, Flow: FlowRefresh, IP: netip.MustParseAddr("192.0.2.1")}
	for _, tc := range []struct {
		x    Expectation
		want []string
	}{
		{Expectation{}, nil},
		{Expectation{Outcome: OutcomeBlock, BlockedBy: []string{"p-refresh"}, Applied: []string{"p-refresh", "p-mfa"}}, nil},
		{Expectation{Outcome: OutcomeAllow}, []string{"outcome: want allow, got block"}},
		{Expectation{Applied: []string{"p1"}}, []string{"applied: missing p1 (no such policy), unexpected p-mfa, p-refresh"}},
		{Expectation{Applied: []string{}}, []string{"applied: unexpected p-mfa, p-refresh"}},
		{Expectation{NotApplied: []string{"p-off", "p-mfa", "p-off", "p2"}}, []string{"not_applied: missing p-mfa, p2 (no such policy)"}},
		{Expectation{ReportOnly: []string{}}, []string{"report_only: unexpected p-report"}},
		{Expectation{BlockedBy: []string{}}, []string{"blocked_by: unexpected p-refresh"}},
		{Expectation{Controls: []string{"mfa"}}, []string{"controls: missing mfa"}},
		{Expectation{Controls: []string{}}, nil}, // block: no controls asked for
		{Expectation{ReportOnly: []string{"p-report"}, NotApplied: []string{"p-off"}}, nil},
		{Expectation{Session: &SessionExpectation{SignInFrequency: "8h", AccessTokenLifetime: "30m", StrictLocation: true}}, nil},
		{Expectation{Session: &SessionExpectation{SignInFrequency: "soon"}}, []string{
			`session.sign_in_frequency: invalid duration "soon" (want e.g. "1h")`,
			"session.access_token_lifetime: want none, got 30m0s",
			"session.strict_location: want false, got true"}},
	} {
		r := set.RunCases([]Case{{Name: "c", Input: in, Expect: tc.x}})[0]
		if !slices.Equal(r.Mismatches, tc.want) || r.Pass != (len(tc.want) == 0) {
			t.Errorf("%+v: pass %v, mismatches %q, want %q", tc.x, r.Pass, r.Mismatches, tc.want)
		}
	}
	// Report-only: the decision is made by enforced policies.
	d := set.Evaluate(in)
	if d.Session.SignInFrequency != 8*time.Hour {
		t.Errorf("session %+v", d.Session)
	}
}

func TestDecodeCasesStrict(t *testing.T) {
	// The mapping form.
	cs, err := DecodeCases([]byte("cases:\n  - name: a\n    input: {user: {id: u}, app: {client_id: c}, ip: '::1'}\n    expect: {outcome: allow}\n"))
	if err != nil || len(cs) != 1 || cs[0].Input.IP != netip.IPv6Loopback() {
		t.Fatalf("mapping form: %v %+v", err, cs)
	}
	for _, tc := range []struct{ src, want string }{
		{"- name: a\n  input: {user: {id: u, grups: [x]}}\n", "field grups not found"},
		{"- name: a\n  input: {device: {os: linux}}\n", "field os not found"},
		{"- name: a\n  expect: {outcome: allow, aplied: [p]}\n", "field aplied not found"},
		{"- name: a\n  inputs: {}\n", "field inputs not found"},
		{"cases: []\nextra: 1\n", "field extra not found"},
		{"- name: a\n  input: {ip: 203.0.113}\n", "203.0.113"},
		{"- name: a\n  input: {ip: example.com}\n", "example.com"},
		{"- name: a\n---\n- name: b\n", "more than one document"},
		{"", "no cases"},
		{"[]", "no cases"},
		{"- name: a\n  expect: {controls: []}\n- {}\n", "cases[1].name: required"},
	} {
		_, err := DecodeCases([]byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.src, err, tc.want)
		}
	}
	// Every invalid expectation is reported at once.
	_, err = DecodeCases([]byte(`
- name: a
  expect: {outcome: deny, controls: [mfa, captcha], session: {sign_in_frequency: 1d, access_token_lifetime: -1m}}
- name: a
`))
	if err == nil {
		t.Fatal("invalid expectations accepted")
	}
	for _, want := range []string{
		`cases[0].expect.outcome: must be allow, block or allow_with_controls, got "deny"`,
		`cases[0].expect.controls[1]: unknown control "captcha"`,
		`cases[0].expect.session.sign_in_frequency: invalid duration "1d"`,
		`cases[0].expect.session.access_token_lifetime: invalid duration "-1m"`,
		`cases[1].name: duplicate case name "a"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

// TestExampleCases runs testdata/example.cases.yaml against
// testdata/example.yaml (the policies of docs/conditional-access.md).
func TestExampleCases(t *testing.T) {
	pol, err := os.ReadFile("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	set, err := Load(pol)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("testdata/example.cases.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases, err := DecodeCases(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range set.RunCases(cases) {
		if !r.Pass {
			t.Errorf("%s: %s", r.Name, strings.Join(r.Mismatches, "; "))
		}
	}
}
