//go:build !unix

package main

// lockServerStore is a no-op where flock is unavailable (the server takes
// no lock there either).
func lockServerStore(string) (func(), error) { return func() {}, nil }
