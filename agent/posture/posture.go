// Package posture collects a device's security posture (its health:
// disk encryption, admin rights, anti-malware, firewall, Secure Boot,
// screen lock …) on the machine the device agent runs on, and signs it for
// the server.
//
// Collectors answer Yes or No only from evidence they actually read and
// never guess Yes; whatever they cannot establish is Unknown, with a
// short reason in [Posture.Evidence]. The agent collects with
// [NewCollector] (a [LinuxCollector] on Linux, a [GenericCollector]
// elsewhere for now) and signs the result with the device key and a
// server nonce using [SignReport].
//
// The posture and the report are the wire format of package
// github.com/ward-idp/ward/posture, which the server uses to verify
// reports; the types and constants below are that package's, named here
// for collector code.
package posture

import (
	"context"
	"crypto"
	"os"
	"runtime"
	"time"

	wire "github.com/ward-idp/ward/posture"
)

// The wire format's types (package github.com/ward-idp/ward/posture).
type (
	Posture = wire.Posture
	State   = wire.State
	Seconds = wire.Seconds
)

// The three states.
const (
	Yes     = wire.Yes
	No      = wire.No
	Unknown = wire.Unknown
)

// Field names (the JSON names), also the keys of Posture.Evidence.
const (
	FieldPlatform                = wire.FieldPlatform
	FieldOSName                  = wire.FieldOSName
	FieldOSVersion               = wire.FieldOSVersion
	FieldKernel                  = wire.FieldKernel
	FieldHostname                = wire.FieldHostname
	FieldDiskEncrypted           = wire.FieldDiskEncrypted
	FieldUserIsAdmin             = wire.FieldUserIsAdmin
	FieldAntiMalwarePresent      = wire.FieldAntiMalwarePresent
	FieldAntiMalwareSignatureAge = wire.FieldAntiMalwareSignatureAge
	FieldFirewallEnabled         = wire.FieldFirewallEnabled
	FieldSecureBoot              = wire.FieldSecureBoot
	FieldScreenLock              = wire.FieldScreenLock
	FieldRooted                  = wire.FieldRooted
	FieldCollectedAt             = wire.FieldCollectedAt
)

// Limits on report content (wire.Posture.Validate), which collectors
// truncate to.
const (
	MaxStringLen   = wire.MaxStringLen
	MaxEvidenceLen = wire.MaxEvidenceLen
)

// SecondsOf returns d rounded down to whole seconds (wire.SecondsOf).
func SecondsOf(d time.Duration) *Seconds { return wire.SecondsOf(d) }

// SignReport makes the signed posture report of p for the server
// (wire.SignReport): key is the device key (an ECDSA P-256 crypto.Signer
// such as a keystore.Key), nonce the one-time value the server handed out.
func SignReport(key crypto.Signer, p *Posture, deviceID, nonce string, now time.Time) (string, error) {
	return wire.SignReport(key, p, deviceID, nonce, now)
}

// Collector gathers the current posture of the machine it runs on.
type Collector interface {
	Collect(ctx context.Context) (*Posture, error)
}

// NewCollector returns the collector for the running platform: a
// LinuxCollector reading the real system on Linux, a GenericCollector
// elsewhere.
func NewCollector() Collector {
	if runtime.GOOS == "linux" {
		return &LinuxCollector{}
	}
	return &GenericCollector{}
}

// GenericCollector reports the platform and host name and Unknown for
// every health fact, with evidence saying so. It is what darwin and
// windows get until they have collectors of their own.
type GenericCollector struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Collect implements Collector.
func (c *GenericCollector) Collect(ctx context.Context) (*Posture, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	p := &Posture{Platform: runtime.GOOS, CollectedAt: now().UTC(), Evidence: map[string]string{}}
	p.Hostname, _ = os.Hostname()
	p.Normalize()
	for _, f := range wire.StateFields() {
		p.Evidence[f] = "not collected on " + runtime.GOOS + " yet"
	}
	return p, nil
}
