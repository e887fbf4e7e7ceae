package console

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/audit/chain"
	"github.com/ward-idp/ward/internal/model"
)

// signInLogTypes are the sign-in log's events.
var signInLogTypes = []model.EventType{model.EventSignInSucceeded, model.EventSignInFailed, model.EventSSOSignIn}

const (
	logPage         = 100
	maxExport       = 10000
	verifyCacheTTL  = time.Minute
	datetimeLayout  = "2006-01-02T15:04"
	maxFilterLength = 200
)

// logFilter is the logs page's filter, as the form has it.
type logFilter struct {
	Tab                                  string // signins or audit
	User, Device, IP, App, Session, Type string
	Result                               string
	Since, Until                         string
	Before                               int64
	userID                               string
	since, until                         time.Time
	Problems                             []string
}

func parseLogFilter(q url.Values) logFilter {
	get := func(k string) string { return truncate(strings.TrimSpace(q.Get(k)), maxFilterLength) }
	f := logFilter{Tab: get("tab"), User: get("user"), Device: get("device"), IP: get("ip"), App: get("app"),
		Session: get("session"), Type: get("type"), Result: get("result"), Since: get("since"), Until: get("until")}
	if f.Tab != "audit" {
		f.Tab = "signins"
	}
	if f.Result != model.OutcomeSuccess && f.Result != model.OutcomeFailure {
		f.Result = ""
	}
	if f.IP != "" {
		if a, err := netip.ParseAddr(f.IP); err == nil {
			f.IP = a.String()
		} else {
			f.Problems = append(f.Problems, "IP address: not an address")
		}
	}
	if f.Type != "" && model.EventCodes[model.EventType(f.Type)] == "" {
		f.Problems = append(f.Problems, "Event type: unknown")
		f.Type = ""
	}
	parseTime := func(s, what string) time.Time {
		if s == "" {
			return time.Time{}
		}
		t, err := time.Parse(datetimeLayout, s)
		if err != nil {
			if t, err = time.Parse(time.RFC3339, s); err != nil {
				f.Problems = append(f.Problems, what+": use YYYY-MM-DDTHH:MM (UTC)")
				return time.Time{}
			}
		}
		return t.UTC()
	}
	f.since, f.until = parseTime(f.Since, "From"), parseTime(f.Until, "To")
	if n, err := strconv.ParseInt(q.Get("before"), 10, 64); err == nil && n > 0 {
		f.Before = n
	}
	return f
}

// query is the store filter of f (userID resolved).
func (f *logFilter) query(limit int) audit.Query {
	q := audit.Query{UserID: f.userID, DeviceID: f.Device, IP: f.IP, ClientID: f.App, SessionID: f.Session,
		Outcome: f.Result, Since: f.since, Until: f.until, BeforeSeq: f.Before, Limit: limit}
	switch {
	case f.Tab == "signins":
		q.Types = signInLogTypes
	case f.Type != "":
		q.Types = []model.EventType{model.EventType(f.Type)}
	}
	return q
}

// values is f as query parameters (without paging), for links.
func (f *logFilter) values() url.Values {
	v := url.Values{}
	for k, x := range map[string]string{"tab": f.Tab, "user": f.User, "device": f.Device, "ip": f.IP, "app": f.App,
		"session": f.Session, "type": f.Type, "result": f.Result, "since": f.Since, "until": f.Until} {
		if x != "" {
			v.Set(k, x)
		}
	}
	return v
}

// resolveUser turns the user field (a username or a user id) into an id.
// An unknown name selects nothing.
func (c *Console) resolveUser(ctx context.Context, f *logFilter) {
	if f.User == "" {
		return
	}
	f.userID = f.User // no match: the store finds nothing under it
	if u, err := c.d.Identity.GetUserByUsername(ctx, f.User); err == nil {
		f.userID = u.ID
	}
}

type logRow struct {
	R    *audit.Record
	User *model.User
	// Actor is who did it: a username when the actor is a user.
	Actor string
}

type logsPage struct {
	F          logFilter
	Rows       []logRow
	Types      []model.EventType
	Results    []string
	NextBefore int64
	Query      string // the filter as a query string
}

