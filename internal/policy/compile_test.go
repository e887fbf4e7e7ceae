package policy

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func allUsers() Assignments {
	return Assignments{Users: IncludeExclude{Include: []string{All}}, Applications: IncludeExclude{Include: []string{All}}}
}

func TestCompileReportsEveryProblem(t *testing.T) {
	locs := []NamedLocation{
		{ID: "hq", IPRanges: []string{"10.0.0.0/8", "10.0.0.300/8"}},
		{ID: "trusted", Countries: []string{"jp"}},
		{ID: "hq", IPRanges: []string{"192.0.2.0/24"}, Countries: []string{"JP"}},
	}
	pols := []Policy{
		{ID: "ok", State: StateEnabled, Assignments: allUsers(), Grant: GrantControls{Controls: []string{"mfa"}}},
		{ID: "nobody", State: StateEnabled,
			Assignments: Assignments{Users: IncludeExclude{Include: []string{All}, Exclude: []string{All}}, Applications: IncludeExclude{Include: []string{All}}},
			Grant:       GrantControls{Block: true}},
		{ID: "bad-cond", State: "on", Assignments: allUsers(),
			Conditions: Conditions{
				Locations:    &IncludeExclude{Include: []string{"hq", "mars"}, Exclude: []string{All}},
				DeviceFilter: &DeviceFilter{Mode: "maybe", Rule: "device.platform"},
				SignInRisk:   []string{"extreme"},
				Flows:        []string{"implicit"},
			},
			Grant:   GrantControls{Operator: "xor", Controls: []string{"mfa", "captcha"}, AuthenticationStrength: "password"},
			Session: SessionControls{SignInFrequency: "sometimes", AccessTokenLifetime: "-5m"}},
		{ID: "ok", State: StateEnabled, Assignments: Assignments{Users: IncludeExclude{Include: []string{"bob"}, Exclude: []string{"bob"}}, Applications: IncludeExclude{Include: []string{"a"}, Exclude: []string{"a"}}},
			Conditions: Conditions{DeviceFilter: &DeviceFilter{Mode: FilterInclude, Rule: "device.platform ==="}}},
		{ID: "block-and-grant", State: StateEnabled, Assignments: allUsers(),
			Conditions: Conditions{DeviceFilter: &DeviceFilter{Mode: FilterInclude, Rule: "device.nope == 'x'"}},
			Grant:      GrantControls{Block: true, Controls: []string{"mfa"}}},
	}
	_, err := Compile(pols, locs)
	if err == nil {
		t.Fatal("Compile accepted invalid policies")
	}
	msg := err.Error()
	for _, want := range []string{
		`locations[0].ip_ranges[1]: invalid CIDR "10.0.0.300/8"`,
		`locations[1].id: "trusted" is reserved`,
		`locations[1].countries[0]: invalid ISO 3166-1 alpha-2 code "jp"`,
		`locations[2].id: duplicate location id "hq"`,
		`locations[2]: exactly one of ip_ranges and countries must be set`,
		`policies[1].assignments.users.exclude: excluding "all" leaves nobody`,
		`policies[2].state: must be enabled, report_only or disabled, got "on"`,
		`policies[2].conditions.locations.include[1]: unknown location "mars"`,
		`policies[2].conditions.locations.exclude[0]: excluding "all" leaves no location`,
		`policies[2].conditions.device_filter.mode: must be "include" or "exclude", got "maybe"`,
		`policies[2].conditions.device_filter.rule: rule must be boolean`,
		`policies[2].conditions.sign_in_risk[0]: unknown value "extreme"`,
		`policies[2].conditions.flows[0]: unknown value "implicit"`,
		`policies[2].grant.operator: must be "all" or "any", got "xor"`,
		`policies[2].grant.controls[1]: unknown control "captcha"`,
		`policies[2].grant.authentication_strength: must be "password_totp" or "phishing_resistant", got "password"`,
		`policies[2].session.sign_in_frequency: invalid duration "sometimes"`,
		`policies[2].session.access_token_lifetime: invalid duration "-5m"`,
		`policies[3].id: duplicate policy id "ok"`,
		`policies[3].assignments.users: include and exclude leave nobody`,
		`policies[3].assignments.applications: include and exclude leave no application`,
		`policies[3].conditions.device_filter.rule: invalid CEL`,
		`policies[3]: no grant or session controls`,
		`policies[4].conditions.device_filter.rule: invalid CEL`,
		`policies[4].grant: block cannot be combined with controls`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q", want)
		}
	}
	if n := strings.Count(msg, "\n") + 1; n < 25 {
		t.Errorf("got %d problems, want at least 25:\n%s", n, msg)
	}
	if t.Failed() {
		t.Log(msg)
	}
}

