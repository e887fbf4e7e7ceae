// Package interop holds interoperability tests: independent OAuth client
// libraries (oauth4webapi on Node.js, golang.org/x/oauth2 with Ward's dpop
// package) complete Ward's flows against a real instance started with
// internal/wardtest. It has no non-test code. See docs/interop.md.
package interop
