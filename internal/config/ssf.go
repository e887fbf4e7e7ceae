package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// SSF tunes the Shared Signals (CAEP) transmitter of `ward serve`
// (docs/ssf.md). Zero values take the defaults shown.
type SSF struct {
	// MaxStreamsPerClient bounds the streams one receiver may create (10).
	MaxStreamsPerClient int `koanf:"max_streams_per_client"`
	// LongPollTimeout is how long a poll without returnImmediately waits
	// for an event (30s).
	LongPollTimeout time.Duration `koanf:"long_poll_timeout"`
	// PollHold is how long a polled SET waits for its acknowledgement
	// before it is returned again (30s).
	PollHold time.Duration `koanf:"poll_hold"`
	// PushMinBackoff and PushMaxBackoff bound the delay between push
	// retries: exponential with jitter (1s, 5m).
	PushMinBackoff time.Duration `koanf:"push_min_backoff"`
	PushMaxBackoff time.Duration `koanf:"push_max_backoff"`
	// PushTimeout bounds one push request (10s).
	PushTimeout time.Duration `koanf:"push_timeout"`
	// DirectWait is how long the request that caused an event waits for
	// the receivers of the SETs pushed before they are written (250ms);
	// what is not acknowledged by then is written to the outbox and
	// delivered from there. Negative: write every SET first.
	DirectWait time.Duration `koanf:"direct_wait"`
	// RescanInterval is how often an instance looks for SETs queued by
	// other instances and renews its push leases (1s).
	RescanInterval time.Duration `koanf:"rescan_interval"`
	// MinVerificationInterval is the streams' min_verification_interval
	// (5s).
	MinVerificationInterval time.Duration `koanf:"min_verification_interval"`
	// PushAllowedNetworks are the non-public networks (CIDRs) push
	// endpoints may be in. Pushes go to public addresses only otherwise:
	// loopback, private, link-local (cloud metadata) and other special
	// ranges are refused, after DNS resolution (SSRF).
	PushAllowedNetworks []string `koanf:"push_allowed_networks"`
	// UserEmailAlias names users in SETs by their email address too (RFC
	// 9493 aliases of iss_sub and email), for receivers that know people
	// by email, such as another Ward (false: iss_sub only; an email is
	// personal data every receiver gets).
	UserEmailAlias bool `koanf:"user_email_alias"`
	// NATS publishes every SET once more to a JetStream stream that
	// resource servers follow directly (package rs/caenats).
	NATS SSFNATS `koanf:"nats"`
}

// DefaultCAEAudience is the "aud" of the SETs in the CAE stream.
const DefaultCAEAudience = "urn:ward:cae:nats"

// SSFNATS configures the CAE stream in NATS (docs/ssf.md, "Direct
// NATS"). It needs bus.driver nats.
type SSFNATS struct {
	// Enabled publishes the stream (true).
	Enabled bool `koanf:"enabled"`
	// Stream and SubjectPrefix name it (WARD_CAE, ward.cae); the subject
	// prefix must not overlap bus.nats.subject_prefix.
	Stream        string `koanf:"stream"`
	SubjectPrefix string `koanf:"subject_prefix"`
	// Audience is the "aud" of its SETs, the Audience of followers'
	// receivers (urn:ward:cae:nats).
	Audience string `koanf:"audience"`
	// MaxAge is how long the stream keeps SETs: at least the longest
	// access-token lifetime, so a resource that starts rebuilds its state
	// by replaying (25h).
	MaxAge time.Duration `koanf:"max_age"`
	// SubscriberNKeys are the public user nkeys (U...) of resource servers
	// allowed to follow the stream through the embedded server's listener
	// (bus.nats.embedded.listen). They get an account holding only this
	// stream and may only read it.
	SubscriberNKeys []string `koanf:"subscriber_nkeys"`
}

