// Package server assembles Ward's HTTP surface: the OAuth/OIDC endpoints,
// login pages and admin API, on top of an opened app.App.
package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/ward-idp/ward/dpop"
	"github.com/ward-idp/ward/internal/admin"
	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/console"
	"github.com/ward-idp/ward/internal/deviceapi"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth"
	"github.com/ward-idp/ward/internal/signin"
	"github.com/ward-idp/ward/internal/ssf"
	"github.com/ward-idp/ward/internal/ssfrx"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/usage"
	"github.com/ward-idp/ward/internal/web"
)

// Server is Ward's HTTP handler and the provider behind it.
type Server struct {
	http.Handler
	Provider *oauth.Provider
	// Console is the web console (nil when console.disabled); pages are
	// added to it (Console.AddPage) before the server serves.
	Console *console.Console
	// Metrics serves the Prometheus page (nil without a.Metrics). It is
	// for the metrics listener only, never the issuer's.
	Metrics http.Handler
}

// New returns the HTTP handler for everything `ward serve` serves.
func New(a *app.App) (*Server, error) {
	cfg := a.Config
	pages, err := web.NewPages(a.Log)
	if err != nil {
		return nil, err
	}
	var trusted []netip.Prefix
	for _, s := range cfg.TrustedProxies {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("trusted_proxies: %w", err)
		}
		trusted = append(trusted, p)
	}
	verifier := &dpop.Verifier{
		MaxAge: cfg.DPoP.MaxAge,
		Leeway: cfg.DPoP.Leeway,
		Now:    a.Now,
		Replay: replayCache(a),
		Nonces: dpop.NewHMACNonces(a.KEK.Derive("dpop-nonce"), cfg.DPoP.NonceLifetime, a.Now),
	}
	cookieKey := a.KEK.Derive("cookie")
	prov := oauth.New(oauth.Config{
		Issuer:           cfg.Issuer,
		Store:            a.Store,
		Bus:              a.Bus,
		Keys:             a.Keys,
		Clients:          a.Clients,
		TokenHasher:      a.TokenHasher,
		CookieKey:        cookieKey,
		DPoP:             verifier,
		RequireDPoPNonce: cfg.DPoP.RequireNonce,
		Lifetimes: oauth.Lifetimes{
			AccessToken:    cfg.Tokens.AccessTokenTTL,
			IDToken:        cfg.Tokens.IDTokenTTL,
			RefreshToken:   cfg.Tokens.RefreshTokenTTL,
			Code:           cfg.Tokens.CodeTTL,
			PushedRequest:  cfg.Tokens.PARTTL,
			CAEAccessToken: cfg.Tokens.CAEAccessTokenTTL,
		},
		TrustedProxies:          trusted,
		ClientFailuresPerMinute: cfg.Lockout.ClientFailuresPerMinute,
		Now:                     a.Now,
		Log:                     a.Log,
		Pages:                   pages,
		Devices:                 a.Devices,
		Access:                  a.Access,
		Sessions:                a.Sessions,
		Changes:                 a.Changes,
	})
	signIn := signin.New(signin.Config{
		Issuer: cfg.Issuer, Store: a.Store, Bus: a.Bus, Identity: a.Identity, CookieKey: cookieKey,
		SessionIdle: cfg.Tokens.SessionIdle, SessionAbsolute: cfg.Tokens.SessionAbsolute, TrustedProxies: trusted,
		Now: a.Now, Log: a.Log, Pages: pages, Devices: a.Devices, Access: a.Access, Protocol: prov,
		Risk: a.SignInRisk, PasskeyRecoveryCode: cfg.Passkeys.RecoveryFallback == "recovery_code",
	})
	mux := http.NewServeMux()
	prov.Register(mux, signIn)
	signIn.Register(mux)
	admin.New(admin.Deps{
		Identity:       a.Identity,
		Clients:        a.Clients,
		Devices:        a.Devices,
		Access:         a.Access,
		Sessions:       a.Sessions,
		Risk:           a.Risk,
		Graph:          a.Graph,
		Incidents:      a.Incidents,
		Audit:          a.Store,
		Auth:           prov,
		Bus:            a.Bus,
		Issuer:         cfg.Issuer,
		TrustedProxies: trusted,
		Now:            a.Now,
		Log:            a.Log,
	}).Register(mux)
	var cons *console.Console
	if !cfg.Console.Disabled {
		if cons, err = newConsole(a, prov, signIn); err != nil {
			return nil, err
		}
		cons.Register(mux)
	}
	deviceapi.New(a.Devices, prov, cfg.Issuer, a.Log).Register(mux)
	usage.New(prov, a.Bus, cfg.Issuer, a.Now, a.Log).Register(mux)
	ssfAPI := ssf.New(a.CAE, prov, cfg.Issuer, a.Log)
	ssfAPI.Register(mux)
	// Ward as an SSF receiver: transmitters push SETs here (RFC 8935).
	mux.Handle(ssfrx.PushPath, a.SSFReceivers.PushHandler())
	// A retired signing key: tokens it signed must not be accepted from the
	// SSF endpoints' cache of verified tokens, whether it was retired here
	// (in-process events) or by another process (followed changes).
	forgetRetired := func(_ context.Context, e *model.Event) error {
		if e.Type == model.EventKeyRetired {
			ssfAPI.KeysChanged()
		}
		return nil
	}
	a.Bus.Subscribe("ssf-token-cache", forgetRetired)
	if a.Changes != nil {
		a.Changes.Subscribe("ssf-token-cache", forgetRetired)
	}
	mux.Handle("GET /static/", web.Static())
	// /livez: the process serves HTTP (a liveness probe: a database outage
	// must not restart every replica). /healthz: the store answers too (a
	// readiness probe and a load balancer's health check).
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := a.Store.Ping(r.Context()); err != nil {
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		pages.Render(w, http.StatusOK, "home.html", map[string]any{"Issuer": cfg.Issuer, "Console": !cfg.Console.Disabled})
	})
	if cfg.Dev {
		mux.HandleFunc("GET /demo/callback", func(w http.ResponseWriter, r *http.Request) {
			pages.Render(w, http.StatusOK, "callback.html", map[string]string{"Error": r.URL.Query().Get("error")})
		})
		// Where demo-spa's sign-out returns (post_logout_redirect_uri).
		mux.HandleFunc("GET /demo/{$}", func(w http.ResponseWriter, r *http.Request) {
			pages.Render(w, http.StatusOK, "demo.html", nil)
		})
	}
	var inner http.Handler = mux
	var metricsHandler http.Handler
	if a.Metrics != nil {
		inner = newHTTPMetrics(a.Metrics).wrap(mux)
		metricsHandler = a.Metrics
	}
	var h http.Handler = oauth.WithRequestContext(inner, trusted)
	if strings.HasPrefix(cfg.Issuer, "https://") {
		h = strictTransport(h)
	}
	return &Server{Handler: h, Provider: prov, Console: cons, Metrics: metricsHandler}, nil
}