func TestDecodeStrict(t *testing.T) {
	yamlDoc := `
locations:
  - id: hq
    trusted: true
    ip_ranges: [203.0.113.0/24]
policies:
  - id: refresh-trusted-only
    state: enabled
    assignments:
      users: {include: [all], exclude: [breakglass]}
      applications: {include: [all]}
    conditions:
      flows: [refresh]
      locations: {include: [all], exclude: [trusted]}
    grant: {block: true}
`
	set, err := Load([]byte(yamlDoc))
	if err != nil {
		t.Fatal(err)
	}
	d := set.Evaluate(Input{User: UserInput{ID: "u"}, App: AppInput{ClientID: "c"}, Flow: FlowRefresh, IP: netip.MustParseAddr("192.0.2.1")})
	if d.Outcome != OutcomeBlock {
		t.Fatalf("outcome %s", d.Outcome)
	}
	if _, err := Load([]byte(strings.Replace(yamlDoc, "grant: {block: true}", "grant: {blok: true}", 1))); err == nil || !strings.Contains(err.Error(), "blok") {
		t.Errorf("YAML unknown field: %v", err)
	}
	if _, err := Load([]byte(`{"policies": [], "extra": 1}`)); err == nil || !strings.Contains(err.Error(), "extra") {
		t.Errorf("JSON unknown field: %v", err)
	}
	if _, err := Load([]byte(`{"policies": []} {}`)); err == nil {
		t.Error("JSON trailing data accepted")
	}
}