// PushNetworks parses ssf.push_allowed_networks (validated).
func (s SSF) PushNetworks() []netip.Prefix {
	var out []netip.Prefix
	for _, n := range s.PushAllowedNetworks {
		if p, err := netip.ParsePrefix(strings.TrimSpace(n)); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// HTTPWriteTimeout bounds the writing of one response of ward serve (the
// server's WriteTimeout): a long poll must answer well before it.
const HTTPWriteTimeout = 60 * time.Second

// maxLongPoll leaves a long poll's answer time to be written.
const maxLongPoll = HTTPWriteTimeout - 10*time.Second

func (c *Config) validateSSFLongPoll(v *validator) {
	if t := c.SSF.LongPollTimeout; t < 0 {
		v.add("ssf.long_poll_timeout", "must not be negative")
	} else if t > maxLongPoll {
		v.add("ssf.long_poll_timeout", "%v is too long: every long poll would outlast the server's %v write timeout and fail; use at most %v", t, HTTPWriteTimeout, maxLongPoll)
	}
}

func (c *Config) validateSSFPush(v *validator) {
	for i, n := range c.SSF.PushAllowedNetworks {
		if _, err := netip.ParsePrefix(strings.TrimSpace(n)); err != nil {
			v.add(fmt.Sprintf("ssf.push_allowed_networks[%d]", i), "%q is not a CIDR (write a single address as 10.0.0.5/32)", n)
		}
	}
}

func (c *Config) validateSSFNATS(v *validator) {
	n := c.SSF.NATS
	if !n.Enabled {
		if len(n.SubscriberNKeys) > 0 {
			v.add("ssf.nats.subscriber_nkeys", "the CAE stream is disabled (ssf.nats.enabled)")
		}
		return
	}
	if c.Bus.Driver != BusNATS {
		if len(n.SubscriberNKeys) > 0 {
			v.add("ssf.nats.subscriber_nkeys", "needs bus.driver nats")
		}
		return
	}
	if !streamNameRE.MatchString(n.Stream) {
		v.add("ssf.nats.stream", "%q is not a stream name (1-64 letters, digits, '_' or '-')", n.Stream)
	} else if n.Stream == c.Bus.NATS.Stream {
		v.add("ssf.nats.stream", "must differ from bus.nats.stream")
	}
	if !subjectPrefixRE.MatchString(n.SubjectPrefix) {
		v.add("ssf.nats.subject_prefix", "%q is not a subject prefix (dot-separated tokens of letters, digits, '_' or '-'; no wildcards)", n.SubjectPrefix)
	} else if prefixOverlap(n.SubjectPrefix, c.Bus.NATS.SubjectPrefix) {
		v.add("ssf.nats.subject_prefix", "overlaps bus.nats.subject_prefix %q", c.Bus.NATS.SubjectPrefix)
	}
	if strings.TrimSpace(n.Audience) == "" {
		v.add("ssf.nats.audience", "required")
	}
	if longest := max(c.Tokens.AccessTokenTTL, c.Tokens.CAEAccessTokenTTL); n.MaxAge < longest {
		v.add("ssf.nats.max_age", "must be at least the longest access-token lifetime (%v), or a restarted resource cannot rebuild its revocation state", longest)
	}
	if len(n.SubscriberNKeys) == 0 {
		return
	}
	for i, k := range n.SubscriberNKeys {
		if !nkeyUserRE.MatchString(k) {
			v.add(fmt.Sprintf("ssf.nats.subscriber_nkeys[%d]", i), "not a public user nkey (U followed by 55 base32 characters)")
		}
	}
	switch {
	case c.Bus.NATS.URL != "":
		v.add("ssf.nats.subscriber_nkeys", "only for the embedded server: give resource users of an external NATS the permissions in docs/ssf.md")
	case c.Bus.NATS.Embedded.Listen == "":
		v.add("ssf.nats.subscriber_nkeys", "needs bus.nats.embedded.listen")
	case c.Bus.NATS.TokenEnv != "":
		v.add("ssf.nats.subscriber_nkeys", "cannot be combined with bus.nats.token_env (NATS checks a token only when no nkeys exist): use bus.nats.embedded.nkeys")
	}
}

// prefixOverlap reports whether subjects under prefixes a and b can
// collide (one is a token-wise prefix of the other).
func prefixOverlap(a, b string) bool {
	return a == b || strings.HasPrefix(a, b+".") || strings.HasPrefix(b, a+".")
}
