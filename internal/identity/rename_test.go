package identity_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/identity/webauthntest"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// TestPasskeyRename: a user renames their own passkey and an
// administrator renames a user's (passkey.renamed, committed with the
// change, on the other instance too); a name that is empty, too long,
// not UTF-8 or holds control or bidirectional formatting characters is
// refused and changes nothing; a user cannot rename another user's
// passkey (not found, its name kept, no event). Both backends.
func TestPasskeyRename(t *testing.T) {
	for _, be := range pkBackends(t) {
		t.Run(be, func(t *testing.T) {
			e := newPKEnvOn(t, nil, be)
			c1, _ := e.register(e.alice, webauthntest.New(rpOrigin), identity.MethodPasskey, "Laptop")
			mc, _ := e.register(e.mallet, webauthntest.New(rpOrigin), identity.MethodSecurityKey, "Mallet's key")
			name := func(u *model.User, id string) string {
				t.Helper()
				l, err := e.a.ListPasskeys(e.ctx, u.ID)
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range l {
					if c.ID == id {
						return c.Name
					}
				}
				t.Fatalf("no credential %s", id)
				return ""
			}
			renamed := func() int {
				n := 0
				for _, ev := range e.rec.Events() {
					if ev.Type == model.EventPasskeyRenamed {
						n++
					}
				}
				return n
			}

			// The owner, on the second instance; the name is trimmed.
			c, err := e.b.RenamePasskey(e.ctx, e.alice.ID, e.alice.ID, c1.ID, "  Work laptop (Zoë) ")
			if err != nil || c.Name != "Work laptop (Zoë)" {
				t.Fatalf("rename: %+v, %v", c, err)
			}
			if got := name(e.alice, c1.ID); got != "Work laptop (Zoë)" {
				t.Errorf("name %q after rename", got)
			}
			ev := e.last(model.EventPasskeyRenamed)
			if ev == nil || ev.Actor != e.alice.ID || ev.UserID != e.alice.ID || ev.Data["credential"] != c1.ID ||
				ev.Data["name"] != "Work laptop (Zoë)" || ev.Data["previous"] != "Laptop" || model.EventCodes[ev.Type] != "W9410I" {
				t.Errorf("passkey.renamed: %+v", ev)
			}
			stored, err := e.st.ListEvents(e.ctx, store.EventFilter{UserID: e.alice.ID, Types: []model.EventType{model.EventPasskeyRenamed}})
			if err != nil || len(stored) != 1 {
				t.Errorf("passkey.renamed in the audit log: %d, %v", len(stored), err)
			}

			// An administrator.
			if _, err := e.a.RenamePasskey(e.ctx, "admin-1", e.alice.ID, c1.ID, strings.Repeat("é", identity.MaxPasskeyNameLen)); err != nil {
				t.Errorf("a name of %d two-byte characters: %v", identity.MaxPasskeyNameLen, err)
			}
			if ev := e.last(model.EventPasskeyRenamed); ev == nil || ev.Actor != "admin-1" || ev.Data["previous"] != "Work laptop (Zoë)" {
				t.Errorf("passkey.renamed by the administrator: %+v", ev)
			}
			before, n := name(e.alice, c1.ID), renamed()

			for label, bad := range map[string]string{
				"empty":          "",
				"blank":          " \t ",
				"too long":       strings.Repeat("a", identity.MaxPasskeyNameLen+1),
				"NUL":            "key\x00",
				"newline":        "key\nforged log line",
				"escape":         "key\x1b[31m",
				"C1 control":     "ke\u0085y",
				"DEL":            "key\x7f",
				"RTL override":   "key\u202etxt.exe",
				"isolate":        "\u2066key",
				"invalid UTF-8":  "key\xff\xfe",
				"lone surrogate": "key\xed\xa0\x80",
			} {
				if _, err := e.a.RenamePasskey(e.ctx, e.alice.ID, e.alice.ID, c1.ID, bad); !errors.Is(err, identity.ErrInvalidInput) {
					t.Errorf("%s: %v, want ErrInvalidInput", label, err)
				}
			}
			if name(e.alice, c1.ID) != before || renamed() != n {
				t.Errorf("a refused name changed the passkey or recorded an event")
			}

			// Another user's passkey: not found, kept, no event.
			if _, err := e.a.RenamePasskey(e.ctx, e.alice.ID, e.alice.ID, mc.ID, "mine now"); !errors.Is(err, identity.ErrNotFound) {
				t.Errorf("renaming another user's passkey: %v, want ErrNotFound", err)
			}
			if _, err := e.a.RenamePasskey(e.ctx, e.alice.ID, e.alice.ID, "no-such-id", "x"); !errors.Is(err, identity.ErrNotFound) {
				t.Errorf("renaming an unknown passkey: %v, want ErrNotFound", err)
			}
			if got := name(e.mallet, mc.ID); got != "Mallet's key" || renamed() != n {
				t.Errorf("mallet's passkey is %q after alice's attempt (%d events)", got, renamed()-n)
			}
		})
	}
}
