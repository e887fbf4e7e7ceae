// Package web renders Ward's server-side pages (sign-in, second factor,
// My account, errors, logout) with html/template and embedded assets.
// Pages work without JavaScript and are served under a strict Content
// Security Policy: no inline script or style, no framing, forms post only
// to Ward itself (and, where a redirect follows a post, to that one
// origin). The one exception is WebAuthn, a JavaScript API: pages with a
// passkey form load the embedded static/passkey.js (script-src 'self',
// nothing else), which submits the browser's answer in the form.
package web

import (
	"bytes"
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Pages renders the embedded templates.
type Pages struct {
	t   *template.Template
	log *slog.Logger
}

// NewPages parses the embedded templates.
func NewPages(log *slog.Logger) (*Pages, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t, err := template.New("").Funcs(template.FuncMap{"scripted": func(d any) bool {
		sc, ok := d.(Scripted)
		return ok && sc.UsesScript()
	}}).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	return &Pages{t: t, log: log}, nil
}

// Static serves the embedded stylesheet and images under /static/.
func Static() http.Handler {
	sub, _ := fs.Sub(staticFS, "static")
	fsrv := http.StripPrefix("/static/", http.FileServer(http.FS(sub)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		fsrv.ServeHTTP(w, r)
	})
}

// SecurityHeaders sets the headers every page carries. formOrigins are
// extra origins a form on the page may submit (or be redirected) to.
func SecurityHeaders(w http.ResponseWriter, formOrigins ...string) {
	securityHeaders(w, false, formOrigins...)
}

// PasskeyScript is the one script of Ward's pages (static/passkey.js):
// pages with a passkey form load it, and their CSP allows scripts from
// Ward's own origin (script-src 'self'); no inline script, no
// connect-src (the script makes no requests: it submits the form).
const PasskeyScript = "/static/passkey.js"

// Scripted is page data that loads PasskeyScript.
type Scripted interface{ UsesScript() bool }

func securityHeaders(w http.ResponseWriter, script bool, formOrigins ...string) {
	h := w.Header()
	formAction := "'self'"
	for _, o := range formOrigins {
		if o != "" && !strings.ContainsAny(o, " ;,'\"") {
			formAction += " " + o
		}
	}
	csp := "default-src 'none'; style-src 'self'; img-src 'self'; form-action " + formAction + "; frame-ancestors 'none'; base-uri 'none'"
	if script {
		csp += "; script-src 'self'"
	}
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// LoginData fills the sign-in page.
type LoginData struct {
	ClientName string
	Username   string
	Error      string
	CSRF       string
	Request    string // signed interaction state
	Action     string
	// Passkey, when set, offers "Sign in with a passkey" (usernameless).
	Passkey *PasskeyForm
}

// UsesScript: the passkey form needs PasskeyScript.
func (d LoginData) UsesScript() bool { return d.Passkey != nil }

// PasskeyForm is a form whose WebAuthn ceremony PasskeyScript runs: it
// posts the browser's answer (field response) with State to Action.
type PasskeyForm struct {
	Action  string
	CSRF    string
	State   string // sealed: the ceremony's id and what it continues
	Options string // the ceremony's options (JSON) for navigator.credentials
	Label   string // the button
	// Create: a registration (navigator.credentials.create) with a name
	// field; Kind is passkey or security_key.
	Create            bool
	Kind, Placeholder string
	// Alone: the page has no other form before it (no "or").
	Alone bool
}

// MFAData fills the second-factor page: a TOTP code, or a recovery code
// in a second form (both post to Action with the same state), and a
// passkey or security key when the user has one.
type MFAData struct {
	ClientName string
	Error      string
	CSRF       string
	State      string
	Action     string
	// TOTP shows the code and recovery-code forms (the user has TOTP).
	TOTP bool
	// Recovery opens the recovery-code form (its attempt failed).
	Recovery bool
	// Passkey, when set, offers the user's passkeys and security keys.
	Passkey *PasskeyForm
	// Notice explains why this step is asked for (e.g. an application
	// requires phishing-resistant sign-in).
	Notice string
	// PasskeyRecovery offers a recovery code to a user who lost every
	// passkey (it leads to My account, not to the application).
	PasskeyRecovery bool
}

// UsesScript: the passkey form needs PasskeyScript.
func (d MFAData) UsesScript() bool { return d.Passkey != nil }

// AccountData fills "My account": the user's passkeys and security keys,
// a form to add one (when the sign-in is recent enough) and one to
// remove and one to rename each.
type AccountData struct {
	Username string
	Error    string
	Notice   string
	CSRF     string
	State    string // sealed: the session it belongs to
	Passkeys []AccountPasskey
	// Add and AddKey are the registration forms (nil: sign in again
	// first, see Reauth).
	Add, AddKey *PasskeyForm
	Reauth      string
	Remove      string // action of the removal forms
	Rename      string // action of the rename forms
	MaxName     int    // the longest name, in characters
}

// UsesScript: the registration forms need PasskeyScript.
func (d AccountData) UsesScript() bool { return d.Add != nil || d.AddKey != nil }

// AccountPasskey is one credential in the account page's list.
type AccountPasskey struct {
	ID, Name, Kind, Created, LastUsed string
	Synced                            bool
}

// PasswordChangeData fills the page where a user replaces a password
// that Conditional Access requires changed.
type PasswordChangeData struct {
	ClientName string
	Error      string
	CSRF       string
	State      string
	Action     string
}

// ErrorData fills the error page.
type ErrorData struct {
	Title         string
	Message       string
	CorrelationID string
	// Problems lists what failed (for example the failing compliance
	// rules), each with how to fix it.
	Problems []Problem
}

// Problem is one failed requirement shown on an error page.
type Problem struct {
	What string
	Fix  string
}

// LogoutData fills the logout confirmation and result pages.
type LogoutData struct {
	CSRF      string
	Action    string
	Hidden    map[string]string
	SignedOut bool
}

// DeviceData fills the page where the user types a device's user code
// (RFC 8628 verification URI).
type DeviceData struct {
	UserCode string // prefilled, formatted XXXX-XXXX
	Error    string
	CSRF     string
	Action   string
}

// DeviceConfirmData fills the page where the signed-in user approves or
// denies a device's request.
type DeviceConfirmData struct {
	ClientName string
	UserCode   string // formatted XXXX-XXXX, to compare with the device
	Scopes     []string
	Username   string
	CSRF       string
	State      string // signed interaction state
	Action     string
	// Notice is shown above the decision (for example how many recovery
	// codes are left after a sign-in with one).
	Notice string
}

// DeviceDoneData fills the result page of a device approval.
type DeviceDoneData struct {
	ClientName string
	Approved   bool
}

// Render writes template name with data and status. formOrigins widen
// the CSP form-action (see SecurityHeaders).
func (p *Pages) Render(w http.ResponseWriter, status int, name string, data any, formOrigins ...string) {
	var buf bytes.Buffer
	if err := p.t.ExecuteTemplate(&buf, name, data); err != nil {
		p.log.Error("render page", "template", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	sc, _ := data.(Scripted)
	securityHeaders(w, sc != nil && sc.UsesScript(), formOrigins...)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// Denied renders the error page with the list of failed requirements.
func (p *Pages) Denied(w http.ResponseWriter, status int, title, message string, problems []Problem, correlationID string) {
	p.Render(w, status, "error.html", ErrorData{Title: title, Message: message, Problems: problems, CorrelationID: correlationID})
}

// Error renders the error page.
func (p *Pages) Error(w http.ResponseWriter, status int, title, message, correlationID string) {
	p.Render(w, status, "error.html", ErrorData{Title: title, Message: message, CorrelationID: correlationID})
}
