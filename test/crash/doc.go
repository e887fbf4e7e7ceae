// Package crash holds crash tests: the real `ward` binary is built, run
// as a child process on a temporary data directory, killed with SIGKILL
// in the middle of a workload and started again, and what it promised
// before the kill is checked afterwards. It has no non-test code. See
// docs/ssf.md (Crash durability).
package crash
