package console

import (
	"crypto/rand"
	"errors"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/incident"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/risk"
	"github.com/ward-idp/ward/internal/session"
)

type userRow struct {
	User   *model.User
	Risk   string
	Locked bool
	TOTP   bool
}

type usersPage struct {
	Q, Risk string
	Levels  []string
	Rows    []userRow
	Total   int
	// Matched counts the matches; a page shows at most Size of them.
	Matched int
	Size    int
	// First and Last number (from 1) the page's rows; Next and Start are
	// the links to the following page and back to the first
	// ("": none).
	First, Last int
	Next, Start string
}

// Page sizes of the users list: a page is bounded, and the list is read
// page by page with the "next" link.
const (
	defaultUserRows = 100
	maxUserRows     = 500
)

// userCursor is where a page of the users list starts: after the row of
// this risk level and username, in the list's order (riskiest first, then
// by username). Usernames are unique, so the order is total and a page
// neither repeats nor skips a user when others are added or removed
// meanwhile.
type userCursor struct {
	rank     int
	username string
}

// cursorParam is the "after" parameter naming row u.
func cursorParam(u userRow) string { return u.Risk + ":" + u.User.Username }

// parseCursor reads an "after" parameter ("" : the first page).
func parseCursor(v string) (*userCursor, bool) {
	if v == "" {
		return nil, true
	}
	level, name, ok := strings.Cut(v, ":")
	if !ok || name == "" {
		return nil, false
	}
	switch level {
	case "high", "medium", "low", "none":
	default:
		return nil, false
	}
	return &userCursor{rank: model.RiskRank(level), username: name}, true
}

// after reports whether row u comes after the cursor in the list's order.
func (c *userCursor) after(u userRow) bool {
	if c == nil {
		return true
	}
	if r := model.RiskRank(u.Risk); r != c.rank {
		return r < c.rank
	}
	return u.User.Username > c.username
}

// handleUsers lists users, riskiest first, filtered by a search text
// (username, name, email) and a risk level, a page at a time (n rows,
// after the row the "after" parameter names).
func (c *Console) handleUsers(w http.ResponseWriter, r *http.Request) {
	qv := r.URL.Query()
	size := defaultUserRows
	if v := qv.Get("n"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			c.errorPage(w, r, http.StatusBadRequest, "Invalid request", "The page size must be a positive number.")
			return
		}
		size = min(n, maxUserRows)
	}
	cur, ok := parseCursor(qv.Get("after"))
	if !ok {
		c.errorPage(w, r, http.StatusBadRequest, "Invalid request", "The page's starting point is not valid: follow the list's links.")
		return
	}
	us, err := c.d.Identity.ListUsers(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	now := c.d.Now()
	q := strings.ToLower(strings.TrimSpace(qv.Get("q")))
	level := qv.Get("risk")
	p := usersPage{Q: q, Risk: level, Levels: []string{"high", "medium", "low", "none"}, Total: len(us), Size: size}
	var rows []userRow
	for _, u := range us {
		if q != "" && !strings.Contains(strings.ToLower(u.Username+" "+u.DisplayName+" "+u.Email), q) {
			continue
		}
		rl := riskLevelOf(u)
		if level != "" && rl != level {
			continue
		}
		rows = append(rows, userRow{User: u, Risk: rl, Locked: u.LockedUntil.After(now)})
	}
	slices.SortStableFunc(rows, func(a, b userRow) int {
		if d := model.RiskRank(b.Risk) - model.RiskRank(a.Risk); d != 0 {
			return d
		}
		return strings.Compare(a.User.Username, b.User.Username)
	})
	p.Matched = len(rows)
	start := 0
	if cur != nil {
		start = sort.Search(len(rows), func(i int) bool { return cur.after(rows[i]) })
	}
	end := min(len(rows), start+size)
	p.Rows, p.First, p.Last = rows[start:end], start+1, end
	for i := range p.Rows {
		p.Rows[i].TOTP = c.d.Identity.HasTOTP(p.Rows[i].User)
	}
	link := func(after string) string {
		v := url.Values{}
		if q != "" {
			v.Set("q", q)
		}
		if level != "" {
			v.Set("risk", level)
		}
		if size != defaultUserRows {
			v.Set("n", strconv.Itoa(size))
		}
		if after != "" {
			v.Set("after", after)
		}
		if len(v) == 0 {
			return Prefix + "/users"
		}
		return Prefix + "/users?" + v.Encode()
	}
	if end < len(rows) && end > start {
		p.Next = link(cursorParam(rows[end-1]))
	}
	if cur != nil {
		p.Start = link("")
	}
	c.render(w, r, "users.html", pageData{Title: "Users", Nav: "users", Data: p})
}

