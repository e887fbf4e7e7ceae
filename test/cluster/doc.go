// Package cluster holds the scale-out test: three `ward serve` replicas
// (the built binary, as child processes on loopback addresses) on
// PostgreSQL and a three-node NATS JetStream cluster (nats-server, started
// by the test with its own ports, storage and cluster routes), behind a
// round-robin reverse proxy with health checks. A mixed load runs through
// the proxy while replicas and NATS nodes are killed with SIGKILL and
// restarted; invariants are checked afterwards and client-visible errors
// reported. It has no non-test code. See docs/deploy.md.
package cluster
