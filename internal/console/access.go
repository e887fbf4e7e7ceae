package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/policy"
)

// Access is the Conditional Access service (access.Service): the
// policies in force, their stored versions and What-If.
type Access interface {
	Current(ctx context.Context) (*policy.Document, int64, error)
	Versions(ctx context.Context, limit int) ([]*model.PolicyVersion, error)
	Version(ctx context.Context, n int64) (*model.PolicyVersion, *policy.Document, error)
	Explain(ctx context.Context, w access.WhatIf) (*access.Result, error)
}

// maxVersions is the most versions the page lists.
const maxVersions = 100

type policyRow struct {
	P     policy.Policy
	JSON  string
	Grant string
}

// grantText says what a policy grants with: block, or its controls.
func grantText(g policy.GrantControls) string {
	if g.Block {
		return "block"
	}
	cs := slices.Clone(g.Controls)
	if g.AuthenticationStrength != "" {
		cs = append(cs, "strength "+g.AuthenticationStrength)
	}
	if len(cs) == 0 {
		return "—"
	}
	op := " and "
	if g.Operator == "any" {
		op = " or "
	}
	return strings.Join(cs, op)
}

type accessPage struct {
	Version   int64
	Policies  []policyRow
	Locations []policy.NamedLocation
	Versions  []*model.PolicyVersion
	Users     map[string]string
}

// handleAccess shows the Conditional Access policies in force with their
// canonical documents, the named locations and the stored versions.
func (c *Console) handleAccess(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	doc, version, err := c.d.Access.Current(ctx)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	p := accessPage{Version: version, Locations: doc.Locations, Users: map[string]string{}}
	for _, pol := range doc.Policies {
		b, _ := json.MarshalIndent(pol, "", "  ")
		p.Policies = append(p.Policies, policyRow{P: pol, JSON: string(b), Grant: grantText(pol.Grant)})
	}
	if p.Versions, err = c.d.Access.Versions(ctx, maxVersions); err != nil {
		c.fail(w, r, err)
		return
	}
	users := c.lookup(ctx)
	for _, v := range p.Versions {
		if u := users.get(v.CreatedBy); u != nil {
			p.Users[v.CreatedBy] = u.Username
		}
	}
	c.render(w, r, "access.html", pageData{Title: "Conditional Access", Nav: "access", Data: p})
}

type diffPage struct {
	From, To   int64
	Versions   []*model.PolicyVersion
	Lines      []diffLine
	Added      int
	Removed    int
	Same       bool
	Problem    string
	FromV, ToV *model.PolicyVersion
}

// maxDiffLines bounds each side of a diff (a policy document's indented
// JSON is far shorter).
const maxDiffLines = 20000