// TestCELCostLimit: a filter that would run a million iterations is stopped
// by the cost limit at once, and the policy fails closed (applies).
func TestCELCostLimit(t *testing.T) {
	list := "[" + strings.TrimSuffix(strings.Repeat("1,", 1000), ",") + "]"
	rule := fmt.Sprintf("%s.all(x, %s.all(y, device.hostname != 'z'))", list, list)
	set, err := Compile([]Policy{{ID: "slow", State: StateEnabled, Assignments: allUsers(),
		Conditions: Conditions{DeviceFilter: &DeviceFilter{Mode: FilterExclude, Rule: rule}},
		Grant:      GrantControls{Block: true}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The cost error shows that evaluation stopped at the limit instead of
	// running the million iterations.
	d := set.Evaluate(Input{User: UserInput{ID: "u"}, App: AppInput{ClientID: "c"}, Device: &DeviceInput{Hostname: "h"}})
	if d.Outcome != OutcomeBlock || !strings.Contains(d.Policies[0].Error, "cost limit") {
		t.Fatalf("want fail-closed block with cost error, got %s %+v", d.Outcome, d.Policies[0])
	}
}

func TestSessionMerge(t *testing.T) {
	p := func(id, freq, atl string, strict bool) Policy {
		return Policy{ID: id, State: StateEnabled, Assignments: allUsers(), Session: SessionControls{SignInFrequency: freq, AccessTokenLifetime: atl, StrictLocation: strict}}
	}
	set, err := Compile([]Policy{p("a", "8h", "1h", false), p("b", "2h", "15m", true), p("c", "", "30m", false)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := set.Evaluate(Input{User: UserInput{ID: "u"}, App: AppInput{ClientID: "c"}})
	want := Session{SignInFrequency: 2 * time.Hour, AccessTokenLifetime: 15 * time.Minute, StrictLocation: true}
	if d.Session != want || d.Outcome != OutcomeAllow {
		t.Fatalf("session %+v outcome %s", d.Session, d.Outcome)
	}
	set, err = Compile([]Policy{p("a", "8h", "", false), p("b", SignInEveryTime, "", false)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := set.Evaluate(Input{User: UserInput{ID: "u"}, App: AppInput{ClientID: "c"}}); !d.Session.SignInEveryTime {
		t.Fatalf("every_time not merged: %+v", d.Session)
	}
}

// A country location matches the country the caller looked up (Input.Country).
func TestCountryLocation(t *testing.T) {
	set, err := Compile([]Policy{{ID: "block-kp", State: StateEnabled, Assignments: allUsers(),
		Conditions: Conditions{Locations: &IncludeExclude{Include: []string{"sanctioned"}}}, Grant: GrantControls{Block: true}}},
		[]NamedLocation{{ID: "sanctioned", Countries: []string{"KP"}}})
	if err != nil {
		t.Fatal(err)
	}
	for ip, country := range map[string]string{
		"203.0.113.9": "JP", "198.51.100.1": "KP", "2001:db8:de::1": "DE", "192.0.2.1": "",
	} {
		d := set.Evaluate(Input{User: UserInput{ID: "u"}, App: AppInput{ClientID: "c"}, IP: netip.MustParseAddr(ip), Country: country})
		if (d.Outcome == OutcomeBlock) != (country == "KP") {
			t.Errorf("%s (%q): outcome %s", ip, country, d.Outcome)
		}
	}
}

// everyProblem is a document with one of each kind of problem.
const everyProblem = `
locations:
  - {id: hq, trusted: true, ip_ranges: [10.0.0.0/8, 10.0.0.0/33, "2001:db8::/129", "2001:db8:zz::/48"], colour: red}
  - {id: lab, ip_ranges: [192.0.2.0/24]}
policies:
  - id: unknown-fields
    state: enabled
    assignments: {users: {include: [all], exlude: [bob]}, applications: {include: [all]}}
    grant: {block: true, blok: true}
  - id: cel-syntax
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {device_filter: {mode: include, rule: "device.platform =="}}
    grant: {block: true}
  - id: cel-not-bool
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {device_filter: {mode: exclude, rule: "device.hostname + 'x'"}}
    grant: {block: true}
  - id: cel-unknown-variable
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {device_filter: {mode: include, rule: "device.serial == 'x'"}}
    grant: {block: true}
  - id: all-minus-all
    state: enabled
    assignments: {users: {include: [all], exclude: [all]}, applications: {include: [all], exclude: [all]}}
    grant: {block: true}
  - id: x-minus-x
    state: enabled
    assignments: {groups: {include: [g], exclude: [g]}, applications: {include: [a, b]}, client_types: [web]}
    grant: {block: true}
  - id: x-minus-x-again
    state: enabled
    assignments: {users: {include: [bob], exclude: [bob]}, applications: {include: [a]}}
    conditions:
      device_platforms: {include: [ios], exclude: [ios]}
      device_state: {include: [compliant], exclude: [registered]}
      locations: {include: [lab, trusted], exclude: [lab, trusted]}
    grant: {block: true}
  - id: unknown-locations
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    conditions: {locations: {include: [mars], exclude: [venus]}}
    grant: {block: true}
`

func TestLoadReportsEveryProblem(t *testing.T) {
	var generic any
	if err := yaml.Unmarshal([]byte(everyProblem), &generic); err != nil {
		t.Fatal(err)
	}
	asJSON, err := json.Marshal(generic)
	if err != nil {
		t.Fatal(err)
	}
	common := []string{
		`locations[0].ip_ranges[1]: invalid CIDR "10.0.0.0/33"`,
		`locations[0].ip_ranges[2]: invalid CIDR "2001:db8::/129"`,
		`locations[0].ip_ranges[3]: invalid CIDR "2001:db8:zz::/48"`,
		`policies[1].conditions.device_filter.rule: invalid CEL`,
		`policies[2].conditions.device_filter.rule: rule must be boolean, is string`,
		`policies[3].conditions.device_filter.rule: invalid CEL`,
		`undeclared reference to 'device'`,
		`policies[4].assignments.users.exclude: excluding "all" leaves nobody`,
		`policies[4].assignments.applications: include and exclude leave no application`,
		`policies[5].assignments.users: include and exclude leave nobody`,
		`policies[5].assignments.client_types[0]: unknown value "web" (want one of public, confidential, browser, native)`,
		`policies[6].assignments.users: include and exclude leave nobody`,
		`policies[6].conditions.device_platforms: include and exclude leave no platform`,
		`policies[6].conditions.device_state: include and exclude leave no device`,
		`policies[6].conditions.locations: include and exclude leave no location`,
		`policies[7].conditions.locations.include[0]: unknown location "mars"`,
		`policies[7].conditions.locations.exclude[0]: unknown location "venus"`,
	}
	for _, tc := range []struct {
		format string
		data   []byte
		want   []string
	}{
		{"yaml", []byte(everyProblem), append([]string{
			`line 3: unknown key "colour" (allowed here: countries, id, ip_ranges, name, trusted)`,
			`line 8: unknown key "exlude" (allowed here: exclude, include)`,
			`line 9: unknown key "blok" (allowed here: authentication_strength, block, controls, operator)`,
		}, common...)},
		{"json", asJSON, append([]string{
			`policy: decode json: locations[0]: unknown field "colour"`,
			`policy: decode json: policies[0].assignments.users: unknown field "exlude"`,
			`policy: decode json: policies[0].grant: unknown field "blok"`,
		}, common...)},
	} {
		_, err := Load(tc.data)
		if err == nil {
			t.Fatalf("%s: accepted", tc.format)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: missing %q", tc.format, w)
			}
		}
		if strings.Contains(err.Error(), "policy.") {
			t.Errorf("%s: the message names a Go type: %v", tc.format, err)
		}
		if t.Failed() {
			t.Logf("%s:\n%v", tc.format, err)
		}
	}
}

// A value of the wrong kind is reported in the file's terms: what the key
// takes, and what it got.
func TestYAMLWrongKindMessages(t *testing.T) {
	for doc, want := range map[string]string{
		"policies:\n  - id: p1\n    assignments:\n      users: [all]\n": "line 4: expected a mapping with the keys exclude, include, got a list",
		"policies:\n  - id: p1\n    assignments: 5\n":                   "line 3: expected a mapping with the keys applications, client_types, groups, users, got a number (5)",
		"policies: {id: p1}\n":                                          "line 1: expected a list, got a mapping",
		"locations:\n  - id: l1\n    trusted: sometimes\n":              "line 3: expected true or false, got a string (sometimes)",
	} {
		_, err := DecodeYAML([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "policy.") {
			t.Errorf("%q: got %v, want %q", doc, err, want)
		}
	}
}

// TestOverlapValid: include/exclude pairs that leave something are valid.
func TestOverlapValid(t *testing.T) {
	_, err := Load([]byte(`
locations:
  - {id: hq, trusted: true, ip_ranges: [10.0.0.0/8]}
  - {id: lab, ip_ranges: [192.0.2.0/24]}
policies:
  - id: a
    state: enabled
    assignments: {users: {include: [all], exclude: [bob]}, groups: {exclude: [g]}, applications: {include: [all], exclude: [x]}}
    conditions:
      device_platforms: {include: [all], exclude: [ios]}
      device_state: {include: [all], exclude: [registered]}
      locations: {include: [trusted, lab], exclude: [hq]}
    grant: {block: true}
  - id: b
    state: enabled
    assignments: {users: {include: [bob]}, groups: {include: [g], exclude: [h]}, applications: {include: [a]}, client_types: [public, native]}
    conditions:
      device_state: {include: [registered], exclude: [compliant]}
      locations: {include: [lab, hq], exclude: [trusted]}
    grant: {block: true}
`))
	if err != nil {
		t.Fatal(err)
	}
}
