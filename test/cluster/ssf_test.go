package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/rs"
)

// setLog records the SETs one receiver applied, in arrival order.
type setLog struct {
	mu  sync.Mutex
	txn []string // the SET's txn (the audit event id), in arrival order
	sub []string // the user the SET is about
}

func (l *setLog) add(set *rs.SET) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.txn = append(l.txn, set.TXN)
	l.sub = append(l.sub, subjectUser(set.Subject))
}

func (l *setLog) snapshot() ([]string, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.txn...), append([]string(nil), l.sub...)
}

// subjectUser is the user a SET's subject names (iss_sub, or the user
// member of a complex subject).
func subjectUser(s *rs.Subject) string {
	switch {
	case s == nil:
		return ""
	case s.Format == "iss_sub":
		return s.Sub
	case s.User != nil:
		return s.User.Sub
	}
	return ""
}

// receivers are the test's SSF receivers, built on the public rs
// package: a push stream (RFC 8935, rs.Receiver.PushHandler on an
// httptest server) and a poll stream (RFC 8936, rs.Poller through the
// proxy, long-polling), both of client cluster-receiver.
type receivers struct {
	push, poll *setLog
	fromSeq    int64 // audit events after this one must reach both
	stopPoll   context.CancelFunc
	pollDone   chan struct{}
}

// rxClient is the receivers' HTTP client: the timeout stays above the
// long poll (ssf.long_poll_timeout 5s in the test's configuration).
var rxClient = &http.Client{Timeout: 20 * time.Second}

