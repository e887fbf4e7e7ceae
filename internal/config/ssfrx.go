package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// SSFReceiver is one external Shared Signals transmitter Ward receives
// Security Event Tokens from (another IdP, an EDR, a CASB): Ward creates
// its stream there and records each verified SET as an ssf.signal_received
// event (docs/ssf.md, "Receiving signals").
type SSFReceiver struct {
	// Name identifies the receiver: its stream record, its push endpoint
	// (/ssf/receive/<name>) and the events it records. Renaming it creates
	// a new stream.
	Name string `koanf:"name"`
	// Issuer is the transmitter's issuer: the iss of its SETs, and where
	// its configuration is found (<issuer>/.well-known/ssf-configuration,
	// SSF 1.0 §7.2) unless ConfigurationURL names it.
	Issuer           string `koanf:"issuer"`
	ConfigurationURL string `koanf:"configuration_url"`
	// Delivery is push (RFC 8935: the transmitter posts to Ward) or poll
	// (RFC 8936: Ward asks; the default).
	Delivery string `koanf:"delivery"`
	// Audience is the aud Ward requires of SETs (its issuer when empty);
	// the aud the transmitter reports for Ward's stream is accepted too.
	Audience string `koanf:"audience"`
	// EventsRequested are the event type URIs Ward asks for (empty: the
	// CAEP and RISC events Ward knows).
	EventsRequested []string `koanf:"events_requested"`
	// Description is the stream's description at the transmitter.
	Description string `koanf:"description"`
	// Auth is how Ward authenticates to the transmitter's stream
	// management and poll endpoints.
	Auth SSFReceiverAuth `koanf:"auth"`
	// Subjects says which Ward user each subject format names.
	Subjects SSFSubjectMapping `koanf:"subjects"`
	// Algorithms are the JWS algorithms accepted for SETs (ES256, ES384,
	// PS256, RS256 and EdDSA when empty); none and HMAC never are.
	Algorithms []string `koanf:"algorithms"`
	// MaxAge is how old (by iat) a SET may be (24h); ClockSkew how far in
	// the future (2m).
	MaxAge    time.Duration `koanf:"max_age"`
	ClockSkew time.Duration `koanf:"clock_skew"`
	// AllowedNetworks are the non-public networks (CIDRs) the transmitter
	// may be in: requests go to public addresses only otherwise (SSRF), as
	// pushes do (ssf.push_allowed_networks).
	AllowedNetworks []string `koanf:"allowed_networks"`
}

// SSFReceiverAuth is the credential for a transmitter: a bearer token
// from a file or the environment, or an OAuth client (client credentials
// grant at TokenURL) whose secret comes from a file or the environment.
// Secrets are never in the configuration file itself, nor in logs.
type SSFReceiverAuth struct {
	TokenFile string `koanf:"token_file"`
	TokenEnv  string `koanf:"token_env"`

	ClientID         string   `koanf:"client_id"`
	ClientSecretFile string   `koanf:"client_secret_file"`
	ClientSecretEnv  string   `koanf:"client_secret_env"`
	TokenURL         string   `koanf:"token_url"`
	Scopes           []string `koanf:"scopes"`
}

// Subject mapping targets: which attribute of a Ward user a subject's
// value is compared with.
const (
	SubjectMapID       = "id"
	SubjectMapUsername = "username"
	SubjectMapEmail    = "email"
	SubjectMapNone     = "none"
)

// SSFSubjectMapping maps subject identifier formats (RFC 9493) to Ward
// users. An iss_sub whose iss is Ward's own issuer always names a Ward
// user by id, and an opaque session member a Ward session by id.
type SSFSubjectMapping struct {
	// Email compares an email subject with users' email (email).
	Email string `koanf:"email"`
	// IssSub compares the sub of an iss_sub with the transmitter's issuer
	// as iss (none).
	IssSub string `koanf:"iss_sub"`
	// Opaque compares an opaque user subject's id (none).
	Opaque string `koanf:"opaque"`
}

// Receiver delivery values.
const (
	SSFDeliveryPush = "push"
	SSFDeliveryPoll = "poll"
)

