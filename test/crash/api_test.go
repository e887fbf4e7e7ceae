package crash

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/rs"
)

const adminAPI = "/admin/api/v1"

func randomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// httpClient is shared by the workers: enough idle connections for all
// of them, and a timeout far above any answer of a healthy server.
var httpClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second},
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([a-z_]+)" value="([^"]*)">`)

// adminLogin signs username in through the confidential client with the
// authorization code flow (PKCE) and returns a bearer access token with
// scope ward:admin.
func adminLogin(t *testing.T, base, clientID, clientSecret, redirectURI, username, password string) string {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	verifier := randomString(32)
	sum := sha256.Sum256([]byte(verifier))
	q := url.Values{"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirectURI},
		"scope": {"openid ward:admin"}, "state": {randomString(8)},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}
	resp, err := browser.Get(base + "/authorize?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(page, []byte(`name="password"`)) {
		t.Fatalf("authorize: status %d, want the sign-in page", resp.StatusCode)
	}
	form := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(string(page), -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}
	form.Set("username", username)
	form.Set("password", password)
	resp, err = browser.PostForm(base+"/login", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		loc = &url.URL{}
	}
	if resp.StatusCode != http.StatusSeeOther || loc.Query().Get("code") == "" {
		t.Fatalf("sign-in: status %d, no code in the redirect (error %q)", resp.StatusCode, loc.Query().Get("error"))
	}
	tokReq, _ := http.NewRequest(http.MethodPost, base+"/token", strings.NewReader(url.Values{
		"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "code_verifier": {verifier},
		"redirect_uri": {redirectURI}}.Encode()))
	tokReq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	tokReq.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(clientSecret))
	return tokenResponse(t, tokReq, "authorization_code")
}

// clientToken gets a client credentials token.
func clientToken(t *testing.T, base, clientID, clientSecret, scope string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/token",
		strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(clientSecret))
	return tokenResponse(t, req, "client_credentials")
}

func tokenResponse(t *testing.T, req *http.Request, grant string) string {
	t.Helper()
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != http.StatusOK || out.AccessToken == "" {
		t.Fatalf("token (%s): status %d, error %q", grant, resp.StatusCode, out.Error)
	}
	return out.AccessToken
}

// apiResult is one answered API call. err is set only when there was no
// HTTP answer (connection refused or reset, timeout...).
type apiResult struct {
	status int
	corr   string // X-Correlation-ID
	body   []byte
	err    error
}

// request sends a JSON request with a bearer token.
func request(ctx context.Context, method, u, token string, body any) apiResult {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return apiResult{err: err}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return apiResult{err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := httpClient.Do(req)
	if err != nil {
		return apiResult{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return apiResult{err: err}
	}
	return apiResult{status: resp.StatusCode, corr: resp.Header.Get("X-Correlation-ID"), body: b}
}

func (r apiResult) ok() bool { return r.err == nil && r.status >= 200 && r.status < 300 }

func (r apiResult) String() string {
	if r.err != nil {
		return "no answer: " + r.err.Error()
	}
	var e struct {
		Error string `json:"error"`
		Desc  string `json:"error_description"`
	}
	json.Unmarshal(r.body, &e)
	return fmt.Sprintf("status %d %s %s", r.status, e.Error, e.Desc)
}

// userState is what GET /users/{id} says about the fields the burst
// changes.
type userState struct {
	ID        string `json:"id"`
	Disabled  bool   `json:"disabled"`
	RiskLevel string `json:"risk_level"`
}

// auditEvent is an event of the audit log as the admin API lists it
// (the documented event JSON).
type auditEvent struct {
	Seq           int64             `json:"seq"`
	ID            string            `json:"id"`
	Type          string            `json:"type"`
	Code          string            `json:"code"`
	Time          time.Time         `json:"time"`
	Outcome       string            `json:"outcome"`
	UserID        string            `json:"user_id"`
	DeviceID      string            `json:"device_id"`
	IP            string            `json:"ip"`
	Reason        string            `json:"reason"`
	CorrelationID string            `json:"correlation_id"`
	Data          map[string]string `json:"data"`
}

// auditLog reads every event of the given types through the admin API
// (newest first, paging with before) and returns them oldest first.
func auditLog(t *testing.T, base, token string, types []string) []*auditEvent {
	t.Helper()
	var all []*auditEvent
	before := int64(0)
	for {
		q := url.Values{"type": {strings.Join(types, ",")}, "limit": {"1000"}}
		if before > 0 {
			q.Set("before", fmt.Sprint(before))
		}
		r := request(context.Background(), http.MethodGet, base+adminAPI+"/events?"+q.Encode(), token, nil)
		if !r.ok() {
			t.Fatalf("GET /events: %v", r)
		}
		var page struct {
			Events     []*auditEvent `json:"events"`
			NextBefore int64         `json:"next_before"`
		}
		if err := json.Unmarshal(r.body, &page); err != nil {
			t.Fatalf("GET /events: %v", err)
		}
		all = append(all, page.Events...)
		if page.NextBefore == 0 {
			break
		}
		before = page.NextBefore
	}
	for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
		all[i], all[j] = all[j], all[i]
	}
	return all
}

// delivery is one SET as a receiver got it, verified.
type delivery struct {
	set *rs.SET
	at  time.Time
}

// setLog records the SETs one stream delivered, in arrival order, and
// what went wrong with them.
type setLog struct {
	mu       sync.Mutex
	arrivals []delivery
	seen     map[string]int // deliveries per jti
	bad      []string       // SETs refused by rs.Receiver.Verify
}

func newSetLog() *setLog { return &setLog{seen: map[string]int{}} }

func (l *setLog) add(set *rs.SET) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[set.JTI]++
	l.arrivals = append(l.arrivals, delivery{set: set, at: time.Now()})
}

func (l *setLog) refused(what string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.bad) < 20 {
		l.bad = append(l.bad, what)
	}
}

// firstAfter returns the time of the first arrival after t (zero if none).
func (l *setLog) firstAfter(t time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range l.arrivals {
		if d.at.After(t) {
			return d.at
		}
	}
	return time.Time{}
}

// unique returns how many distinct SETs (by jti) arrived.
func (l *setLog) unique() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen)
}

// firstArrivals returns each SET once, at its first arrival, and the
// number of repeated deliveries.
func (l *setLog) firstArrivals() ([]delivery, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := make(map[string]bool, len(l.seen))
	var out []delivery
	dups := 0
	for _, d := range l.arrivals {
		if seen[d.set.JTI] {
			dups++
			continue
		}
		seen[d.set.JTI] = true
		out = append(out, d)
	}
	return out, dups
}

// newVerifier returns an rs.Receiver that checks SETs for audience aud
// (signature against Ward's JWKS, found through the SSF configuration).
func newVerifier(t *testing.T, issuer, aud string) *rs.Receiver {
	t.Helper()
	r, err := rs.NewReceiver(rs.ReceiverConfig{Issuer: issuer, Audience: aud,
		State: rs.NewRevocationState(rs.StateConfig{}), HTTPClient: httpClient})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pushReceiver is an RFC 8935 endpoint: it checks the push credentials,
// verifies each SET with rs.Receiver.Verify and records it (duplicates
// included: de-duplication is the checker's job here, so it can count
// them), then answers 202.
func pushReceiver(t *testing.T, v *rs.Receiver, bearer string, log *setLog) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+bearer {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		set, err := v.Verify(r.Context(), strings.TrimSpace(string(b)))
		var se *rs.SETError
		switch {
		case errors.As(err, &se):
			log.refused(se.Error())
			w.WriteHeader(http.StatusBadRequest)
			return
		case err != nil: // keys not available: Ward retries
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		log.add(set)
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// pollOnce sends one RFC 8936 poll with acks and returns the SETs in the
// order of the answer (a JSON object's member order, which a map would
// lose).
func pollOnce(base, endpoint, token string, ack []string, maxEvents int) (sets []string, jtis []string, more bool, err error) {
	body := map[string]any{"maxEvents": maxEvents, "returnImmediately": true}
	if len(ack) > 0 {
		body["ack"] = ack
	}
	r := request(context.Background(), http.MethodPost, endpoint, token, body)
	if !r.ok() {
		return nil, nil, false, fmt.Errorf("poll: %v", r)
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, false, errors.New("poll: answer is not an object")
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, nil, false, err
		}
		switch k {
		case "moreAvailable":
			if err := dec.Decode(&more); err != nil {
				return nil, nil, false, err
			}
		case "sets":
			if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
				return nil, nil, false, errors.New("poll: sets is not an object")
			}
			for dec.More() {
				jti, err := dec.Token()
				if err != nil {
					return nil, nil, false, err
				}
				var s string
				if err := dec.Decode(&s); err != nil {
					return nil, nil, false, err
				}
				jtis, sets = append(jtis, jti.(string)), append(sets, s)
			}
			if _, err := dec.Token(); err != nil {
				return nil, nil, false, err
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, nil, false, err
			}
		}
	}
	return sets, jtis, more, nil
}

// drainPoll polls a stream until it is empty, acknowledging everything,
// and records each SET verified.
func drainPoll(t *testing.T, v *rs.Receiver, base, endpoint, token string, log *setLog) {
	t.Helper()
	var ack []string
	for i := 0; ; i++ {
		if i > 1000 {
			t.Fatal("poll drain: more than 1000 polls")
		}
		sets, jtis, more, err := pollOnce(base, endpoint, token, ack, 1000)
		if err != nil {
			t.Fatalf("poll drain: %v", err)
		}
		ack = ack[:0]
		for k, s := range sets {
			set, err := v.Verify(context.Background(), s)
			if err != nil {
				log.refused(err.Error())
				continue
			}
			if set.JTI != jtis[k] {
				log.refused("poll: member name " + jtis[k] + " is not the SET's jti")
			}
			log.add(set)
			ack = append(ack, set.JTI)
		}
		if len(sets) == 0 && !more {
			return
		}
	}
}
