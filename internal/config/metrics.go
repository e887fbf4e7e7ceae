package config

import (
	"net"
)

// Metrics configures the Prometheus endpoint of `ward serve`.
//
// It is off unless metrics.listen is set, and it is never served on the
// issuer's listener: the page is unauthenticated and shows how the
// service is attacked and defended (refused proofs, failed sign-ins, risk
// detections, SIEM export lag), which is for operators, not for the
// Internet. A non-loopback metrics.listen must be acknowledged with
// metrics.allow_remote (a Prometheus on another host or pod), and is then
// for a network only the monitoring system reaches.
type Metrics struct {
	// Listen is host:port of the metrics listener ("": no metrics).
	Listen string `koanf:"listen"`
	// AllowRemote permits a Listen address that is not loopback.
	AllowRemote bool `koanf:"allow_remote"`
}

func (c *Config) validateMetrics(v *validator) {
	m := c.Metrics
	if m.Listen == "" {
		return
	}
	host, port, err := net.SplitHostPort(m.Listen)
	if err != nil || port == "" {
		v.add("metrics.listen", "%q is not host:port", m.Listen)
		return
	}
	if m.Listen == c.Listen {
		v.add("metrics.listen", "must differ from listen: metrics are never served on the issuer's port")
	}
	if !IsLoopbackHost(host) && !m.AllowRemote {
		v.add("metrics.listen", "%q is not a loopback address; set metrics.allow_remote to serve metrics to other hosts (and let only the monitoring network reach it)", m.Listen)
	}
}
