package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Passkeys configures WebAuthn: passkeys and security keys
// (docs/passkeys.md). Zero values take the defaults shown.
type Passkeys struct {
	// Disabled turns passkeys off (they are on by default).
	Disabled bool `koanf:"disabled"`
	// RPID is the WebAuthn relying party id (the issuer's host name). It
	// may be a registrable suffix of that host (example.com for
	// id.example.com); credentials are bound to it for good.
	RPID string `koanf:"rp_id"`
	// RPName is the name authenticators show ("Ward").
	RPName string `koanf:"rp_name"`
	// Origins are the web origins the sign-in pages are served from (the
	// issuer's origin).
	Origins []string `koanf:"origins"`
	// Timeout bounds a ceremony: how long a page's challenge stays valid
	// (5m).
	Timeout time.Duration `koanf:"timeout"`
	// Attestation is "none" (default: any authenticator, nothing asked)
	// or "allow_list": only authenticators whose AAGUID is in
	// AllowedAAGUIDs and whose attestation verifies against MetadataFile.
	Attestation string `koanf:"attestation"`
	// AllowedAAGUIDs are the authenticator models accepted under
	// allow_list (UUIDs, as the FIDO metadata service lists them).
	AllowedAAGUIDs []string `koanf:"allowed_aaguids"`
	// MetadataFile is the FIDO Metadata Service BLOB (the signed JWT from
	// mds3.fidoalliance.org) the operator downloads; required with
	// allow_list.
	MetadataFile string `koanf:"metadata_file"`
	// RecoveryFallback is what a user who lost every passkey can do
	// without an administrator when a phishing-resistant sign-in is
	// required: "none" (default: an administrator resets the passkeys,
	// ward user passkeys reset) or "recovery_code": a one-time recovery
	// code (of the TOTP factor) opens My account to add a new passkey,
	// audited as passkey.recovery and raising the user's risk; it does
	// not satisfy the application's requirement.
	RecoveryFallback string `koanf:"recovery_fallback"`
}

// PasskeyRPID returns the relying party id: rp_id, or the issuer's host.
func (c *Config) PasskeyRPID() string {
	if c.Passkeys.RPID != "" {
		return c.Passkeys.RPID
	}
	if u, err := url.Parse(c.Issuer); err == nil {
		return u.Hostname()
	}
	return ""
}

// PasskeyOrigins returns the origins: origins, or the issuer's.
func (c *Config) PasskeyOrigins() []string {
	if len(c.Passkeys.Origins) > 0 {
		return c.Passkeys.Origins
	}
	if u, err := url.Parse(c.Issuer); err == nil && u.Host != "" {
		return []string{u.Scheme + "://" + u.Host}
	}
	return nil
}

// PasskeysOff says why passkeys cannot be offered with this
// configuration ("" when they can): turned off, or an issuer browsers
// refuse WebAuthn on (an IP address is not a relying party id; a
// non-local http origin is not a secure context). Set passkeys.rp_id and
// passkeys.origins, or use a host name, to have them.
func (c *Config) PasskeysOff() string {
	if c.Passkeys.Disabled {
		return "passkeys.disabled is set"
	}
	if why := rpIDProblem(c.PasskeyRPID()); why != "" {
		return why
	}
	for _, o := range c.PasskeyOrigins() {
		if why := originProblem(o, c.PasskeyRPID()); why != "" {
			return why
		}
	}
	return ""
}

func rpIDProblem(rp string) string {
	if rp == "" || strings.ContainsAny(rp, ":/ []") {
		return fmt.Sprintf("%q is not a host name", rp)
	}
	if _, err := netip.ParseAddr(rp); err == nil {
		return fmt.Sprintf("%q is an IP address: a WebAuthn relying party id is a host name (use localhost or a domain)", rp)
	}
	return ""
}

func originProblem(o, rp string) string {
	u, err := url.Parse(o)
	switch {
	case err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "":
		return fmt.Sprintf("%q is not an origin (scheme://host[:port])", o)
	case u.Scheme != "https" && !(u.Scheme == "http" && u.Hostname() == "localhost"):
		return fmt.Sprintf("%q: browsers allow WebAuthn on https origins (and http://localhost) only", o)
	case u.Hostname() != rp && !strings.HasSuffix(u.Hostname(), "."+rp):
		return fmt.Sprintf("%q is not on the relying party id %q or below it", o, rp)
	}
	return ""
}

// validatePasskeys checks what the operator set; defaults derived from an
// issuer that cannot have passkeys turn them off instead (PasskeysOff).
func (c *Config) validatePasskeys(v *validator) {
	p := c.Passkeys
	if p.Disabled {
		return
	}
	if p.RPID != "" {
		if why := rpIDProblem(p.RPID); why != "" {
			v.add("passkeys.rp_id", "%s", why)
		}
	}
	for i, o := range p.Origins {
		if why := originProblem(o, c.PasskeyRPID()); why != "" {
			v.add(fmt.Sprintf("passkeys.origins[%d]", i), "%s", why)
		}
	}
	if p.Timeout < 0 || p.Timeout > time.Hour {
		v.add("passkeys.timeout", "must be between 0 (default 5m) and 1h")
	}
	switch p.Attestation {
	case "", "none":
		if len(p.AllowedAAGUIDs) > 0 || p.MetadataFile != "" {
			v.add("passkeys.attestation", "allowed_aaguids and metadata_file need attestation: allow_list")
		}
	case "allow_list":
		if len(p.AllowedAAGUIDs) == 0 {
			v.add("passkeys.allowed_aaguids", "required with attestation: allow_list")
		}
		if p.MetadataFile == "" {
			v.add("passkeys.metadata_file", "required with attestation: allow_list (an AAGUID without a verified attestation is only the authenticator's claim)")
		} else if st, err := os.Stat(p.MetadataFile); err != nil {
			v.add("passkeys.metadata_file", "%v", err)
		} else if st.IsDir() {
			v.add("passkeys.metadata_file", "%s is a directory", p.MetadataFile)
		}
	default:
		v.add("passkeys.attestation", "%q is not none or allow_list", p.Attestation)
	}
	switch p.RecoveryFallback {
	case "", "none", "recovery_code":
	default:
		v.add("passkeys.recovery_fallback", "%q is not none or recovery_code", p.RecoveryFallback)
	}
	for i, a := range p.AllowedAAGUIDs {
		if _, err := uuid.Parse(a); err != nil {
			v.add(fmt.Sprintf("passkeys.allowed_aaguids[%d]", i), "%q is not a UUID", a)
		}
	}
}
