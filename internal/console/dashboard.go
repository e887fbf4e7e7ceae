package console

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/incident"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/session"
	"github.com/ward-idp/ward/internal/store"
)

// span is a dashboard time range: n buckets of size each.
type span struct {
	Key    string
	Label  string
	bucket time.Duration
	n      int
}

var spans = []span{
	{"24h", "Last 24 hours", time.Hour, 24},
	{"7d", "Last 7 days", 24 * time.Hour, 7},
	{"30d", "Last 30 days", 24 * time.Hour, 30},
}

func spanOf(key string) span {
	for _, s := range spans {
		if s.Key == key {
			return s
		}
	}
	return spans[0]
}

// start is the first bucket's start: buckets end with the one holding now.
func (s span) start(now time.Time) time.Time {
	return now.UTC().Truncate(s.bucket).Add(-time.Duration(s.n-1) * s.bucket)
}

// What the dashboard counts.
var (
	signInTypes = []model.EventType{model.EventSignInSucceeded, model.EventSignInFailed, model.EventSSOSignIn}
	// replayTypes are refused uses of a stolen credential: a rotated
	// refresh token or a used code presented again (the session is
	// revoked), DPoP proofs refused at the token endpoint (replayed jti,
	// wrong key), and token uses a resource refused.
	replayTypes = []model.EventType{model.EventRefreshReuseDetected, model.EventCodeReuseDetected, model.EventDPoPProofRejected, model.EventTokenUsed}
)

// replayNames label the replay series.
var replayNames = map[model.EventType]string{
	model.EventRefreshReuseDetected: "Refresh token replayed",
	model.EventCodeReuseDetected:    "Authorization code replayed",
	model.EventDPoPProofRejected:    "DPoP proof refused",
	model.EventTokenUsed:            "Token refused by a resource",
}

// coverage is the token-protection coverage of the active sessions.
type coverage struct {
	Sessions int // active sessions looked at
	Capped   bool
	Device   int // bound to a registered device's key
	Key      int // bound to a DPoP key of no registered device
	Browser  int // bound to the browser's key (DBSC) only
	None     int
	Bar      *barChart
}

type dashboard struct {
	Span           span
	Spans          []span
	Now            time.Time
	SignIns        *barChart
	SignInOK       int64
	SignInFailed   int64
	Replays        *barChart
	ReplayTotal    int64
	ReplayByType   []namedCount
	Coverage       coverage
	RiskyUsers     []riskyUser
	RiskySessions  []riskySession
	RiskAvailable  bool
	Noncompliant   []deviceRow
	NoncompliantN  int
	NoncompliantOf int
	// Incidents: the open incidents (new, active) by severity, the newest
	// of them; IncidentsCapped: more than were counted.
	IncidentsAvailable bool
	OpenIncidents      int
	IncidentsCapped    bool
	OpenBySeverity     []namedCount
	NewestIncidents    []incidentRow
}

type namedCount struct {
	Name  string
	Count int64
}

type riskyUser struct {
	User  *model.User
	Level string
	At    time.Time
}

type riskySession struct {
	SessionID string
	User      *model.User
	UserID    string
	Level     string
	At        time.Time
}

// deviceRow is a device with its user and failing rules.
type deviceRow struct {
	Device   *model.Device
	User     *model.User
	Failures []device.Failure
}