// sessionRow is a session with what its tokens are bound to.
type sessionRow struct {
	S            *model.Session
	Active       bool
	Binding      string // device, key, browser, none
	BindingLabel string
	Devices      []deviceRef
	Clients      []string
	Risk         string
	Current      bool // the operator's own console session
}

// deviceRef names a device: its id and, when known, its host name.
type deviceRef struct{ ID, Name string }

type userPage struct {
	User         *model.User
	Now          time.Time
	Risk         string
	Locked       bool
	TOTP         bool
	RecoveryLeft int
	Groups       []string
	Sessions     []sessionRow
	Devices      []deviceRow
	Explanation  *risk.Explanation
	SignIns      []*audit.Record
	NewPassword  string
	Self         bool
	// Incidents naming the user, newest first (nil: no incident service).
	Incidents    []incidentRow
	HasIncidents bool
	// Graph is the user's investigation graph over the last week (nil:
	// no graph service).
	Graph *graphView
}

// bindingOf says what a session's tokens are bound to, strongest first.
func bindingOf(s *model.Session, b *session.Binding) (kind, label string) {
	switch {
	case b != nil && len(b.DeviceIDs) > 0:
		return "device", "Registered device key"
	case b != nil && len(b.JKTs) > 0:
		return "key", "DPoP key (no registered device)"
	case s.DBSCKeyJKT != "":
		return "browser", "Browser key (DBSC)"
	}
	return "none", "Not bound"
}

func (c *Console) userPage(r *http.Request, id string) (*userPage, error) {
	ctx := r.Context()
	u, err := c.d.Identity.GetUser(ctx, id)
	if err != nil {
		return nil, err
	}
	now := c.d.Now()
	p := &userPage{User: u, Now: now, Risk: riskLevelOf(u), Locked: u.LockedUntil.After(now), TOTP: c.d.Identity.HasTOTP(u),
		Self: OperatorOf(ctx).User.ID == u.ID}
	if p.TOTP {
		if p.RecoveryLeft, err = c.d.Identity.RecoveryCodesLeft(ctx, u.ID); err != nil {
			return nil, err
		}
	}
	gs, err := c.d.Identity.GroupsOf(ctx, u.ID)
	if err != nil {
		return nil, err
	}
	for _, g := range gs {
		p.Groups = append(p.Groups, g.Name)
	}
	levels := map[string]string{}
	if c.d.Risk != nil {
		if p.Explanation, err = c.d.Risk.Explain(ctx, u.ID, ""); err != nil {
			return nil, err
		}
		for _, s := range p.Explanation.Sessions {
			levels[s.SessionID] = s.Level
		}
	}
	ss, err := c.d.Sessions.List(ctx, session.Filter{UserID: u.ID, Limit: 50})
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(ss))
	for i, s := range ss {
		ids[i] = s.ID
	}
	bs, err := c.d.Sessions.Bindings(ctx, ids)
	if err != nil {
		return nil, err
	}
	devs, err := c.d.Devices.List(ctx, device.Filter{UserID: u.ID})
	if err != nil {
		return nil, err
	}
	hosts := map[string]string{}
	for _, dv := range devs {
		p.Devices = append(p.Devices, deviceRow{Device: dv, User: u, Failures: device.DecodeFailures(dv)})
		hosts[dv.ID] = dv.Hostname
	}
	opSID := OperatorOf(ctx).Session.ID
	for _, s := range ss {
		b := bs[s.ID]
		row := sessionRow{S: s, Active: s.Active(now), Risk: levels[s.ID], Current: s.ID == opSID}
		row.Binding, row.BindingLabel = bindingOf(s, b)
		if b != nil {
			row.Clients = b.ClientIDs
			for _, id := range b.DeviceIDs {
				row.Devices = append(row.Devices, deviceRef{ID: id, Name: hosts[id]})
			}
		}
		p.Sessions = append(p.Sessions, row)
	}
	if p.SignIns, err = c.d.Audit.ListEvents(ctx, audit.Query{UserID: u.ID, Types: signInLogTypes, Limit: 10}); err != nil {
		return nil, err
	}
	if c.d.Incidents != nil {
		p.HasIncidents = true
		list, err := c.d.Incidents.List(ctx, incident.Filter{UserID: u.ID, Limit: 10})
		if err != nil {
			return nil, err
		}
		users := c.lookup(ctx)
		for _, in := range list {
			p.Incidents = append(p.Incidents, incidentRow{Incident: in, Heading: heading(in.Title, users)})
		}
	}
	p.Graph = c.userGraph(ctx, u.ID)
	return p, nil
}

