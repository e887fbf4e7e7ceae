package authz

import "testing"

// Ward's acr order: password < mfa < phishing_resistant; unknown values
// meet nothing and are met by nothing.
func TestACROrder(t *testing.T) {
	for _, tc := range []struct {
		have, want string
		ok         bool
	}{
		{ACRPhishingResistant, ACRMFA, true}, {ACRPhishingResistant, ACRPassword, true}, {ACRMFA, ACRMFA, true},
		{ACRMFA, ACRPhishingResistant, false}, {ACRPassword, ACRMFA, false}, {"urn:other", ACRPassword, false},
		{ACRPhishingResistant, "urn:other", false}, {"", ACRPassword, false},
	} {
		if got := ACRAtLeast(tc.have, tc.want); got != tc.ok {
			t.Errorf("ACRAtLeast(%q, %q) = %v, want %v", tc.have, tc.want, got, tc.ok)
		}
	}
	pr := &Claims{ACR: []string{ACRPhishingResistant}}
	mfa := &Claims{ACR: []string{ACRMFA}}
	if !pr.WantsPhishingResistant() || pr.WantsMFA() || !pr.WantsStepUp() || mfa.WantsPhishingResistant() || !mfa.WantsMFA() {
		t.Error("step-up classification of acr requests")
	}
	if !mfa.ACRMet(ACRPhishingResistant) || pr.ACRMet(ACRMFA) {
		t.Error("ACRMet across the order")
	}
}
