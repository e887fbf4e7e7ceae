package config

import "time"

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
	// RescanInterval is how often an instance looks for SETs queued by
	// other instances and renews its push leases (1s).
	RescanInterval time.Duration `koanf:"rescan_interval"`
	// MinVerificationInterval is the streams' min_verification_interval
	// (5s).
	MinVerificationInterval time.Duration `koanf:"min_verification_interval"`
}
