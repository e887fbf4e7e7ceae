package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ward-idp/ward/internal/gateway"
	"github.com/ward-idp/ward/rs"
)

// documents are Contoso's files behind MFA.
var documents = map[string]string{
	"q3-board-report.pdf":    "Q3 board report: revenue 41.2 M EUR, guidance lowered (confidential)",
	"merger-plan.docx":       "Project Heron: acquisition of Fabrikam, announcement 2027-02-01 (strictly confidential)",
	"salaries-2026.xlsx":     "Salary bands 2026, all staff (HR only)",
	"customer-contracts.csv": "Top 200 customer contracts with pricing (confidential)",
}

func documentNames() []string {
	names := make([]string, 0, len(documents))
	for n := range documents {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// httpService is a server on a loopback port picked by the OS.
type httpService struct {
	URL  string
	srv  *http.Server
	done chan struct{}
}

func serve(h http.Handler) (*httpService, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &httpService{URL: "http://" + ln.Addr().String(), done: make(chan struct{}),
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

func (s *httpService) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	<-s.done
}

// docApp is the small document application: GET /docs/ lists the
// documents, GET /docs/NAME returns one. It trusts whoever fronts it (the
// gateway, or its own token check) for the identity, and keeps an access
// log as any web server does: method, path, the identity headers it got.
type docApp struct {
	*httpService
	mu  sync.Mutex
	log strings.Builder
}

func startDocApp() (*docApp, error) {
	d := &docApp{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /docs/{$}", func(w http.ResponseWriter, r *http.Request) {
		d.access(r)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, strings.Join(documentNames(), "\n"))
	})
	mux.HandleFunc("GET /docs/{name}", func(w http.ResponseWriter, r *http.Request) {
		d.access(r)
		body, ok := documents[r.PathValue("name")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, body)
	})
	s, err := serve(mux)
	if err != nil {
		return nil, err
	}
	d.httpService = s
	return d, nil
}

// access writes one access-log line with every request header (a web
// server's verbose log: if a token reached the app, it would be here).
func (d *docApp) access(r *http.Request) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(&d.log, "%s %s %s", time.Now().UTC().Format(time.RFC3339Nano), r.Method, r.URL.Path)
	for k, vs := range r.Header {
		fmt.Fprintf(&d.log, " %s=%q", k, strings.Join(vs, ","))
	}
	d.log.WriteString("\n")
}

func (d *docApp) Log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
}

// bearerFront is run 1's front of the document app: it checks Ward's
// access tokens itself, as most applications do, with the public rs
// package: bearer tokens accepted, no Continuous Access Evaluation.
func bearerFront(issuer string, upstream http.Handler) (*httpService, error) {
	v, err := rs.New(rs.Config{Issuer: issuer, Audience: docsAudience, AllowBearer: true})
	if err != nil {
		return nil, err
	}
	return serve(v.Middleware(upstream))
}

// proxyTo forwards to the document app, keeping the path.
func proxyTo(target string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := http.NewRequestWithContext(r.Context(), r.Method, target+r.URL.RequestURI(), nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if info, ok := rs.FromContext(r.Context()); ok {
			req.Header.Set("X-Subject", info.Subject)
		}
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			http.Error(w, "upstream unavailable", http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, vs := range resp.Header {
			w.Header()[k] = vs
		}
		w.WriteHeader(resp.StatusCode)
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			w.Write(buf[:n])
			if err != nil {
				return
			}
		}
	})
}

// gatewayYAML is ward gateway's configuration in front of the document
// app: push CAE from Ward, usage reports to Ward's risk engine.
const gatewayYAML = `listen: %s
issuer: %s
external_url: %s
routes:
  - name: docs
    path_prefix: /docs
    upstream: %s
    audience: %s
    scopes: []
ssf:
  mode: push
  audience: %s
  push_bearer_env: GW_PUSH_BEARER
usage:
  url: %s/usage
  token_env: GW_USAGE_TOKEN
  interval: 100ms
log: {level: debug}
`

// gw is an embedded ward gateway.
type gw struct {
	URL        string
	pushBearer string
	logs       *lockedBuffer
	cancel     context.CancelFunc
	done       chan error
}

func startGateway(ctx context.Context, issuer, docsURL, receiver, usageToken string) (*gw, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	url := "http://" + ln.Addr().String()
	g := &gw{URL: url, pushBearer: randomSecret(32), logs: &lockedBuffer{}, done: make(chan error, 1)}
	env := map[string]string{"GW_PUSH_BEARER": g.pushBearer, "GW_USAGE_TOKEN": usageToken}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cfg, err := gateway.ParseConfig(fmt.Appendf(nil, gatewayYAML, ln.Addr(), issuer, url, docsURL, docsAudience, receiver, issuer), lookup)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("demo: gateway configuration: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(g.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	gwy, err := gateway.New(gateway.Options{Config: cfg, LookupEnv: lookup, Logger: log})
	if err != nil {
		ln.Close()
		return nil, err
	}
	gctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g.cancel = cancel
	go func() { g.done <- gwy.Serve(gctx, ln, nil) }()
	return g, nil
}

func (g *gw) Close() error {
	g.cancel()
	select {
	case err := <-g.done:
		return err
	case <-time.After(15 * time.Second):
		return errors.New("demo: the gateway did not stop")
	}
}
