package policy

import (
	"slices"
	"testing"
)

// A disabled or lost device never satisfies compliant_device or
// registered_device, whatever compliance it carries (Ward stores
// noncompliant for it, but the engine does not rely on that).
func TestInactiveDeviceSatisfiesNoDeviceControl(t *testing.T) {
	set, err := Load([]byte(`
policies:
  - id: compliant
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    grant: {controls: [compliant_device]}
  - id: registered
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [all]}}
    grant: {controls: [registered_device]}
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{"active", "disabled", "lost"} {
		d := set.Evaluate(Input{User: UserInput{ID: "alice"}, App: AppInput{ClientID: "wiki"}, Flow: FlowInteractive,
			Device: &DeviceInput{ID: "d1", Registered: true, Status: st, Compliance: "compliant"}})
		unmet := slices.Contains(d.Controls, ControlCompliantDevice) && slices.Contains(d.Controls, ControlRegisteredDevice)
		if st == "active" && (d.Outcome != OutcomeAllow || len(d.Controls) != 0) {
			t.Errorf("active compliant device: %+v", d)
		}
		if st != "active" && (d.Outcome == OutcomeAllow || !unmet) {
			t.Errorf("%s device that says compliant: outcome %s, unmet %v", st, d.Outcome, d.Controls)
		}
	}
}
