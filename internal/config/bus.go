package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

// BusDrivers are the known bus.driver values.
var BusDrivers = []string{BusNATS, BusLocal}

// MinStreamMaxAge is the shortest bus.nats.stream_max_age: JetStream's
// duplicate window (2m), inside which the relay's re-publications are
// recognised by event id, cannot be longer than the stream keeps messages.
const MinStreamMaxAge = 2 * time.Minute

var (
	// JetStream names: printable, no whitespace, no '.', '*', '>' or path
	// separators (they become file and subject names on the server).
	streamNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	// Subject tokens: no wildcards, no whitespace, no empty tokens.
	subjectPrefixRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
	envNameRE       = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	nkeyUserRE      = regexp.MustCompile(`^U[A-Z2-7]{55}$`)
)

func (c *Config) validateBus(v *validator) {
	b := c.Bus
	if !slices.Contains(BusDrivers, b.Driver) {
		v.add("bus.driver", "%q is not one of %s", b.Driver, strings.Join(BusDrivers, ", "))
		return
	}
	if b.Driver != BusNATS {
		return
	}
	n := b.NATS
	external := n.URL != ""
	if external {
		for i, raw := range strings.Split(n.URL.Reveal(), ",") {
			u, err := url.Parse(strings.TrimSpace(raw))
			switch {
			case err != nil:
				// The URL may hold a password: never echo it.
				v.add("bus.nats.url", "entry %d is not a URL", i+1)
			case !slices.Contains([]string{"nats", "tls", "ws", "wss"}, u.Scheme):
				v.add("bus.nats.url", "entry %d: scheme %q is not nats, tls, ws or wss", i+1, u.Scheme)
			case u.Host == "":
				v.add("bus.nats.url", "entry %d has no host", i+1)
			}
		}
	}
	if n.TokenEnv != "" && !envNameRE.MatchString(n.TokenEnv) {
		v.add("bus.nats.token_env", "%q is not an environment variable name", n.TokenEnv)
	}
	if n.CredsFile != "" {
		switch {
		case !external:
			v.add("bus.nats.creds_file", "only for an external NATS (set bus.nats.url)")
		case n.TokenEnv != "":
			v.add("bus.nats.creds_file", "set creds_file or token_env, not both")
		default:
			if st, err := os.Stat(n.CredsFile); err != nil {
				v.add("bus.nats.creds_file", "%v", err)
			} else if st.IsDir() {
				v.add("bus.nats.creds_file", "%s is a directory", n.CredsFile)
			}
		}
	}
	if !streamNameRE.MatchString(n.Stream) {
		v.add("bus.nats.stream", "%q is not a stream name (1-64 letters, digits, '_' or '-')", n.Stream)
	}
	if !subjectPrefixRE.MatchString(n.SubjectPrefix) {
		v.add("bus.nats.subject_prefix", "%q is not a subject prefix (dot-separated tokens of letters, digits, '_' or '-'; no wildcards)", n.SubjectPrefix)
	}
	if n.StreamMaxAge < MinStreamMaxAge {
		v.add("bus.nats.stream_max_age", "must be at least %v, the duplicate window (got %v)", MinStreamMaxAge, n.StreamMaxAge)
	}
	switch {
	case n.Replicas < 1 || n.Replicas > 5:
		v.add("bus.nats.replicas", "must be 1..5 (got %d)", n.Replicas)
	case n.Replicas > 1 && !external:
		v.add("bus.nats.replicas", "the embedded server is a single node: replicas > 1 needs an external cluster (bus.nats.url)")
	}

	e := n.Embedded
	if external {
		if e.Listen != "" {
			v.add("bus.nats.embedded.listen", "only for the embedded server (bus.nats.url is set)")
		}
		if len(e.NKeys) > 0 {
			v.add("bus.nats.embedded.nkeys", "only for the embedded server (bus.nats.url is set)")
		}
		return
	}
	if e.StoreDir == "" {
		v.add("bus.nats.embedded.store_dir", "required")
	}
	for i, k := range e.NKeys {
		if !nkeyUserRE.MatchString(k) {
			v.add(fmt.Sprintf("bus.nats.embedded.nkeys[%d]", i), "not a public user nkey (U followed by 55 base32 characters)")
		}
	}
	if e.Listen != "" {
		if _, port, err := net.SplitHostPort(e.Listen); err != nil || port == "" {
			v.add("bus.nats.embedded.listen", "%q is not host:port", e.Listen)
		}
		switch {
		case n.TokenEnv == "" && len(e.NKeys) == 0 && (!c.SSF.NATS.Enabled || len(c.SSF.NATS.SubscriberNKeys) == 0):
			v.add("bus.nats.embedded.listen", "a listening NATS server needs authentication: set bus.nats.token_env, bus.nats.embedded.nkeys or ssf.nats.subscriber_nkeys")
		case n.TokenEnv != "" && len(e.NKeys) > 0:
			v.add("bus.nats.embedded.nkeys", "set token_env or nkeys, not both")
		}
	}
}
