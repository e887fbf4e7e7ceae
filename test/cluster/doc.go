// Package cluster holds the scale-out test: three `ward serve` replicas
// (the built binary, as child processes on loopback addresses) on a
// PostgreSQL instance of the test's own and a three-node NATS JetStream
// cluster, behind a round-robin reverse proxy with health checks, with
// two `ward gateway` instances following the CAE stream and two SSF
// receivers (push and poll, on the public rs package). A mixed load runs
// while replicas, gateways, NATS nodes (the meta leader among them) are
// killed with SIGKILL, a replica is stalled with SIGSTOP and PostgreSQL
// is stopped and started; invariants are checked afterwards and the
// client-visible errors of each fault bounded. It has no non-test code.
// See docs/deploy.md.
package cluster
