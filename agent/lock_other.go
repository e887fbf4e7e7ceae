//go:build !(linux || darwin || freebsd || openbsd || netbsd || dragonfly)

package agent

import "context"

// lockFile is a no-op where flock is unavailable: refreshes are still
// serialised within one process, but two agent processes refreshing at the
// same moment could present the same refresh token.
func lockFile(context.Context, string) (func(), error) { return func() {}, nil }