func (c *Console) handleDashboard(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	now := c.d.Now()
	sp := spanOf(r.URL.Query().Get("range"))
	d := dashboard{Span: sp, Spans: spans, Now: now}
	users := c.lookup(ctx)
	from := sp.start(now)
	counts, err := c.d.Audit.CountEvents(ctx, store.EventCountFilter{Types: append(slices.Clone(signInTypes), replayTypes...),
		Since: from, Until: from.Add(time.Duration(sp.n) * sp.bucket), Bucket: sp.bucket})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.signInChart(&d, counts, from)
	c.replayChart(&d, counts, from)
	if d.Coverage, err = c.coverage(r); err != nil {
		c.fail(w, r, err)
		return
	}
	if c.d.Risk != nil {
		d.RiskAvailable = true
		l, err := c.d.Risk.List(ctx, nil, 10)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		for _, u := range l.Users {
			if x := users.get(u.UserID); x != nil {
				d.RiskyUsers = append(d.RiskyUsers, riskyUser{User: x, Level: u.Level, At: u.UpdatedAt})
			}
		}
		for _, s := range l.Sessions {
			d.RiskySessions = append(d.RiskySessions, riskySession{SessionID: s.SessionID, UserID: s.UserID, User: users.get(s.UserID), Level: s.Level, At: s.UpdatedAt})
		}
	}
	devs, err := c.d.Devices.List(ctx, device.Filter{Status: model.DeviceActive, Compliance: model.NonCompliant, Limit: 1000})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	d.NoncompliantN = len(devs)
	for i, dv := range devs {
		if i == 8 {
			break
		}
		d.Noncompliant = append(d.Noncompliant, deviceRow{Device: dv, User: users.get(dv.UserID), Failures: device.DecodeFailures(dv)})
	}
	if all, err := c.d.Devices.List(ctx, device.Filter{Status: model.DeviceActive, Limit: 1000}); err == nil {
		d.NoncompliantOf = len(all)
	}
	if c.d.Incidents != nil {
		if err := c.incidentCounts(ctx, &d); err != nil {
			c.fail(w, r, err)
			return
		}
	}
	c.render(w, r, "dashboard.html", pageData{Title: "Dashboard", Nav: "dashboard", Data: d})
}

// bucketIndex is the bucket of t (-1 outside the range).
func bucketIndex(sp span, from, t time.Time) int {
	i := int(t.Sub(from) / sp.bucket)
	if i < 0 || i >= sp.n {
		return -1
	}
	return i
}

func (c *Console) signInChart(d *dashboard, counts []store.EventCount, from time.Time) {
	ok, failed := make([]int64, d.Span.n), make([]int64, d.Span.n)
	for _, x := range counts {
		if !slices.Contains(signInTypes, x.Type) {
			continue
		}
		i := bucketIndex(d.Span, from, x.Start)
		if i < 0 {
			continue
		}
		if x.Outcome == model.OutcomeSuccess {
			ok[i] += x.Count
			d.SignInOK += x.Count
		} else {
			failed[i] += x.Count
			d.SignInFailed += x.Count
		}
	}
	series := []series{{Name: "Succeeded", Class: "s-ok", Values: ok}, {Name: "Failed or refused", Class: "s-bad", Values: failed}}
	d.SignIns = stackedBars("signins", "Sign-ins per "+bucketWord(d.Span), d.Span, from, series)
}

func (c *Console) replayChart(d *dashboard, counts []store.EventCount, from time.Time) {
	per := map[model.EventType][]int64{}
	totals := map[model.EventType]int64{}
	for _, t := range replayTypes {
		per[t] = make([]int64, d.Span.n)
	}
	for _, x := range counts {
		vals, ok := per[x.Type]
		if !ok || x.Outcome != model.OutcomeFailure && x.Type == model.EventTokenUsed {
			continue
		}
		if i := bucketIndex(d.Span, from, x.Start); i >= 0 {
			vals[i] += x.Count
			totals[x.Type] += x.Count
			d.ReplayTotal += x.Count
		}
	}
	classes := []string{"s-r1", "s-r2", "s-r3", "s-r4"}
	var ss []series
	for i, t := range replayTypes {
		ss = append(ss, series{Name: replayNames[t], Class: classes[i], Values: per[t]})
		d.ReplayByType = append(d.ReplayByType, namedCount{Name: replayNames[t], Count: totals[t]})
	}
	d.Replays = stackedBars("replays", "Refused replays per "+bucketWord(d.Span), d.Span, from, ss)
}

func bucketWord(sp span) string {
	if sp.bucket == time.Hour {
		return "hour"
	}
	return "day"
}

// maxCoverageSessions bounds how many active sessions the coverage looks
// at (the newest).
const maxCoverageSessions = 1000