// hstsValue asks browsers to use only HTTPS for this host for a year
// (RFC 6797). Subdomains are left alone: they may be other services.
const hstsValue = "max-age=31536000"

// strictTransport adds Strict-Transport-Security to every response of an
// https issuer, whether Ward terminates TLS itself or a proxy in front of
// it does (browsers only heed the header over HTTPS, so it cannot hurt).
func strictTransport(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", hstsValue)
		next.ServeHTTP(w, r)
	})
}

// replayCache is the DPoP replay cache: an in-memory cache, which
// refuses a proof this process has seen without a database round trip,
// in front of the store, which keeps every jti until it expires, so that
// a proof is refused after a restart and by every instance sharing the
// database. A store that one process serves queues the insert
// (store.DeferredJTIs: written with the others of the next few
// milliseconds, off the request's path); any other records each jti with
// RecordJTI, or leaves it for the write of the request's audit event when
// the request allows (store.DeferredJTI: the client credentials grant
// records its jti and its token.issued in one write).
func replayCache(a *app.App) dpop.ReplayCache {
	r := &storeReplay{mem: dpop.NewMemoryReplayCache(a.Now), record: a.Store.RecordJTI, deferToEvent: true}
	if d, ok := a.Store.(store.DeferredJTIs); ok {
		r.record, r.deferToEvent = d.RecordJTIDeferred, false
	}
	return r
}

type storeReplay struct {
	mem    *dpop.MemoryReplayCache
	record func(ctx context.Context, key string, exp time.Time) error
	// deferToEvent: a request's key may wait for its event's write
	// (store.DeferJTI); not where record queues the insert anyway.
	deferToEvent bool
}

func (r *storeReplay) Record(ctx context.Context, key string, exp time.Time) error {
	if err := r.mem.Record(ctx, key, exp); err != nil {
		return err
	}
	sk := storeKey(key, exp)
	if r.deferToEvent && store.DeferJTI(ctx, sk, exp) {
		return nil
	}
	err := r.record(ctx, sk, exp)
	if errors.Is(err, store.ErrReplay) {
		return dpop.ErrReplay
	}
	return err
}

// storeKey is the stored form of the verifier's key ("dpop:" thumbprint
// ":" jti) with the proof's expiry (its iat plus the accepted age) in
// front, in fixed-width hex: the keys of proofs made together sort
// together, so the inserts of a busy server share the database's index
// pages instead of touching one at random each. A replay carries the
// same iat, hence the same stored key.
func storeKey(key string, exp time.Time) string {
	const hexDigits = "0123456789abcdef"
	rest, ok := strings.CutPrefix(key, "dpop:")
	if !ok {
		return key
	}
	b := make([]byte, 0, len("dpop:")+16+1+len(rest))
	b = append(b, "dpop:"...)
	us := uint64(exp.UnixMicro())
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hexDigits[(us>>shift)&0xf])
	}
	b = append(b, ':')
	return string(append(b, rest...))
}
