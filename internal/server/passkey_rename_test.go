package server_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/identity/webauthntest"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

func userIDOf(t *testing.T, in *wardtest.Instance, name string) string {
	t.Helper()
	u, err := in.App.Store.GetUserByUsername(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}

var renameFormRE = regexp.MustCompile(`(?s)<form method="post" action="/account/passkeys/rename">(.*?)</form>`)

// renameForms returns the hidden fields of the account page's rename
// forms, by passkey id.
func renameForms(t *testing.T, body string) map[string]url.Values {
	t.Helper()
	out := map[string]url.Values{}
	for _, m := range renameFormRE.FindAllStringSubmatch(body, -1) {
		f := wardtest.HiddenFields(m[1])
		out[f.Get("id")] = f
	}
	return out
}

// TestPasskeyRenameAccount: "My account" renames the signed-in user's
// passkey (passkey.renamed, the new name shown, escaped), refuses a bad
// name with 400 and a clear message, and refuses the attacker's tries: a
// form without the CSRF cookie, a state sealed for another session or
// altered, another user's passkey id (404, its name kept). Both backends.
func TestPasskeyRenameAccount(t *testing.T) {
	backends := map[string]string{"sqlite": ""}
	if dsn := os.Getenv("WARD_TEST_POSTGRES_DSN"); dsn != "" {
		backends["postgres"] = dsn
	}
	for name, dsn := range backends {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			in := startPasskeys(t, wardtest.Options{PostgresDSN: dsn})
			b := enrolPasskey(t, in, webauthntest.New(in.URL), "Laptop")
			aliceID := userIDOf(t, in, "alice")
			creds, _ := in.App.Identity.ListPasskeys(ctx, aliceID)
			if len(creds) != 1 {
				t.Fatalf("alice has %d passkeys", len(creds))
			}
			mine := creds[0].ID
			// Bob's security key, enrolled directly.
			bobID := userIDOf(t, in, "bob")
			bobU, _ := in.App.Store.GetUser(ctx, bobID)
			c, err := in.App.Identity.BeginPasskeyRegistration(ctx, bobU, identity.MethodSecurityKey)
			if err != nil {
				t.Fatal(err)
			}
			resp0, _, _ := webauthntest.New(in.URL).Create(c.Options)
			bobs, err := in.App.Identity.FinishPasskeyRegistration(ctx, bobID, bobU, c.ID, "Bob's key", resp0)
			if err != nil {
				t.Fatal(err)
			}
			nameOf := func(user, id string) string {
				l, _ := in.App.Identity.ListPasskeys(ctx, user)
				for _, c := range l {
					if c.ID == id {
						return c.Name
					}
				}
				return "(gone)"
			}
			renamedEvents := func() []store.StoredEvent {
				evs, err := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventPasskeyRenamed}})
				if err != nil {
					t.Fatal(err)
				}
				var out []store.StoredEvent
				for _, e := range evs {
					out = append(out, *e)
				}
				return out
			}
			page := func() map[string]url.Values {
				resp, body := wardtest.Do(t, b, http.MethodGet, in.URL+"/account", nil)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("account page: %d", resp.StatusCode)
				}
				return renameForms(t, body)
			}
			post := func(c *http.Client, f url.Values, name string) (*http.Response, string) {
				form := url.Values{}
				for k, v := range f {
					form[k] = v
				}
				form.Set("name", name)
				return wardtest.Do(t, c, http.MethodPost, in.URL+"/account/passkeys/rename", form)
			}

			forms := page()
			f, ok := forms[mine]
			if !ok || f.Get("csrf") == "" || f.Get("state") == "" || len(forms) != 1 {
				t.Fatalf("rename forms %v", forms)
			}
			// The user renames their passkey; the name is shown escaped.
			resp, body := post(b, f, " <b>Work</b> laptop ")
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, "Renamed to &lt;b&gt;Work&lt;/b&gt; laptop.") ||
				!strings.Contains(body, "<strong>&lt;b&gt;Work&lt;/b&gt; laptop</strong>") || strings.Contains(body, "<b>Work</b>") {
				t.Fatalf("rename: %d %.800s", resp.StatusCode, body)
			}
			if got := nameOf(aliceID, mine); got != "<b>Work</b> laptop" {
				t.Errorf("name %q", got)
			}
			evs := renamedEvents()
			if len(evs) != 1 || evs[0].Actor != aliceID || evs[0].UserID != aliceID || evs[0].Data["credential"] != mine ||
				evs[0].Data["previous"] != "Laptop" || evs[0].Data["name"] != "<b>Work</b> laptop" {
				t.Fatalf("passkey.renamed: %+v", evs)
			}

			// Bad names: 400 with the reason, nothing changed.
			for _, bad := range []string{"", "   ", strings.Repeat("x", identity.MaxPasskeyNameLen+1), "a\x00b", "a\u202eb", "a\xffb"} {
				resp, body := post(b, f, bad)
				if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Give the passkey a name of 1 to 64 characters") {
					t.Errorf("name %q: %d %.300s", bad, resp.StatusCode, body)
				}
			}
			// Another user's passkey: 404, kept.
			other := url.Values{"csrf": {f.Get("csrf")}, "state": {f.Get("state")}, "id": {bobs.ID}}
			if resp, body := post(b, other, "mine now"); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "No such passkey.") {
				t.Errorf("another user's passkey: %d %.300s", resp.StatusCode, body)
			}
			// Cross-site: the form's fields without the browser's CSRF
			// cookie (another browser posting them) is refused.
			if resp, _ := post(in.Browser(), f, "csrf"); resp.StatusCode != http.StatusForbidden {
				t.Errorf("without the CSRF cookie: %d, want 403", resp.StatusCode)
			}
			// A wrong CSRF field with the right cookie.
			wrong := url.Values{"csrf": {strings.Repeat("A", len(f.Get("csrf")))}, "state": {f.Get("state")}, "id": {mine}}
			if resp, _ := post(b, wrong, "csrf"); resp.StatusCode != http.StatusForbidden {
				t.Errorf("wrong CSRF token: %d, want 403", resp.StatusCode)
			}
			// An altered state.
			st := []byte(f.Get("state"))
			st[len(st)/2] ^= 1
			altered := url.Values{"csrf": {f.Get("csrf")}, "state": {string(st)}, "id": {mine}}
			if resp, _ := post(b, altered, "altered"); resp.StatusCode != http.StatusBadRequest {
				t.Errorf("altered state: %d, want 400", resp.StatusCode)
			}
			// Signed out: the session the state names has ended.
			in.Clock.Advance(time.Second)
			if _, err := in.App.Sessions.RevokeUser(ctx, "admin", aliceID, model.CauseAdminRevoked); err != nil {
				t.Fatal(err)
			}
			if resp, _ := post(b, f, "after sign-out"); resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("after the session ended: %d, want 401", resp.StatusCode)
			}
			if got := nameOf(aliceID, mine); got != "<b>Work</b> laptop" {
				t.Errorf("alice's passkey is %q after refused renames", got)
			}
			if got := nameOf(bobID, bobs.ID); got != "Bob's key" {
				t.Errorf("bob's passkey is %q", got)
			}
			if n := len(renamedEvents()); n != 1 {
				t.Errorf("%d passkey.renamed events, want 1", n)
			}
		})
	}
}