func startReceivers(t *testing.T, issuer string, db *database) *receivers {
	t.Helper()
	rx := &receivers{push: &setLog{}, poll: &setLog{}, pollDone: make(chan struct{})}
	if err := db.conn.QueryRow(context.Background(), `SELECT COALESCE(max(seq), 0) FROM events`).Scan(&rx.fromSeq); err != nil {
		t.Fatal(err)
	}
	tokens := &rxTokens{issuer: issuer}
	tok, err := tokens.get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	newReceiver := func(l *setLog) *rs.Receiver {
		r, err := rs.NewReceiver(rs.ReceiverConfig{Issuer: issuer, Audience: "cluster-receiver",
			State: rs.NewRevocationState(rs.StateConfig{}), HTTPClient: rxClient,
			OnEvent: func(_ context.Context, set *rs.SET, _ []rs.Action) error {
				l.add(set)
				return nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// Push.
	bearer := "cluster-push-bearer-0123456789-abcdefghij"
	srv := httptest.NewServer(newReceiver(rx.push).PushHandler(rs.RequireBearer(bearer)))
	t.Cleanup(srv.Close)
	if _, err := createStream(issuer, tok, map[string]any{"description": "cluster test: push",
		"delivery": map[string]any{"method": "urn:ietf:rfc:8935", "endpoint_url": srv.URL + "/ssf/events",
			"authorization_header": "Bearer " + bearer}}); err != nil {
		t.Fatal(err)
	}

	// Poll.
	endpoint, err := createStream(issuer, tok, map[string]any{"description": "cluster test: poll"})
	if err != nil {
		t.Fatal(err)
	}
	poller, err := newReceiver(rx.poll).NewPoller(rs.PollConfig{Endpoint: endpoint, Token: tokens.get, HTTPClient: rxClient,
		RequestTimeout: 15 * time.Second, MinBackoff: 200 * time.Millisecond, MaxBackoff: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rx.stopPoll = cancel
	go func() {
		defer close(rx.pollDone)
		poller.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-rx.pollDone })
	return rx
}

// rxTokens caches the receiver's client-credentials token (bearer).
type rxTokens struct {
	issuer string
	mu     sync.Mutex
	tok    string
	got    time.Time
}

func (r *rxTokens) get(ctx context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tok != "" && time.Since(r.got) < time.Minute {
		return r.tok, nil
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.issuer+"/token",
		strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "scope": {"ssf.manage ssf.poll"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("cluster-receiver", rxSecret)
	resp, err := rxClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != http.StatusOK || out.AccessToken == "" {
		return "", fmt.Errorf("receiver token: %d %s", resp.StatusCode, out.Error)
	}
	r.tok, r.got = out.AccessToken, time.Now()
	return r.tok, nil
}

// createStream creates an SSF stream and returns its delivery endpoint.
func createStream(issuer, tok string, body map[string]any) (string, error) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, issuer+"/ssf/stream", bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := rxClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		Delivery struct {
			EndpointURL string `json:"endpoint_url"`
		} `json:"delivery"`
	}
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("create stream: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", err
	}
	return out.Delivery.EndpointURL, nil
}

// auditEvent is an audit-log event that yields a CAE SET.
type auditEvent struct {
	seq       int64
	id, typ   string
	user      string
	delivered bool
}

// caeEvents returns the audit events after fromSeq that Ward's CAE
// transmitter turns into a SET (docs/ssf.md has the table; the load
// causes session revocations by the administrator, all of a user's
// sessions revoked, refresh-token reuse and a TOTP enrolment).
func caeEvents(t *testing.T, db *database, fromSeq int64) []*auditEvent {
	t.Helper()
	rows, err := db.conn.Query(context.Background(), `
SELECT seq, id, type, user_id FROM events
WHERE seq > $1 AND id <> '' AND COALESCE(user_id, '') <> '' AND (
  type IN ('user.sessions_revoked', 'mfa.enrolled', 'mfa.removed', 'user.disabled', 'user.deleted', 'user.password_changed')
  OR (type = 'session.refresh_reuse_detected' AND COALESCE(session_id, '') <> '')
  OR (type = 'session.logged_out' AND COALESCE(session_id, '') <> '' AND data NOT LIKE '%"all_sessions":"true"%')
  OR (type = 'session.revoked' AND COALESCE(session_id, '') <> '' AND data NOT LIKE '%"all_sessions":"true"%'
      AND reason IN ('admin_revoked', 'logout', 'access_token_revoked', 'code_reuse')))
ORDER BY seq`, fromSeq)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []*auditEvent
	for rows.Next() {
		e := &auditEvent{}
		if err := rows.Scan(&e.seq, &e.id, &e.typ, &e.user); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// check waits (up to 60 s) until both receivers have a SET for every
// such audit event, then checks: nothing missing, no SET of an event the
// audit log does not have, and per user the SETs' first arrivals in the
// audit log's order.
func (rx *receivers) check(t *testing.T, db *database) string {
	t.Helper()
	want := caeEvents(t, db, rx.fromSeq)
	byID := map[string]*auditEvent{}
	for _, e := range want {
		byID[e.id] = e
	}
	missing := func(l *setLog) []*auditEvent {
		txns, _ := l.snapshot()
		got := map[string]bool{}
		for _, x := range txns {
			got[x] = true
		}
		var m []*auditEvent
		for _, e := range want {
			if !got[e.id] {
				m = append(m, e)
			}
		}
		return m
	}
	deadline := time.Now().Add(60 * time.Second)
	for (len(missing(rx.push)) > 0 || len(missing(rx.poll)) > 0) && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
	}
	rx.stopPoll()
	<-rx.pollDone
	var summary []string
	for _, r := range []struct {
		name string
		l    *setLog
	}{{"push", rx.push}, {"poll", rx.poll}} {
		for i, e := range missing(r.l) {
			if i == 10 {
				t.Errorf("%s: … more SETs lost", r.name)
				break
			}
			t.Errorf("%s: no SET for audit event %d %s (%s, user %s)", r.name, e.seq, e.id, e.typ, e.user)
		}
		txns, subs := r.l.snapshot()
		seen := map[string]bool{}
		last := map[string]int64{}
		var dups, unknown, outOfOrder, stream int
		others := map[string]int{}
		for i, x := range txns {
			if x == "" {
				stream++ // SSF verification and stream-updated events
				continue
			}
			if seen[x] {
				dups++
				continue
			}
			seen[x] = true
			e := byID[x]
			if e == nil {
				var typ, reason string
				if err := db.conn.QueryRow(context.Background(), `SELECT type, reason FROM events WHERE id = $1`, x).Scan(&typ, &reason); err != nil {
					t.Errorf("%s: SET of txn %s, which is no audit event", r.name, x)
				} else {
					others[typ+" "+reason]++
				}
				unknown++
				continue
			}
			if subs[i] != e.user {
				t.Errorf("%s: SET of event %s names user %q, the event %q", r.name, x, subs[i], e.user)
			}
			if p, ok := last[e.user]; ok && e.seq < p {
				outOfOrder++
				t.Errorf("%s: user %s: SET of audit event %d arrived after that of event %d", r.name, e.user, e.seq, p)
			}
			last[e.user] = max(last[e.user], e.seq)
		}
		summary = append(summary, fmt.Sprintf("%s %d SETs (%d of the %d expected missing, %d repeated, %d out of order per user, %d of other events %s, %d stream events)",
			r.name, len(seen), len(missing(r.l)), len(want), dups, outOfOrder, unknown, topKinds(others), stream))
	}
	if len(want) == 0 {
		t.Errorf("no audit event that yields a CAE SET after the streams were created")
	}
	return strings.Join(summary, "; ")
}