// handleAccessDiff shows the line diff of two versions' canonical
// documents (indented JSON), computed here.
func (c *Console) handleAccessDiff(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := diffPage{}
	var err error
	if p.Versions, err = c.d.Access.Versions(ctx, maxVersions); err != nil {
		c.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	from, errF := strconv.ParseInt(q.Get("from"), 10, 64)
	to, errT := strconv.ParseInt(q.Get("to"), 10, 64)
	if errF != nil || errT != nil || from <= 0 || to <= 0 {
		// Default: the two newest versions.
		if len(p.Versions) < 2 {
			p.Problem = "There are fewer than two versions to compare."
			c.render(w, r, "access_diff.html", pageData{Title: "Policy versions: diff", Nav: "access", Data: p})
			return
		}
		from, to = p.Versions[1].Version, p.Versions[0].Version
	}
	p.From, p.To = from, to
	docOf := func(n int64) (*model.PolicyVersion, []string, error) {
		v, _, err := c.d.Access.Version(ctx, n)
		if err != nil {
			return nil, nil, err
		}
		var buf bytes.Buffer
		if err := json.Indent(&buf, v.Document, "", "  "); err != nil {
			return nil, nil, err
		}
		lines := strings.Split(buf.String(), "\n")
		if len(lines) > maxDiffLines {
			return nil, nil, errors.New("the document is too long to compare here")
		}
		return v, lines, nil
	}
	var a, b []string
	p.FromV, a, err = docOf(from)
	if err == nil {
		p.ToV, b, err = docOf(to)
	}
	if err != nil {
		if errors.Is(err, access.ErrNotFound) {
			c.renderStatus(w, r, http.StatusNotFound, "access_diff.html", pageData{Title: "Policy versions: diff", Nav: "access",
				Data: diffPage{Versions: p.Versions, From: from, To: to, Problem: "There is no such version."}})
			return
		}
		c.fail(w, r, err)
		return
	}
	p.Lines = lineDiff(a, b)
	for _, l := range p.Lines {
		switch l.Op {
		case '+':
			p.Added++
		case '-':
			p.Removed++
		}
	}
	p.Same = p.Added == 0 && p.Removed == 0
	c.render(w, r, "access_diff.html", pageData{Title: "Policy versions: diff", Nav: "access", Data: p})
}

type whatIfPage struct {
	W        access.WhatIf
	MFA      bool
	Asked    bool
	Problems []string
	Result   *access.Result
	Flows    []string
	Risks    []string
}

// handleWhatIf evaluates a hypothetical request against the policies in
// force (the access service's What-If) and shows each policy's result
// and why. A GET: it reads and changes nothing.
func (c *Console) handleWhatIf(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	get := func(k string) string { return truncate(strings.TrimSpace(q.Get(k)), maxFilterLength) }
	p := whatIfPage{W: access.WhatIf{User: get("user"), App: get("app"), IP: get("ip"), Device: get("device"),
		SignInRisk: get("sign_in_risk"), UserRisk: get("user_risk"), Flow: get("flow"), MFA: q.Get("mfa") == "on"},
		Flows: []string{policy.FlowInteractive, policy.FlowRefresh, policy.FlowDeviceCode, policy.FlowClientCredentials},
		Risks: []string{policy.RiskNone, policy.RiskLow, policy.RiskMedium, policy.RiskHigh}}
	p.MFA = p.W.MFA
	status := http.StatusOK
	if p.Asked = q.Has("app"); p.Asked {
		res, err := c.d.Access.Explain(r.Context(), p.W)
		switch {
		case errors.Is(err, access.ErrWhatIf):
			status = http.StatusBadRequest
			for _, e := range strings.Split(err.Error(), "\n") {
				p.Problems = append(p.Problems, strings.TrimPrefix(e, access.ErrWhatIf.Error()+": "))
			}
		case err != nil:
			c.fail(w, r, err)
			return
		default:
			p.Result = res
		}
	}
	c.renderStatus(w, r, status, "access_whatif.html", pageData{Title: "What-If", Nav: "access", Data: p})
}

// reportRow is what one report-only policy would have done.
type reportRow struct {
	Policy      string
	Evaluated   int
	WouldBlock  int
	WouldNeed   int
	Controls    map[string]int
	ControlList []namedCount
	Examples    []reportExample
}

type reportExample struct {
	At      time.Time
	User    string
	UserID  string
	App, IP string
	Outcome string
	Unmet   string
	// WhatIf asks What-If about the same user, application and address.
	WhatIf string
}

type reportPage struct {
	Days    int
	DaysOpt []int
	Rows    []*reportRow
	Scanned int
	Capped  bool
	Since   time.Time
}

// maxReportEvents bounds the sign-in records the report reads.
const maxReportEvents = 20000

// handleReportOnly sums up the sign-in log's report-only results over the
// last days: per report-only policy, the sign-ins it was evaluated for,
// those it would have blocked or asked more of, and the latest of them.
func (c *Console) handleReportOnly(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := reportPage{Days: 7, DaysOpt: []int{1, 7, 30}}
	if d, err := strconv.Atoi(r.URL.Query().Get("days")); err == nil && slices.Contains(p.DaysOpt, d) {
		p.Days = d
	}
	now := c.d.Now()
	p.Since = now.Add(-time.Duration(p.Days) * 24 * time.Hour)
	byPolicy := map[string]*reportRow{}
	users := c.lookup(ctx)
	var before int64
	for p.Scanned < maxReportEvents {
		evs, err := c.d.Audit.ListEvents(ctx, audit.Query{Types: signInLogTypes, Since: p.Since, Until: now.Add(time.Second), BeforeSeq: before, Limit: 1000})
		if err != nil {
			c.fail(w, r, err)
			return
		}
		for _, e := range evs {
			p.Scanned++
			before = e.Seq
			ro := e.Data["ca_report_only"]
			if ro == "" {
				continue
			}
			for _, entry := range strings.Split(ro, ",") {
				id, rest, _ := strings.Cut(entry, "=")
				outcome, unmet, _ := strings.Cut(rest, ":")
				row := byPolicy[id]
				if row == nil {
					row = &reportRow{Policy: id, Controls: map[string]int{}}
					byPolicy[id] = row
				}
				row.Evaluated++
				switch policy.Outcome(outcome) {
				case policy.OutcomeBlock:
					row.WouldBlock++
				case policy.OutcomeAllowWithControls:
					row.WouldNeed++
					for _, ctl := range strings.Split(unmet, "+") {
						if ctl != "" {
							row.Controls[ctl]++
						}
					}
				default:
					continue
				}
				if len(row.Examples) < 10 {
					ex := reportExample{At: e.Time, UserID: e.UserID, App: e.ClientID, IP: e.IP, Outcome: outcome,
						Unmet: strings.ReplaceAll(unmet, "+", ", "), WhatIf: whatIfURL(e.UserID, e.ClientID, e.IP)}
					if u := users.get(e.UserID); u != nil {
						ex.User = u.Username
					}
					row.Examples = append(row.Examples, ex)
				}
			}
		}
		if len(evs) < 1000 {
			break
		}
	}
	p.Capped = p.Scanned >= maxReportEvents
	for _, row := range byPolicy {
		for k, n := range row.Controls {
			row.ControlList = append(row.ControlList, namedCount{Name: k, Count: int64(n)})
		}
		slices.SortFunc(row.ControlList, func(a, b namedCount) int { return strings.Compare(a.Name, b.Name) })
		p.Rows = append(p.Rows, row)
	}
	slices.SortFunc(p.Rows, func(a, b *reportRow) int {
		if d := (b.WouldBlock + b.WouldNeed) - (a.WouldBlock + a.WouldNeed); d != 0 {
			return d
		}
		return strings.Compare(a.Policy, b.Policy)
	})
	c.render(w, r, "access_report.html", pageData{Title: "Report-only results", Nav: "access", Data: p})
}

// diffLine is a line of a diff: ' ' in both, '-' only in the old, '+'
// only in the new; Old and New are line numbers (0: none).
type diffLine struct {
	Op       byte
	Old, New int
	Text     string
}

// maxEdits bounds a diff's edit distance: two documents further apart
// are shown as the old removed and the new added.
const maxEdits = 1000

// lineDiff is the shortest edit script from a to b (Myers' O(ND)
// algorithm), as lines. Each round's frontier is kept (only its 2d+1
// diagonals) to walk the script back.
func lineDiff(a, b []string) []diffLine {
	n, m := len(a), len(b)
	// frontier[d][k+d] is the furthest x on diagonal k after d edits.
	var frontier [][]int
	get := func(d, k int) int {
		if d < 0 || k < -d || k > d {
			return -1
		}
		return frontier[d][k+d]
	}
	for d := 0; d <= n+m && d <= maxEdits; d++ {
		row := make([]int, 2*d+1)
		frontier = append(frontier, row)
		for k := -d; k <= d; k += 2 {
			var x int
			switch {
			case d == 0:
				x = 0
			case k == -d || (k != d && get(d-1, k-1) < get(d-1, k+1)):
				x = get(d-1, k+1) // down: an insertion
			default:
				x = get(d-1, k-1) + 1 // right: a deletion
			}
			y := x - k
			for x < n && y < m && a[x] == b[y] {
				x, y = x+1, y+1
			}
			row[k+d] = x
			if x >= n && y >= m {
				return walkBack(get, a, b, d)
			}
		}
	}
	out := make([]diffLine, 0, n+m)
	for i, l := range a {
		out = append(out, diffLine{Op: '-', Old: i + 1, Text: l})
	}
	for i, l := range b {
		out = append(out, diffLine{Op: '+', New: i + 1, Text: l})
	}
	return out
}

func walkBack(get func(d, k int) int, a, b []string, dEnd int) []diffLine {
	x, y := len(a), len(b)
	var out []diffLine
	for d := dEnd; d >= 0; d-- {
		k := x - y
		var px, py int
		if d > 0 {
			pk := k - 1
			if k == -d || (k != d && get(d-1, k-1) < get(d-1, k+1)) {
				pk = k + 1
			}
			px = get(d-1, pk)
			py = px - pk
		}
		// The snake: equal lines back to where this edit ended.
		// After an insertion (from diagonal k+1) it starts at (px, py+1),
		// after a deletion (from k-1) at (px+1, py).
		sx := px
		if d > 0 && px-py == k-1 {
			sx = px + 1
		}
		for x > sx && y > sx-k {
			out = append(out, diffLine{Op: ' ', Old: x, New: y, Text: a[x-1]})
			x, y = x-1, y-1
		}
		if d > 0 {
			if x == px {
				out = append(out, diffLine{Op: '+', New: y, Text: b[y-1]})
			} else {
				out = append(out, diffLine{Op: '-', Old: x, Text: a[x-1]})
			}
		}
		x, y = px, py
	}
	slices.Reverse(out)
	return out
}

// whatIfURL is the What-If page for a request like a logged sign-in.
func whatIfURL(user, app, ip string) string {
	v := url.Values{"user": {user}, "app": {app}, "ip": {ip}}
	return Prefix + "/access/whatif?" + v.Encode()
}
