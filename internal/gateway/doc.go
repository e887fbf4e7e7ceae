// Package gateway is `ward gateway`: a reverse proxy that protects any HTTP
// application with Ward's DPoP-bound access tokens, built on the public rs
// package.
//
// Each route maps a path prefix to an upstream, an audience and required
// scopes. Before a request is proxied, rs validates the token and its DPoP
// proof for the route and applies the Continuous Access Evaluation state
// fed by an SSF stream (push or poll) or by Ward's CAE stream in NATS
// (rs/caenats; the gateway is ready only once it has been replayed);
// rejections carry rs's challenges unchanged. The upstream never sees the
// token or the proof: it gets the verified identity in Ward-Identity, a
// short-lived ES256 JWS signed with the gateway's own key (published at
// /.well-known/ward/gateway-jwks.json), plus plain Ward-Subject,
// Ward-Client-Id and Ward-Scope headers; any Ward-* header the client sent
// is removed first.
//
// The gateway serves /healthz, /readyz and Prometheus /metrics, and reloads
// its routes on SIGHUP or when the configuration file changes, swapping
// the route table atomically so that running requests finish on the table
// they started with. See docs/gateway.md.
package gateway
