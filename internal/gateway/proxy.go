package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ward-idp/ward/rs"
)

// Identity headers set for the upstream. Every incoming header whose name
// starts with "Ward-" (or "Ward_") is removed first.
const (
	HeaderIdentity = "Ward-Identity"
	HeaderSubject  = "Ward-Subject"
	HeaderClientID = "Ward-Client-Id"
	HeaderScope    = "Ward-Scope"
)

// table is one generation of the reloadable configuration: the routes and
// the settings the proxying path reads. It is never modified once stored.
type table struct {
	externalURL string
	trusted     []netip.Prefix
	routes      []*route // longest prefix first
}

type route struct {
	name     string
	prefix   string
	upstream *url.URL
	aud      string // Ward-Identity aud: the upstream URL as configured
	scopes   []string
	strip    bool
	v        *rs.Validator
	proxy    *httputil.ReverseProxy
	m        *routeMetrics
}

// buildTable makes the route table of cfg, sharing the gateway's key set,
// revocation state, replay cache, usage reporter and transport.
func (g *Gateway) buildTable(cfg *Config) (*table, error) {
	t := &table{externalURL: cfg.ExternalURL, trusted: cfg.trusted}
	var errs []error
	for i, rc := range cfg.Routes {
		v, err := rs.New(rs.Config{
			Issuer:           g.base.Issuer,
			Audience:         rc.Audience,
			Keys:             g.keys,
			Now:              g.opts.Now,
			MaxTokenLifetime: g.base.MaxTokenLifetime,
			Replay:           g.replay,
			ExternalURL:      cfg.ExternalURL,
			State:            g.state,
			Usage:            g.usage,
			TrustedProxies:   cfg.trusted,
			Logger:           g.log,
		})
		if err != nil {
			errs = append(errs, &FieldError{Path: fmt.Sprintf("routes[%d]", i), Msg: err.Error()})
			continue
		}
		r := &route{
			name: rc.Name, prefix: rc.PathPrefix, upstream: cfg.routeURLs[i], aud: rc.Upstream,
			scopes: slices.Clone(rc.Scopes), strip: rc.StripPrefix, v: v, m: g.metrics.route(rc.Name),
		}
		r.proxy = g.newProxy(t, r)
		t.routes = append(t.routes, r)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	slices.SortStableFunc(t.routes, func(a, b *route) int { return len(b.prefix) - len(a.prefix) })
	return t, nil
}

// match returns the route with the longest prefix that p is under.
func (t *table) match(p string) *route {
	for _, r := range t.routes {
		if pathUnder(r.prefix, p) {
			return r
		}
	}
	return nil
}

// canonicalPath reports whether the decoded path p is one an upstream
// cannot read differently from the gateway: absolute, no empty, "." or
// ".." segments (a trailing slash is fine), no backslash and no control
// characters. Routing on anything else could let "/public/../admin" reach
// the admin upstream under the public route's rules.
func canonicalPath(p string) bool {
	if !strings.HasPrefix(p, "/") {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c < 0x20 || c == 0x7f || c == '\\' {
			return false
		}
	}
	segs := strings.Split(p[1:], "/")
	for i, s := range segs {
		if s == "." || s == ".." || (s == "" && i != len(segs)-1) {
			return false
		}
	}
	return true
}

// ServeHTTP serves the gateway's own endpoints and proxies everything else.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == PathHealthz:
		g.serveHealth(w, r, true, "")
		return
	case p == PathReadyz:
		why := g.notReady()
		g.serveHealth(w, r, why == "", why)
		return
	case p == PathMetrics && g.base.MetricsListen == "":
		g.metrics.ServeHTTP(w, r)
		return
	case p == PathJWKS:
		g.serveJWKS(w, r)
		return
	case g.push != nil && p == g.base.SSF.PushPath:
		g.push.ServeHTTP(w, r)
		return
	}
	g.proxyRequest(w, r)
}

func (g *Gateway) serveHealth(w http.ResponseWriter, r *http.Request, ok bool, why string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSONError(w, http.StatusMethodNotAllowed, "invalid_request", "use GET")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "{\"status\":\"unavailable\",\"reason\":%q}\n", why)
		return
	}
	fmt.Fprint(w, "{\"status\":\"ok\"}\n")
}

func (g *Gateway) serveJWKS(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSONError(w, http.StatusMethodNotAllowed, "invalid_request", "use GET")
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(g.signer.jwks)
}

type ctxKey struct{}

// forward is what the handler hands to the proxy's Rewrite.
type forward struct {
	identity string
	tok      *rs.TokenInfo
	clientIP string
	trusted  bool // the peer is a trusted proxy
}