// handleUser shows a user: profile, second factors, risk and its
// detections, sessions with their binding, devices, recent sign-ins.
func (c *Console) handleUser(w http.ResponseWriter, r *http.Request) {
	p, err := c.userPage(r, r.PathValue("id"))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, "user.html", pageData{Title: p.User.Username, Nav: "users", Notice: noticeOf(r), Data: p})
}

func userURL(id string) string { return Prefix + "/users/" + id }

// handleRevokeUserSessions revokes every session of the user.
func (c *Console) handleRevokeUserSessions(w http.ResponseWriter, r *http.Request) {
	op, id := OperatorOf(r.Context()), r.PathValue("id")
	if _, err := c.d.Identity.GetUser(r.Context(), id); err != nil {
		c.fail(w, r, err)
		return
	}
	if _, err := c.d.Sessions.RevokeUser(r.Context(), op.User.ID, id, model.CauseAdminRevoked); err != nil {
		c.fail(w, r, err)
		return
	}
	c.done(w, r, userURL(id), "revoked-all")
}

// handleRevokeSession revokes one session of the user.
func (c *Console) handleRevokeSession(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	op, id, sid := OperatorOf(ctx), r.PathValue("id"), r.PathValue("sid")
	s, err := c.d.Sessions.Get(ctx, sid)
	if err != nil || s.UserID != id {
		c.errorPage(w, r, http.StatusNotFound, "Not found", "The user has no such session.")
		return
	}
	revoked, err := c.d.Sessions.Revoke(ctx, op.User.ID, sid, model.CauseAdminRevoked)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	notice := "revoked"
	if !revoked {
		notice = "already-done"
	}
	c.done(w, r, userURL(id), notice)
}

func (c *Console) handleSetDisabled(disabled bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		op, id := OperatorOf(r.Context()), r.PathValue("id")
		if disabled && id == op.User.ID {
			c.errorPage(w, r, http.StatusConflict, "Not done", "You cannot disable your own account from the console.")
			return
		}
		if err := c.d.Identity.SetDisabled(r.Context(), op.User.ID, id, disabled); err != nil {
			c.fail(w, r, err)
			return
		}
		notice := "enabled"
		if disabled {
			notice = "disabled"
		}
		c.done(w, r, userURL(id), notice)
	}
}

// handleResetPassword gives the user a random temporary password, shown
// once to the operator (the response is not stored); the password change
// revokes the user's sessions.
func (c *Console) handleResetPassword(w http.ResponseWriter, r *http.Request) {
	op, id := OperatorOf(r.Context()), r.PathValue("id")
	pw := temporaryPassword()
	if err := c.d.Identity.SetPassword(r.Context(), op.User.ID, id, pw); err != nil {
		if errors.Is(err, identity.ErrInvalidInput) {
			c.errorPage(w, r, http.StatusConflict, "Not done", "The generated password was refused by the password policy; try again.")
			return
		}
		c.fail(w, r, err)
		return
	}
	p, err := c.userPage(r, id)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	p.NewPassword = pw
	c.render(w, r, "user.html", pageData{Title: p.User.Username, Nav: "users",
		Notice: "The password was reset and the user's sessions revoked. Give the user the temporary password below over a trusted channel; it is shown only once.", Data: p})
}