// ssfReceiverAlgs are the algorithms ssf_receivers[].algorithms may list.
var ssfReceiverAlgs = []string{"ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "EdDSA"}

var receiverNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// AllowedNetworkPrefixes parses allowed_networks (validated).
func (r SSFReceiver) AllowedNetworkPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, n := range r.AllowedNetworks {
		if p, err := netip.ParsePrefix(strings.TrimSpace(n)); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func (c *Config) validateSSFReceivers(v *validator) {
	seen := map[string]int{}
	for i, r := range c.SSFReceivers {
		p := fmt.Sprintf("ssf_receivers[%d]", i)
		switch j, dup := seen[r.Name]; {
		case !receiverNameRE.MatchString(r.Name):
			v.add(p+".name", "%q is not a receiver name (1-64 letters, digits, '_' or '-')", r.Name)
		case dup:
			v.add(p+".name", "%q is also used by ssf_receivers[%d]", r.Name, j)
		default:
			seen[r.Name] = i
		}
		checkURL := func(field, raw string, required bool) {
			if raw == "" {
				if required {
					v.add(p+field, "required")
				}
				return
			}
			u, err := url.Parse(raw)
			switch {
			case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
				v.add(p+field, "%q is not an absolute http(s) URL", raw)
			case u.Scheme == "http" && !loopbackHost(u.Hostname()):
				v.add(p+field, "%q must use https (http only on loopback)", raw)
			case u.RawQuery != "" || u.Fragment != "":
				v.add(p+field, "%q must have no query or fragment", raw)
			}
		}
		checkURL(".issuer", r.Issuer, true)
		checkURL(".configuration_url", r.ConfigurationURL, false)
		if r.Delivery != "" && r.Delivery != SSFDeliveryPush && r.Delivery != SSFDeliveryPoll {
			v.add(p+".delivery", "%q is not push or poll", r.Delivery)
		}
		for j, e := range r.EventsRequested {
			if u, err := url.Parse(e); err != nil || !u.IsAbs() {
				v.add(fmt.Sprintf("%s.events_requested[%d]", p, j), "%q is not an event type URI", e)
			}
		}
		a := r.Auth
		static := a.TokenFile != "" || a.TokenEnv != ""
		switch {
		case a.TokenFile != "" && a.TokenEnv != "":
			v.add(p+".auth", "token_file and token_env are exclusive")
		case static && a.ClientID != "":
			v.add(p+".auth", "a bearer token (token_file, token_env) or a client (client_id), not both")
		case !static && a.ClientID == "":
			v.add(p+".auth", "required: token_file, token_env, or client_id with a secret and token_url")
		case a.ClientID != "":
			if (a.ClientSecretFile == "") == (a.ClientSecretEnv == "") {
				v.add(p+".auth", "client_id needs one of client_secret_file and client_secret_env")
			}
			checkURL(".auth.token_url", a.TokenURL, true)
		}
		for _, fm := range [][2]string{{"email", r.Subjects.Email}, {"iss_sub", r.Subjects.IssSub}, {"opaque", r.Subjects.Opaque}} {
			field, m := fm[0], fm[1]
			if m != "" && !slices.Contains([]string{SubjectMapID, SubjectMapUsername, SubjectMapEmail, SubjectMapNone}, m) {
				v.add(p+".subjects."+field, "%q is not id, username, email or none", m)
			}
		}
		for j, alg := range r.Algorithms {
			if !slices.Contains(ssfReceiverAlgs, alg) {
				v.add(fmt.Sprintf("%s.algorithms[%d]", p, j), "%q is not one of %s (none and HMAC are never accepted)", alg, strings.Join(ssfReceiverAlgs, ", "))
			}
		}
		if r.MaxAge < 0 || r.ClockSkew < 0 || r.ClockSkew > 10*time.Minute {
			v.add(p, "max_age must not be negative, clock_skew 0..10m")
		}
		for j, n := range r.AllowedNetworks {
			if _, err := netip.ParsePrefix(strings.TrimSpace(n)); err != nil {
				v.add(fmt.Sprintf("%s.allowed_networks[%d]", p, j), "%q is not a CIDR (write a single address as 10.0.0.5/32)", n)
			}
		}
	}
}

func loopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(h)
	return err == nil && ip.IsLoopback()
}