func (g *Gateway) proxyRequest(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	t := g.table.Load() // this request's table, whatever reloads happen
	if !canonicalPath(r.URL.Path) {
		g.metrics.unrouted.inc(unroutedBadPath)
		writeJSONError(w, http.StatusBadRequest, "invalid_request", "the request path is not in canonical form (empty, . or .. segments, backslashes or control characters)")
		return
	}
	rt := t.match(r.URL.Path)
	if rt == nil {
		g.metrics.unrouted.inc(unroutedNoRoute)
		writeJSONError(w, http.StatusNotFound, "not_found", "no route for this path")
		return
	}
	g.metrics.inFlight.Add(1)
	defer g.metrics.inFlight.Add(-1)
	defer rt.m.observeSince(start)

	if !g.caeReady.Load() {
		// ssf.mode nats before the replay caught up: a token revoked
		// before the gateway started would pass.
		rt.m.rejected(reasonCAEReplay)
		w.Header().Set("Retry-After", "5")
		writeJSONError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "the gateway is still replaying the CAE stream; retry later")
		return
	}
	tok, err := rt.v.Authenticate(r, rt.scopes...)
	if err != nil {
		reason := "unknown"
		var re *rs.Error
		if errors.As(err, &re) {
			reason = re.Reason
		}
		rt.m.rejected(reason)
		rt.v.WriteError(w, err) // rs's status, WWW-Authenticate and body, unchanged
		return
	}
	now := g.opts.Now()
	id, err := g.signer.sign(&IdentityClaims{
		Issuer: t.externalURL, Audience: rt.aud, Subject: tok.Subject, ClientID: tok.ClientID,
		SessionID: tok.SessionID, DeviceID: tok.DeviceID, Scope: strings.Join(tok.Scopes, " "),
		IssuedAt: now.Unix(), ExpiresAt: now.Add(IdentityLifetime).Unix(), JTI: newJTI(),
	})
	if err != nil {
		rt.m.rejected("identity_signing_failed")
		g.log.Error("gateway: cannot sign Ward-Identity", "route", rt.name, "err", err)
		writeJSONError(w, http.StatusInternalServerError, "server_error", "the gateway could not sign the identity assertion")
		return
	}
	rt.m.allowed()
	ip, trusted := clientIP(r, t.trusted), rs.TrustedPeer(r, t.trusted)
	f := &forward{identity: id, tok: tok, clientIP: ip, trusted: trusted}
	rt.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, f)))
}

// newProxy returns the reverse proxy of route r of table t.
func (g *Gateway) newProxy(t *table, r *route) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Transport:  g.transport,
		BufferPool: copyBuffers,
		// ReverseProxy removes hop-by-hop headers (and those named in
		// Connection) and the client's Forwarded / X-Forwarded-* headers
		// before Rewrite, so what Rewrite sets reaches the upstream.
		Rewrite: func(pr *httputil.ProxyRequest) {
			f, _ := pr.In.Context().Value(ctxKey{}).(*forward)
			out := pr.Out
			if r.strip {
				stripPrefix(out.URL, r.prefix)
			}
			pr.SetURL(r.upstream)
			h := out.Header
			// The upstream must never see the token or the proof.
			h.Del("Authorization")
			h.Del("Dpop")
			// Nothing the client sends may look like the gateway's identity
			// headers, whatever the spelling (some frameworks read
			// Ward_Subject and Ward-Subject as the same CGI variable).
			for k := range h {
				if isWardHeader(k) {
					delete(h, k)
				}
			}
			h.Del("X-Real-Ip")
			if f == nil { // cannot happen: proxyRequest always sets it
				return
			}
			xff := f.clientIP
			peer := peerAddr(pr.In)
			if f.trusted {
				// Keep the chain the trusted proxies built, add our peer.
				if prior := strings.Join(pr.In.Header.Values("X-Forwarded-For"), ", "); prior != "" {
					xff = prior + ", " + peer
				} else {
					xff = peer
				}
			}
			h.Set("X-Forwarded-For", xff)
			h.Set("X-Real-Ip", f.clientIP)
			proto := "http"
			if pr.In.TLS != nil {
				proto = "https"
			}
			host := pr.In.Host
			if f.trusted {
				if p := pr.In.Header.Get("X-Forwarded-Proto"); p == "http" || p == "https" {
					proto = p
				}
				if fh := pr.In.Header.Get("X-Forwarded-Host"); fh != "" {
					host = fh
				}
			}
			h.Set("X-Forwarded-Proto", proto)
			h.Set("X-Forwarded-Host", host)
			h.Set(HeaderIdentity, f.identity)
			h.Set(HeaderSubject, f.tok.Subject)
			h.Set(HeaderClientID, f.tok.ClientID)
			h.Set(HeaderScope, strings.Join(f.tok.Scopes, " "))
		},
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			if req.Context().Err() == nil {
				r.m.upstreamErrors.Inc()
				g.log.Warn("gateway: upstream error", "route", r.name, "upstream", r.upstream.Host, "err", upstreamErr(err))
			}
			writeJSONError(w, http.StatusBadGateway, "bad_gateway", "the upstream did not answer")
		},
		ErrorLog: slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
}

// bufferPool lends ReverseProxy its 32 KiB copy buffers (it would
// allocate one per response otherwise).
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte    { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }

var copyBuffers = &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

// upstreamErr drops the URL from a transport error: its query string is
// the client's and may hold anything.
func upstreamErr(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}

// isWardHeader reports whether a header name is in the Ward- namespace,
// comparing case-insensitively and reading "_" as "-".
func isWardHeader(k string) bool {
	if len(k) < 5 {
		return false
	}
	return strings.EqualFold(k[:4], "ward") && (k[4] == '-' || k[4] == '_')
}

// stripPrefix removes prefix (a canonical, unescaped path) from u's path.
func stripPrefix(u *url.URL, prefix string) {
	if prefix == "/" {
		return
	}
	p := strings.TrimPrefix(u.Path, prefix)
	if p == "" {
		p = "/"
	}
	if u.RawPath != "" && strings.HasPrefix(u.RawPath, prefix) {
		rp := strings.TrimPrefix(u.RawPath, prefix)
		if rp == "" {
			rp = "/"
		}
		u.Path, u.RawPath = p, rp
		return
	}
	u.Path, u.RawPath = p, ""
}

// clientIP is rs.ClientIP (the peer, or the nearest X-Forwarded-For
// address that is not a trusted proxy when the peer is one) as text, or
// the peer as given when it is not an IP address.
func clientIP(r *http.Request, trusted []netip.Prefix) string {
	if ip := rs.ClientIP(r, trusted); ip.IsValid() {
		return ip.String()
	}
	return peerAddr(r)
}
