package demo

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/ward-idp/ward/dpop"
)

// stack is one run's deployment: Ward (embedded, or the target), the
// document app and what fronts it, and the administrator's API client.
type stack struct {
	t       *Target
	w       *ward // nil against a running server
	docs    *docApp
	front   string // base URL the clients use for /docs/
	gw      *gw
	admin   *api
	userID  string
	closers []func()
}

func (s *stack) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

func (s *stack) adminURL(path string) string { return s.t.Issuer + "/admin/api/v1" + path }

// start brings up Ward (unless t names a running one) and the document
// app in dir.
func start(ctx context.Context, dir string, t *Target, d defences) (*stack, error) {
	s := &stack{}
	s.closers = append(s.closers, func() { os.RemoveAll(dir) })
	if t == nil {
		w, err := startWard(ctx, dir, d)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.w, t = w, &w.target
		s.closers = append(s.closers, w.Close)
	}
	s.t = t
	docs, err := startDocApp()
	if err != nil {
		s.Close()
		return nil, err
	}
	s.docs = docs
	s.closers = append(s.closers, docs.Close)
	return s, nil
}

func newSigner() (*dpop.Signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return dpop.NewSigner(k)
}

// Browsers' user agents: the victim's and the attacker's.
const (
	victimUA   = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36 Edg/131.0"
	attackerUA = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
	adminUA    = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)

// signInAdmin signs the administrator in to the console client and keeps
// a DPoP-bound admin token.
func (s *stack) signInAdmin(ctx context.Context) error {
	signer, err := newSigner()
	if err != nil {
		return err
	}
	who := &account{name: s.t.Admin, password: s.t.AdminPassword, totpSecret: s.t.AdminTOTP}
	b := newBrowser(s.t.Issuer, victimIP, adminUA)
	p, tk, err := codeExchange(ctx, b, s.t.Issuer, s.t.AdminClient, s.t.AdminRedirectURI, "openid ward:admin", who, signer, victimIP, nil)
	if err != nil {
		return fmt.Errorf("demo: the administrator's sign-in: %w", err)
	}
	if tk == nil || tk.AccessToken == "" {
		if tk != nil {
			return fmt.Errorf("demo: the administrator's token: %s", tokenRefusal(tk))
		}
		return fmt.Errorf("demo: the administrator's sign-in: %s", pageRefusal(p))
	}
	s.admin = newAPI(victimIP, tk.AccessToken, signer)
	var users struct {
		Users []struct {
			ID       string `json:"id"`
			Username string `json:"username"`
		} `json:"users"`
	}
	if err := s.admin.getJSON(ctx, s.adminURL("/users"), &users); err != nil {
		return fmt.Errorf("demo: the admin API: %w", err)
	}
	for _, u := range users.Users {
		if u.Username == s.t.User {
			s.userID = u.ID
		}
	}
	if s.userID == "" {
		return fmt.Errorf("demo: no user %q on %s", s.t.User, s.t.Issuer)
	}
	return nil
}

// readDocs lists the documents at base and fetches each one with a. It
// returns how many it got, how many there are, and the first refusal.
func readDocs(ctx context.Context, a *api, base string) (got, total int, refused *result, err error) {
	return readDocsWith(ctx, a.get, base)
}

// readDocsWith is readDocs with a function that makes each request.
func readDocsWith(ctx context.Context, get func(context.Context, string) (*result, error), base string) (got, total int, refused *result, err error) {
	r, err := get(ctx, base+"/docs/")
	if err != nil {
		return 0, 0, nil, err
	}
	if r.Status != http.StatusOK {
		return 0, len(documents), r, nil
	}
	names := strings.Fields(r.Body)
	for _, n := range names {
		d, err := get(ctx, base+"/docs/"+url.PathEscape(n))
		if err != nil {
			return got, len(names), nil, err
		}
		if d.Status == http.StatusOK {
			got++
		} else if refused == nil {
			refused = d
		}
	}
	return got, len(names), refused, nil
}

// userRisk is GET /users/{id}/risk.
type userRisk struct {
	Level      string `json:"level"`
	Detections []struct {
		Type       string  `json:"type"`
		Severity   string  `json:"severity"`
		Confidence float64 `json:"confidence"`
		Technique  string  `json:"technique"`
		Source     string  `json:"source"`
		Detail     string  `json:"detail"`
		State      string  `json:"state"`
	} `json:"detections"`
}

func (s *stack) risk(ctx context.Context) (*userRisk, error) {
	var ur userRisk
	err := s.admin.getJSON(ctx, s.adminURL("/users/"+url.PathEscape(s.userID)+"/risk"), &ur)
	return &ur, err
}