// coverage classifies the active sessions by what their tokens are bound
// to: a registered device's key (token protection), another DPoP key,
// the browser's key (DBSC) only, or nothing.
func (c *Console) coverage(r *http.Request) (coverage, error) {
	var cv coverage
	ss, err := c.d.Sessions.List(r.Context(), session.Filter{ActiveOnly: true, Limit: maxCoverageSessions})
	if err != nil {
		return cv, err
	}
	cv.Sessions, cv.Capped = len(ss), len(ss) == maxCoverageSessions
	ids := make([]string, len(ss))
	for i, s := range ss {
		ids[i] = s.ID
	}
	bs, err := c.d.Sessions.Bindings(r.Context(), ids)
	if err != nil {
		return cv, err
	}
	for _, s := range ss {
		switch b := bs[s.ID]; {
		case b != nil && len(b.DeviceIDs) > 0:
			cv.Device++
		case b != nil && len(b.JKTs) > 0:
			cv.Key++
		case s.DBSCKeyJKT != "":
			cv.Browser++
		default:
			cv.None++
		}
	}
	cv.Bar = shareBar("coverage", "Active sessions by binding", []share{
		{Name: "Registered device key", Class: "s-ok", N: cv.Device},
		{Name: "DPoP key (no registered device)", Class: "s-r3", N: cv.Key},
		{Name: "Browser key (DBSC)", Class: "s-r2", N: cv.Browser},
		{Name: "Not bound", Class: "s-bad", N: cv.None},
	}, cv.Sessions)
	return cv, nil
}

// --- SVG charts, drawn on the server: presentation attributes and CSS
// classes only (no style attribute: the CSP allows no inline style).

type series struct {
	Name   string
	Class  string
	Values []int64
}

type barChart struct {
	ID, Title, Desc string
	Width, Height   int
	PlotTop         int
	PlotBottom      int
	Bars            []bar
	XLabels         []axisLabel
	YTicks          []axisLabel
	Legend          []legendItem
	Table           [][]string // the same numbers as a table
	TableHead       []string
}

type bar struct {
	Segs []seg
}

type seg struct {
	X, Y, W, H int
	Class      string
	Title      string
}

type axisLabel struct {
	X, Y int
	Text string
}

type legendItem struct {
	Class, Name string
}

const (
	chartW = 640
	chartH = 200
	padL   = 40
	padR   = 8
	padTop = 10
	padBot = 24
)

// stackedBars lays out one stacked bar per bucket.
func stackedBars(id, title string, sp span, from time.Time, ss []series) *barChart {
	ch := &barChart{ID: id, Title: title, Width: chartW, Height: chartH, PlotTop: padTop, PlotBottom: chartH - padBot}
	var max int64 = 1
	totals := make([]int64, sp.n)
	for i := 0; i < sp.n; i++ {
		for _, s := range ss {
			totals[i] += s.Values[i]
		}
		max = maxInt(max, totals[i])
	}
	max = niceMax(max)
	plotH := ch.PlotBottom - ch.PlotTop
	slot := float64(chartW-padL-padR) / float64(sp.n)
	bw := int(slot * 0.7)
	if bw < 2 {
		bw = 2
	}
	label := func(t time.Time) string {
		if sp.bucket == time.Hour {
			return t.Format("15h")
		}
		return t.Format("Jan 2")
	}
	every := (sp.n + 7) / 8
	ch.TableHead = []string{"Period"}
	for _, s := range ss {
		ch.TableHead = append(ch.TableHead, s.Name)
	}
	for i := 0; i < sp.n; i++ {
		x := padL + int(float64(i)*slot+(slot-float64(bw))/2)
		y := ch.PlotBottom
		start := from.Add(time.Duration(i) * sp.bucket)
		row := []string{start.Format("2006-01-02 15:04Z")}
		var b bar
		for _, s := range ss {
			v := s.Values[i]
			row = append(row, strconv.FormatInt(v, 10))
			if v == 0 {
				continue
			}
			h := int(float64(v) / float64(max) * float64(plotH))
			if h < 1 {
				h = 1
			}
			y -= h
			b.Segs = append(b.Segs, seg{X: x, Y: y, W: bw, H: h, Class: s.Class, Title: fmt.Sprintf("%s, %s: %d", label(start), s.Name, v)})
		}
		ch.Bars = append(ch.Bars, b)
		ch.Table = append(ch.Table, row)
		if i%every == 0 {
			ch.XLabels = append(ch.XLabels, axisLabel{X: x + bw/2, Y: ch.PlotBottom + 16, Text: label(start)})
		}
	}
	for k := 0; k <= 4; k++ {
		v := max * int64(k) / 4
		ch.YTicks = append(ch.YTicks, axisLabel{X: padL - 6, Y: ch.PlotBottom - int(float64(v)/float64(max)*float64(plotH)), Text: strconv.FormatInt(v, 10)})
	}
	for _, s := range ss {
		ch.Legend = append(ch.Legend, legendItem{Class: s.Class, Name: s.Name})
	}
	var sum int64
	for _, t := range totals {
		sum += t
	}
	ch.Desc = fmt.Sprintf("%s: %d in all over %s; the table below has each value.", title, sum, sp.Label)
	return ch
}