// handleLogs shows the sign-in or audit log, newest first, filtered.
func (c *Console) handleLogs(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	f := parseLogFilter(r.URL.Query())
	c.resolveUser(ctx, &f)
	users := c.lookup(ctx)
	p := logsPage{F: f, Types: typeOptions(), Results: []string{model.OutcomeSuccess, model.OutcomeFailure}, Query: f.values().Encode()}
	if len(f.Problems) == 0 {
		recs, err := c.d.Audit.ListEvents(ctx, f.query(logPage))
		if err != nil {
			c.fail(w, r, err)
			return
		}
		for _, rec := range recs {
			row := logRow{R: rec, User: users.get(rec.UserID), Actor: rec.Actor}
			if a := users.get(rec.Actor); a != nil {
				row.Actor = a.Username
			}
			p.Rows = append(p.Rows, row)
		}
		if len(recs) == logPage {
			p.NextBefore = recs[len(recs)-1].Seq
		}
	}
	title := "Sign-in log"
	if f.Tab == "audit" {
		title = "Audit log"
	}
	c.render(w, r, "logs.html", pageData{Title: title, Nav: "logs", Data: p})
}

// verification is the audit log's verification as the page shows it.
type verification struct {
	Available bool
	Report    *chain.Report
	Err       string
	At        time.Time
	Latest    time.Time // when the newest verified checkpoint was signed
	Problems  []chain.Problem
}

// handleVerification verifies the audit log's hash chain and signed
// checkpoints (chain.Verify, as `ward logs verify`), at most once a
// minute, and shows the result (a fragment the logs page loads).
func (c *Console) handleVerification(w http.ResponseWriter, r *http.Request) {
	v := verification{Available: c.d.Verify != nil}
	if v.Available {
		c.verifyMu.Lock()
		if c.verifyAt.IsZero() || c.d.Now().Sub(c.verifyAt) > verifyCacheTTL {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 2*time.Minute)
			c.verifyRep, c.verifyErr = c.d.Verify(ctx)
			cancel()
			c.verifyAt = c.d.Now()
		}
		v.Report, v.At = c.verifyRep, c.verifyAt
		if c.verifyErr != nil {
			c.d.Log.ErrorContext(r.Context(), "audit log verification", "err", c.verifyErr)
			v.Err = "Verification could not run; the server log has the details."
		}
		c.verifyMu.Unlock()
		if v.Report != nil {
			if v.Report.Latest != nil {
				v.Latest = time.Unix(v.Report.Latest.IssuedAt, 0)
			}
			v.Problems = v.Report.Problems
			if len(v.Problems) > 10 {
				v.Problems = v.Problems[:10]
			}
		}
	}
	if r.Header.Get("HX-Request") != "" {
		c.render(w, r, "verification.html", pageData{Data: v})
		return
	}
	c.render(w, r, "verification-page.html", pageData{Title: "Audit log verification", Nav: "logs", Data: v})
}

// handleExport writes the filtered records (at most maxExport, newest
// first) as JSON lines, the format of `ward logs --json`, and records the
// export.
func (c *Console) handleExport(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	f := parseLogFilter(r.URL.Query())
	if len(f.Problems) > 0 {
		c.errorPage(w, r, http.StatusBadRequest, "Not exported", strings.Join(f.Problems, "; "))
		return
	}
	c.resolveUser(ctx, &f)
	var all []*audit.Record
	q := f.query(1000)
	for len(all) < maxExport {
		recs, err := c.d.Audit.ListEvents(ctx, q)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		all = append(all, recs...)
		if len(recs) < q.Limit {
			break
		}
		q.BeforeSeq = recs[len(recs)-1].Seq
	}
	all = all[:min(len(all), maxExport)]
	op := OperatorOf(ctx)
	data := map[string]string{"count": strconv.Itoa(len(all)), "filter": truncate(f.values().Encode(), 512)}
	if err := c.events.Emit(ctx, &model.Event{Type: model.EventConsoleLogsExported, Actor: op.User.ID, UserID: op.User.ID,
		SessionID: op.Session.ID, ClientID: c.d.ClientID, Outcome: model.OutcomeSuccess, Data: data}); err != nil {
		// An export that cannot be recorded does not happen.
		c.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="ward-`+f.Tab+`-`+c.d.Now().UTC().Format("20060102T150405Z")+`.jsonl"`)
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	for _, rec := range all {
		if err := enc.Encode(rec); err != nil {
			return
		}
	}
	_ = bw.Flush()
}

// typeGroups are the audit log's event types for the filter's list.
func typeOptions() []model.EventType {
	ts := audit.EventTypes()
	slices.SortFunc(ts, func(a, b model.EventType) int { return strings.Compare(string(a), string(b)) })
	return ts
}