func (c *Console) handleUnlock(w http.ResponseWriter, r *http.Request) {
	op, id := OperatorOf(r.Context()), r.PathValue("id")
	if err := c.d.Identity.Unlock(r.Context(), op.User.ID, id); err != nil {
		c.fail(w, r, err)
		return
	}
	c.done(w, r, userURL(id), "unlocked")
}

// temporaryPassword is 20 characters from an alphabet without look-alikes
// (about 116 bits).
func temporaryPassword() string {
	const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	out := make([]byte, 20)
	n := big.NewInt(int64(len(alphabet)))
	for i := range out {
		x, err := rand.Int(rand.Reader, n)
		if err != nil {
			panic(err)
		}
		out[i] = alphabet[x.Int64()]
	}
	return string(out)
}

// maxRiskReason bounds an operator's reason for a risk decision.
const maxRiskReason = 200

// riskReason reads the reason of a risk decision (required, one line).
func riskReason(r *http.Request) (string, bool) {
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	return reason, reason != "" && len(reason) <= maxRiskReason && !strings.ContainsAny(reason, "\r\n")
}

// handleDismissRisk dismisses the user's active detections (or the one
// named by the form's detection) as false positives.
func (c *Console) handleDismissRisk(w http.ResponseWriter, r *http.Request) {
	op, id := OperatorOf(r.Context()), r.PathValue("id")
	if c.d.Risk == nil {
		c.errorPage(w, r, http.StatusNotFound, "Not found", "Risk levels are not available on this server.")
		return
	}
	reason, ok := riskReason(r)
	if !ok {
		c.errorPage(w, r, http.StatusBadRequest, "Not done", "Give a reason of at most 200 characters on one line.")
		return
	}
	target := risk.Target{UserID: id}
	if det := r.PostFormValue("detection"); det != "" {
		// The detection must be this user's.
		ex, err := c.d.Risk.Explain(r.Context(), id, "")
		if err != nil {
			c.fail(w, r, err)
			return
		}
		if !slices.ContainsFunc(ex.Detections, func(d risk.Detection) bool { return d.ID == det }) {
			c.errorPage(w, r, http.StatusNotFound, "Not found", "The user has no such detection.")
			return
		}
		target = risk.Target{DetectionID: det}
	}
	if _, err := c.d.Risk.Dismiss(r.Context(), op.User.ID, target, reason); err != nil {
		if errors.Is(err, risk.ErrNotActive) {
			c.errorPage(w, r, http.StatusConflict, "Not done", "Nothing to dismiss: no active detection.")
			return
		}
		c.fail(w, r, err)
		return
	}
	c.done(w, r, userURL(id), "dismissed")
}

// handleConfirmCompromised confirms that the account is compromised: high
// risk, every session revoked.
func (c *Console) handleConfirmCompromised(w http.ResponseWriter, r *http.Request) {
	op, id := OperatorOf(r.Context()), r.PathValue("id")
	if c.d.Risk == nil {
		c.errorPage(w, r, http.StatusNotFound, "Not found", "Risk levels are not available on this server.")
		return
	}
	reason, ok := riskReason(r)
	if !ok {
		c.errorPage(w, r, http.StatusBadRequest, "Not done", "Give a reason of at most 200 characters on one line.")
		return
	}
	if id == op.User.ID {
		c.errorPage(w, r, http.StatusConflict, "Not done", "You cannot confirm your own account compromised from the console.")
		return
	}
	if _, err := c.d.Risk.ConfirmCompromised(r.Context(), op.User.ID, id, reason); err != nil {
		c.fail(w, r, err)
		return
	}
	c.done(w, r, userURL(id), "compromised")
}
