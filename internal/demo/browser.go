package demo

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/ward-idp/ward/dpop"
)

// Source addresses: the victim's laptop on Contoso's network, and the
// attacker's machine elsewhere. Both are loopback addresses of this
// machine (Linux answers on all of 127.0.0.0/8), so every server sees
// two different client networks.
const (
	victimIP   = "127.0.0.1"
	attackerIP = "127.0.0.66"
)

// transportFrom is an HTTP transport whose connections to loopback
// addresses leave from ip; connections elsewhere (a --server on another
// machine) leave from the machine's own address.
func transportFrom(ip string) *http.Transport {
	bound := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	plain := &net.Dialer{Timeout: 10 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		if a := net.ParseIP(host); a != nil && a.IsLoopback() {
			return bound.DialContext(ctx, network, addr)
		}
		return plain.DialContext(ctx, network, addr)
	}
	return &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 8, IdleConnTimeout: 30 * time.Second}
}

// canBind says whether this machine can send from ip (every Linux can
// from all of 127/8; macOS only from 127.0.0.1 unless an alias is set).
func canBind(ip string) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// account is a person's credentials, with the TOTP steps already used
// (Ward accepts each step once).
type account struct {
	name, password, totpSecret string
	newPassword                string // set when a password change is required
	mu                         sync.Mutex
	lastStep                   int64
}

// otp returns a code for the earliest step Ward will still accept
// (current step ±1, after the last one used), waiting if none is left.
func (a *account) otp(ctx context.Context) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for {
		now := time.Now().Unix() / 30
		step := max(now-1, a.lastStep+1)
		if step <= now+1 {
			code, err := totp.GenerateCode(a.totpSecret, time.Unix(step*30, 0))
			if err != nil {
				return "", err
			}
			a.lastStep = step
			return code, nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(time.Until(time.Unix((now+1)*30, 0))):
		}
	}
}

// browser drives Ward's sign-in pages as a browser does: a cookie jar,
// forms posted as they are, redirects followed on Ward's own origin.
type browser struct {
	issuer string
	c      *http.Client
	ua     string
}

