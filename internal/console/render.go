package console

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/clients"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// pageData is what every template gets: the layout's fields and the
// page's own (Data).
type pageData struct {
	Title string
	Nav   string // the active navigation entry
	Op    *Operator
	Pages []Page // pages added by other parts of Ward
	// HasIncidents: the server has the incident service.
	HasIncidents bool
	// HasAccess: the server has the Conditional Access service.
	HasAccess bool
	// HasConfig: the server has the client registry and signing keys.
	HasConfig bool
	Message   string
	Link      string
	LinkText  string
	// Notice is a result shown above the page (an action done).
	Notice string
	Data   any
}

var funcs = template.FuncMap{
	"time": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return humanDuration(now.Sub(t)) + " ago"
	},
	"riskClass": func(level string) string {
		switch level {
		case "low", "medium", "high":
			return "risk-" + level
		}
		return "risk-none"
	},
	"riskText": func(level string) string {
		if level == "" {
			return "none"
		}
		return level
	},
	"roleName": func(r string) string {
		if n, ok := RoleNames[r]; ok {
			return n
		}
		return r
	},
	"join": strings.Join,
	"can":  func(op *Operator, p any) bool { return op.Can(Permission(fmt.Sprint(p))) },
	"code": func(t model.EventType) string { return model.EventCodes[t] },
	"pct": func(part, whole int) string {
		if whole == 0 {
			return "—"
		}
		return fmt.Sprintf("%.0f%%", 100*float64(part)/float64(whole))
	},
	"attackURL": func(id string) string {
		return "https://attack.mitre.org/techniques/" + strings.ReplaceAll(id, ".", "/") + "/"
	},
	"sevClass": func(s string) string {
		switch s {
		case "low", "medium", "high":
			return "risk-" + s
		}
		return "risk-none"
	},
	"statusText": func(s string) string { return strings.ReplaceAll(s, "_", " ") },
	"prev":       func(n int64) int64 { return n - 1 },
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12] + "…"
		}
		return s
	},
}

func humanDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "moments"
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h", int(d/time.Hour))
	}
	return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
}

// render writes a page with status 200.
func (c *Console) render(w http.ResponseWriter, r *http.Request, name string, d pageData) {
	c.renderStatus(w, r, http.StatusOK, name, d)
}

// renderStatus writes template name. An htmx request that targets a part
// of the page gets that part alone (the template's "content" block is
// the whole page body otherwise).
func (c *Console) renderStatus(w http.ResponseWriter, r *http.Request, status int, name string, d pageData) {
	if d.Op == nil {
		d.Op = OperatorOf(r.Context())
	}
	d.Pages = c.pages
	d.HasIncidents = c.d.Incidents != nil
	d.HasAccess = c.d.Access != nil
	d.HasConfig = c.d.Clients != nil && c.d.Keys != nil
	var buf bytes.Buffer
	if err := c.t.ExecuteTemplate(&buf, name, d); err != nil {
		c.d.Log.ErrorContext(r.Context(), "render console page", "template", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// Render draws the console's layout around content, for pages added with
// AddPage.
func (c *Console) Render(w http.ResponseWriter, r *http.Request, title string, content template.HTML) {
	c.render(w, r, "extension.html", pageData{Title: title, Nav: title, Data: content})
}

func (c *Console) errorPage(w http.ResponseWriter, r *http.Request, status int, title, msg string) {
	c.renderStatus(w, r, status, "message.html", pageData{Title: title, Message: msg, Link: Prefix + "/", LinkText: "Back to the console"})
}

// fail answers a service error: not found, a refused input (its message
// is the service's, meant for people), or an internal error (logged).
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, identity.ErrNotFound) || errors.Is(err, clients.ErrNotFound) {
		c.errorPage(w, r, http.StatusNotFound, "Not found", "It does not exist (any more).")
		return
	}
	c.d.Log.ErrorContext(r.Context(), "console", "path", r.URL.Path, "err", err)
	c.errorPage(w, r, http.StatusInternalServerError, "Error", "Something went wrong; the server log has the details.")
}

// done answers a successful action: back to the page it was taken on
// (303 after a plain form post; htmx follows it too), with a notice.
func (c *Console) done(w http.ResponseWriter, r *http.Request, to, notice string) {
	http.Redirect(w, r, to+"?done="+notice, http.StatusSeeOther)
}

// notices are the results an action's redirect names (?done=).
var notices = map[string]string{
	"revoked":            "The session was revoked. Its tokens stop working at once; resources following CAE were told.",
	"revoked-all":        "Every session of the user was revoked.",
	"disabled":           "The account was disabled and its sessions revoked.",
	"enabled":            "The account was enabled.",
	"unlocked":           "The account was unlocked.",
	"device-done":        "The device was updated.",
	"dismissed":          "The detections were dismissed as false positives; the risk level was computed again.",
	"compromised":        "The account is confirmed compromised: its risk is high and every session was revoked.",
	"already-done":       "Nothing to do: it was done already.",
	"keys-rotated":       "A new signing key was created and signs from now on (or after the overlap); the previous one stays published until it retires.",
	"incident-assigned":  "The incident was assigned.",
	"incident-commented": "The comment was added to the timeline.",
	"incident-status":    "The incident's status was changed.",
	"incident-merged":    "The incidents were merged into this one.",
}

func noticeOf(r *http.Request) string { return notices[r.URL.Query().Get("done")] }