type share struct {
	Name  string
	Class string
	N     int
}

// shareBar is one horizontal bar split by share.
func shareBar(id, title string, shares []share, total int) *barChart {
	ch := &barChart{ID: id, Title: title, Width: chartW, Height: 32, PlotTop: 0, PlotBottom: 32}
	x := 0.0
	ch.TableHead = []string{"Binding", "Sessions", "Share"}
	var b bar
	for _, s := range shares {
		ch.Table = append(ch.Table, []string{s.Name, strconv.Itoa(s.N), pctOf(s.N, total)})
		ch.Legend = append(ch.Legend, legendItem{Class: s.Class, Name: fmt.Sprintf("%s: %s", s.Name, pctOf(s.N, total))})
		if total == 0 || s.N == 0 {
			continue
		}
		w := float64(chartW) * float64(s.N) / float64(total)
		b.Segs = append(b.Segs, seg{X: int(x), Y: 0, W: max(1, int(w+0.5)), H: 32, Class: s.Class, Title: fmt.Sprintf("%s: %d of %d", s.Name, s.N, total)})
		x += w
	}
	ch.Bars = []bar{b}
	ch.Desc = fmt.Sprintf("%s: %d active sessions; the table below has each share.", title, total)
	return ch
}

func pctOf(n, total int) string {
	if total == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(n)/float64(total))
}

func maxInt(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// niceMax is an axis maximum of at least v with four whole, round ticks:
// four times a step of 1, 2, 3 or 5 times a power of ten.
func niceMax(v int64) int64 {
	need := max((v+3)/4, 1)
	for p := int64(1); ; p *= 10 {
		for _, m := range []int64{1, 2, 3, 5} {
			if m*p >= need {
				return 4 * m * p
			}
		}
	}
}

// riskLevelOf is the user's level as the console shows it.
func riskLevelOf(u *model.User) string {
	if u.RiskLevel == "" {
		return model.RiskNone
	}
	return u.RiskLevel
}

// maxCountedIncidents bounds the dashboard's count of open incidents.
const maxCountedIncidents = 1000

// incidentCounts fills the open-incidents card: how many are open, by
// severity, and the newest five.
func (c *Console) incidentCounts(ctx context.Context, d *dashboard) error {
	list, err := c.d.Incidents.List(ctx, incident.Filter{Statuses: []string{"open"}, Limit: maxCountedIncidents})
	if err != nil {
		return err
	}
	d.IncidentsAvailable, d.OpenIncidents, d.IncidentsCapped = true, len(list), len(list) == maxCountedIncidents
	by := map[string]int64{}
	for _, in := range list {
		by[in.Severity]++
	}
	for _, s := range []string{model.RiskHigh, model.RiskMedium, model.RiskLow} {
		d.OpenBySeverity = append(d.OpenBySeverity, namedCount{Name: s, Count: by[s]})
	}
	users := c.lookup(ctx)
	for _, in := range list[:min(len(list), 5)] {
		d.NewestIncidents = append(d.NewestIncidents, incidentRow{Incident: in, Heading: heading(in.Title, users)})
	}
	return nil
}