func newBrowser(issuer, fromIP, userAgent string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{issuer: issuer, ua: userAgent, c: &http.Client{Jar: jar, Transport: transportFrom(fromIP), Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// cookies returns the browser's cookies for Ward.
func (b *browser) cookies() []*http.Cookie {
	u, _ := url.Parse(b.issuer)
	return b.c.Jar.Cookies(u)
}

// setCookies puts cookies (copied from another browser) in this one.
func (b *browser) setCookies(cs []*http.Cookie) {
	u, _ := url.Parse(b.issuer)
	b.c.Jar.SetCookies(u, cs)
}

// page is what a sign-in ended with: the client's redirect (code or
// error) or a page Ward showed instead (title and text).
type page struct {
	Code, Error, ErrorDescription string
	Status                        int
	Title, Text                   string
	Steps                         []string // what the browser did: "password", "otp", ...
	// DBSCOffer is the Secure-Session-Registration header of the
	// sign-in's last response.
	DBSCOffer string
}

var (
	hiddenRE = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)
	actionRE = regexp.MustCompile(`<form method="post" action="([^"]*)"`)
	titleRE  = regexp.MustCompile(`(?s)<h2>(.*?)</h2>`)
	textRE   = regexp.MustCompile(`(?s)<(p|li)(?:\s[^>]*)?>(.*?)</(?:p|li)>`)
	tagRE    = regexp.MustCompile(`<[^>]+>`)
)

func formOf(body string) (action string, v url.Values) {
	v = url.Values{}
	for _, m := range hiddenRE.FindAllStringSubmatch(body, -1) {
		v.Set(m[1], html.UnescapeString(m[2]))
	}
	if m := actionRE.FindStringSubmatch(body); m != nil {
		action = html.UnescapeString(m[1])
	}
	return action, v
}

func pageText(body string) (title, text string) {
	if m := titleRE.FindStringSubmatch(body); m != nil {
		title = strings.TrimSpace(html.UnescapeString(tagRE.ReplaceAllString(m[1], "")))
	}
	var parts []string
	for _, m := range textRE.FindAllStringSubmatch(body, -1) {
		s := strings.Join(strings.Fields(html.UnescapeString(tagRE.ReplaceAllString(m[2], " "))), " ")
		if s != "" && !strings.HasPrefix(s, "Reference:") {
			parts = append(parts, s)
		}
	}
	return title, strings.Join(parts, " ")
}

// do sends one request of the browser and returns the response and body.
func (b *browser) do(ctx context.Context, method, u string, form url.Values) (*http.Response, string, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, "", err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("User-Agent", b.ua)
	resp, err := b.c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp, string(data), nil
}

// signIn opens u (an authorization or verification URL) and answers each
// page of Ward's as its user would: the password, a second factor, a
// new password when one is required, the device code and its approval.
// It stops at the redirect to the client or at a page it cannot answer
// (a refusal), and never follows a redirect off Ward's origin.
func (b *browser) signIn(ctx context.Context, u string, who *account, userCode string) (*page, error) {
	p := &page{}
	otpRetries := 0
	resp, body, err := b.do(ctx, http.MethodGet, u, nil)
	for range 12 {
		if err != nil {
			return nil, err
		}
		switch {
		case resp.StatusCode >= 300 && resp.StatusCode < 400:
			loc, err := resp.Location()
			if err != nil {
				return nil, err
			}
			if !strings.HasPrefix(loc.String(), b.issuer+"/") {
				q := loc.Query()
				p.Code, p.Error, p.ErrorDescription = q.Get("code"), q.Get("error"), q.Get("error_description")
				p.DBSCOffer = resp.Header.Get("Secure-Session-Registration")
				return p, nil
			}
			resp, body, err = b.do(ctx, http.MethodGet, loc.String(), nil)
			continue
		case resp.StatusCode != http.StatusOK:
			p.Status = resp.StatusCode
			p.Title, p.Text = pageText(body)
			return p, nil
		}
		action, form := formOf(body)
		if action != "" && !strings.HasPrefix(action, "http") {
			action = b.issuer + action
		}
		switch {
		case strings.Contains(body, `name="username"`) && who != nil:
			form.Set("username", who.name)
			form.Set("password", who.password)
			p.Steps = append(p.Steps, "password")
		case strings.Contains(body, `name="otp"`) && who != nil:
			if strings.Contains(body, "already used") {
				// Another run (another process) used this step: the
				// next one.
				if otpRetries++; otpRetries > 3 {
					p.Title, p.Text = pageText(body)
					return p, nil
				}
			}
			code, err := who.otp(ctx)
			if err != nil {
				return nil, err
			}
			form.Set("otp", code)
			p.Steps = append(p.Steps, "second factor")
		case strings.Contains(body, `name="new_password"`) && who != nil && who.newPassword != "":
			form.Set("new_password", who.newPassword)
			form.Set("confirm_password", who.newPassword)
			who.password = who.newPassword
			p.Steps = append(p.Steps, "new password")
		case strings.Contains(body, `name="user_code"`) && userCode != "":
			form.Set("user_code", userCode)
			p.Steps = append(p.Steps, "device code")
		case strings.Contains(body, `value="approve"`):
			form.Set("decision", "approve")
			p.Steps = append(p.Steps, "approve")
		default:
			p.Status = resp.StatusCode
			p.Title, p.Text = pageText(body)
			return p, nil
		}
		resp, body, err = b.do(ctx, http.MethodPost, action, form)
	}
	return nil, errors.New("demo: the sign-in did not end after 12 pages")
}

// pkce returns a fresh verifier and its S256 challenge.
func pkce() (verifier, challenge string) {
	verifier = randomSecret(32)
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

func authorizeURL(issuer, clientID, redirect, scope, challenge string, extra url.Values) string {
	q := url.Values{"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirect}, "scope": {scope},
		"state": {randomSecret(8)}, "nonce": {randomSecret(8)}, "code_challenge": {challenge}, "code_challenge_method": {"S256"}}
	for k, v := range extra {
		q[k] = v
	}
	return issuer + "/authorize?" + q.Encode()
}

// tokens is a token response, or the error the token endpoint answered.
type tokens struct {
	Status                    int
	AccessToken, RefreshToken string
	TokenType                 string
	Error, ErrorDescription   string
}

// tokenClient posts to the token endpoint from ip, with proofs of signer
// (nil: no DPoP at all).
func tokenClient(ip string, signer *dpop.Signer) *http.Client {
	var rt http.RoundTripper = transportFrom(ip)
	if signer != nil {
		rt = &dpop.Transport{Base: rt, Signer: signer}
	}
	return &http.Client{Transport: rt, Timeout: 30 * time.Second}
}

func tokenRequest(ctx context.Context, c *http.Client, issuer string, form url.Values, basicID, basicSecret string) (*tokens, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, issuer+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicID != "" {
		req.SetBasicAuth(url.QueryEscape(basicID), url.QueryEscape(basicSecret))
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var m struct {
		AccessToken      string `json:"access_token"`
		RefreshToken     string `json:"refresh_token"`
		TokenType        string `json:"token_type"`
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&m); err != nil {
		return nil, fmt.Errorf("demo: token endpoint answered %d without JSON", resp.StatusCode)
	}
	return &tokens{Status: resp.StatusCode, AccessToken: m.AccessToken, RefreshToken: m.RefreshToken, TokenType: m.TokenType,
		Error: m.Error, ErrorDescription: m.ErrorDescription}, nil
}

// codeExchange signs in through the browser for clientID and redeems the
// code; signer binds the tokens (nil: unbound).
func codeExchange(ctx context.Context, b *browser, issuer, clientID, redirect, scope string, who *account, signer *dpop.Signer, ip string, extra url.Values) (*page, *tokens, error) {
	return codeExchangeAuth(ctx, b, issuer, clientID, "", redirect, scope, who, signer, ip, extra)
}

// codeExchangeAuth is codeExchange for a confidential client (secret
// not empty: client_secret_basic).
func codeExchangeAuth(ctx context.Context, b *browser, issuer, clientID, clientSecret, redirect, scope string, who *account, signer *dpop.Signer, ip string, extra url.Values) (*page, *tokens, error) {
	p, redeem, err := authorizeCode(ctx, b, issuer, clientID, clientSecret, redirect, scope, who, signer, ip, extra)
	if err != nil || redeem == nil {
		return p, nil, err
	}
	t, err := redeem()
	return p, t, err
}

// authorizeCode signs in through the browser and returns the page it
// ended on and, when there is a code, the function that redeems it.
func authorizeCode(ctx context.Context, b *browser, issuer, clientID, clientSecret, redirect, scope string, who *account, signer *dpop.Signer, ip string, extra url.Values) (*page, func() (*tokens, error), error) {
	verifier, challenge := pkce()
	if extra == nil {
		extra = url.Values{}
	}
	if signer != nil {
		extra.Set("dpop_jkt", signer.Thumbprint())
	}
	p, err := b.signIn(ctx, authorizeURL(issuer, clientID, redirect, scope, challenge, extra), who, "")
	if err != nil || p.Code == "" {
		return p, nil, err
	}
	form := url.Values{"grant_type": {"authorization_code"}, "code": {p.Code}, "code_verifier": {verifier},
		"redirect_uri": {redirect}, "client_id": {clientID}}
	if c := extra.Get("claims"); c != "" {
		form.Set("claims", c)
	}
	basic := ""
	if clientSecret != "" {
		basic = clientID
	}
	return p, func() (*tokens, error) {
		return tokenRequest(ctx, tokenClient(ip, signer), issuer, form, basic, clientSecret)
	}, nil
}

// api calls a resource or Ward's admin API from ip with token: DPoP with
// signer's proofs, or Bearer when signer is nil.
type api struct {
	c     *http.Client
	token string
	dpop  bool
}

func newAPI(ip, token string, signer *dpop.Signer) *api {
	var rt http.RoundTripper = transportFrom(ip)
	if signer != nil {
		rt = &dpop.Transport{Base: rt, Signer: signer}
	}
	return &api{c: &http.Client{Transport: rt, Timeout: 30 * time.Second}, token: token, dpop: signer != nil}
}

// result is an HTTP answer: status, body, headers (the challenges).
type result struct {
	Status int
	Body   string
	Header http.Header
}

func (a *api) do(ctx context.Context, method, u string, body io.Reader, contentType string) (*result, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if a.token != "" {
		scheme := "Bearer "
		if a.dpop {
			scheme = "DPoP "
		}
		req.Header.Set("Authorization", scheme+a.token)
	}
	resp, err := a.c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return &result{Status: resp.StatusCode, Body: string(data), Header: resp.Header}, nil
}

func (a *api) get(ctx context.Context, u string) (*result, error) {
	return a.do(ctx, http.MethodGet, u, nil, "")
}

func (a *api) getJSON(ctx context.Context, u string, out any) error {
	r, err := a.get(ctx, u)
	if err != nil {
		return err
	}
	if r.Status != http.StatusOK {
		return fmt.Errorf("GET %s: %d %.200s", u, r.Status, r.Body)
	}
	return json.Unmarshal([]byte(r.Body), out)
}
