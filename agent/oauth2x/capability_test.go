package oauth2x

import (
	"testing"

	"github.com/ward-idp/ward/agent/internal/cae"
)

// The documented capability is the one the claims requests declare.
func TestCapability(t *testing.T) {
	if Capability != cae.Capability {
		t.Fatalf("Capability %q, claims requests declare %q", Capability, cae.Capability)
	}
}
