package storetest

import (
	"errors"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

func webauthnCred(id, user string, credID byte) *model.WebAuthnCredential {
	return &model.WebAuthnCredential{
		ID: id, UserID: user, CredentialID: []byte{0xff, 0, credID, 'c'}, Name: "Key " + id,
		PublicKey: []byte{0xa5, 1, 2, 3, 0xff}, AAGUID: []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SignCount: 7, Transports: []string{"usb", "nfc"}, Attachment: "cross-platform",
		AttestationFormat: "packed", AttestationType: "basic_full", Discoverable: true,
		BackupEligible: true, BackupState: false, CreatedAt: at(time.Duration(credID) * time.Second), LastUsedAt: at(time.Hour),
	}
}

// testWebAuthnCredentials: round trip, uniqueness across users, listing
// per user, the locked read-modify-write, rename, deletion (one, all,
// with the user) and the events committed with them.
func testWebAuthnCredentials(t *testing.T, s store.Store) {
	for _, u := range []*model.User{fullUser("u1", "alice"), fullUser("u2", "bob")} {
		must(t, "CreateUser", s.CreateUser(ctx, u))
	}
	c1 := webauthnCred("k1", "u1", 1)
	e := pendingEvent("ev-pk", model.EventMFAEnrolled, "u1")
	ectx := store.WithEvent(ctx, e)
	must(t, "CreateWebAuthnCredential", s.CreateWebAuthnCredential(ectx, c1))
	if !store.EventStored(ectx, e) {
		t.Error("the pending event was not committed with the credential")
	}
	if storedEvents(t, s)["ev-pk"] == nil {
		t.Error("the credential's event is not in the events table")
	}
	got, err := s.GetWebAuthnCredential(ctx, c1.CredentialID)
	must(t, "GetWebAuthnCredential", err)
	same(t, "round trip", got, c1, normWebAuthn)
	// Nil and empty values round-trip as such.
	c2 := &model.WebAuthnCredential{ID: "k2", UserID: "u1", CredentialID: []byte{2}, PublicKey: []byte{9}, CreatedAt: at(time.Minute)}
	must(t, "CreateWebAuthnCredential minimal", s.CreateWebAuthnCredential(ctx, c2))
	if got, err := s.GetWebAuthnCredential(ctx, []byte{2}); err != nil || got.AAGUID != nil || got.Transports != nil || got.SignCount != 0 || got.Discoverable {
		t.Errorf("minimal credential: %+v, %v", got, err)
	}

	// A credential id belongs to one account: another user registering it
	// is refused (an authenticator's id cannot be claimed twice).
	dup := webauthnCred("k3", "u2", 1)
	e2 := pendingEvent("ev-dup", model.EventMFAEnrolled, "u2")
	dctx := store.WithEvent(ctx, e2)
	wantErr(t, "CreateWebAuthnCredential with another user's credential id", s.CreateWebAuthnCredential(dctx, dup), store.ErrAlreadyExists)
	if store.EventStored(dctx, e2) || storedEvents(t, s)["ev-dup"] != nil {
		t.Error("the event of a refused credential was recorded")
	}
	wantErr(t, "CreateWebAuthnCredential with a taken id", s.CreateWebAuthnCredential(ctx, webauthnCred("k1", "u2", 9)), store.ErrAlreadyExists)
	wantErr(t, "CreateWebAuthnCredential of an unknown user", s.CreateWebAuthnCredential(ctx, webauthnCred("k4", "nobody", 4)), store.ErrNotFound)
	_, err = s.GetWebAuthnCredential(ctx, []byte("nope"))
	wantErr(t, "GetWebAuthnCredential unknown", err, store.ErrNotFound)

	must(t, "CreateWebAuthnCredential u2", s.CreateWebAuthnCredential(ctx, webauthnCred("k5", "u2", 5)))
	l, err := s.ListWebAuthnCredentials(ctx, "u1")
	must(t, "ListWebAuthnCredentials", err)
	if len(l) != 2 || l[0].ID != "k1" || l[1].ID != "k2" {
		t.Errorf("u1's credentials: %v, want k1, k2", credIDs(l))
	}
	counts, err := s.WebAuthnCredentialCounts(ctx)
	must(t, "WebAuthnCredentialCounts", err)
	if !reflect.DeepEqual(counts, map[string]int{"u1": 2, "u2": 1}) {
		t.Errorf("counts %v", counts)
	}

	// Use: fn's changes are saved; an error from fn saves nothing.
	used, err := s.UseWebAuthnCredential(ctx, c1.CredentialID, func(c *model.WebAuthnCredential) error {
		c.SignCount, c.BackupState, c.LastUsedAt = 8, true, at(2*time.Hour)
		return nil
	})
	must(t, "UseWebAuthnCredential", err)
	if used.SignCount != 8 || !used.BackupState {
		t.Errorf("used: %+v", used)
	}
	boom := errors.New("counter went back")
	_, err = s.UseWebAuthnCredential(ctx, c1.CredentialID, func(c *model.WebAuthnCredential) error {
		c.SignCount = 1
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("UseWebAuthnCredential with a failing fn: %v", err)
	}
	got, _ = s.GetWebAuthnCredential(ctx, c1.CredentialID)
	if got.SignCount != 8 || !got.BackupState || !got.LastUsedAt.Equal(nt(at(2*time.Hour))) {
		t.Errorf("after use: count %d backup %v last used %v", got.SignCount, got.BackupState, got.LastUsedAt)
	}
	_, err = s.UseWebAuthnCredential(ctx, []byte("nope"), func(*model.WebAuthnCredential) error { return nil })
	wantErr(t, "UseWebAuthnCredential unknown", err, store.ErrNotFound)

	en := pendingEvent("ev-rename", model.EventPasskeyRenamed, "u1")
	nctx := store.WithEvent(ctx, en)
	must(t, "RenameWebAuthnCredential", s.RenameWebAuthnCredential(nctx, "u1", "k1", "YubiKey 5"))
	if !store.EventStored(nctx, en) {
		t.Errorf("RenameWebAuthnCredential: its event was not committed with it")
	}
	// Another user's credential: not found, nothing renamed, no event.
	eo := pendingEvent("ev-rename-other", model.EventPasskeyRenamed, "u2")
	octx := store.WithEvent(ctx, eo)
	wantErr(t, "RenameWebAuthnCredential of another user's credential", s.RenameWebAuthnCredential(octx, "u2", "k1", "x"), store.ErrNotFound)
	if store.EventStored(octx, eo) {
		t.Errorf("a refused rename committed its event")
	}
	if got, _ := s.GetWebAuthnCredential(ctx, c1.CredentialID); got.Name != "YubiKey 5" {
		t.Errorf("name %q", got.Name)
	}

	// Delete one: only by its owner.
	_, err = s.DeleteWebAuthnCredential(ctx, "u2", "k1")
	wantErr(t, "DeleteWebAuthnCredential of another user's credential", err, store.ErrNotFound)
	e3 := pendingEvent("ev-rm", model.EventMFARemoved, "u1")
	rctx := store.WithEvent(ctx, e3)
	del, err := s.DeleteWebAuthnCredential(rctx, "u1", "k1")
	must(t, "DeleteWebAuthnCredential", err)
	if del.ID != "k1" || !store.EventStored(rctx, e3) {
		t.Errorf("deleted %+v, event stored %v", del, store.EventStored(rctx, e3))
	}
	_, err = s.GetWebAuthnCredential(ctx, c1.CredentialID)
	wantErr(t, "GetWebAuthnCredential after delete", err, store.ErrNotFound)

	// Delete all, with an event.
	e4 := pendingEvent("ev-reset", model.EventMFARemoved, "u1")
	actx := store.WithEvent(ctx, e4)
	n, err := s.DeleteWebAuthnCredentials(actx, "u1")
	must(t, "DeleteWebAuthnCredentials", err)
	if n != 1 || !store.EventStored(actx, e4) {
		t.Errorf("deleted %d, event stored %v", n, store.EventStored(actx, e4))
	}
	_, err = s.DeleteWebAuthnCredentials(ctx, "nobody")
	wantErr(t, "DeleteWebAuthnCredentials of an unknown user", err, store.ErrNotFound)

	// The user's deletion takes its credentials.
	must(t, "DeleteUser", s.DeleteUser(ctx, "u2"))
	_, err = s.GetWebAuthnCredential(ctx, webauthnCred("k5", "u2", 5).CredentialID)
	wantErr(t, "credential of a deleted user", err, store.ErrNotFound)
}

func normWebAuthn(c model.WebAuthnCredential) model.WebAuthnCredential {
	c.AAGUID, c.Transports = nl(c.AAGUID), nl(c.Transports)
	c.CreatedAt, c.LastUsedAt = nt(c.CreatedAt), nt(c.LastUsedAt)
	return c
}

func credIDs(l []*model.WebAuthnCredential) []string {
	var out []string
	for _, c := range l {
		out = append(out, c.ID)
	}
	return out
}

// testWebAuthnCounterConcurrent: concurrent uses that each require the
// counter to grow and set it to the same value: exactly one passes.
func testWebAuthnCounterConcurrent(t *testing.T, s store.Store) {
	must(t, "CreateUser", s.CreateUser(ctx, fullUser("u1", "alice")))
	c := webauthnCred("k1", "u1", 1)
	must(t, "CreateWebAuthnCredential", s.CreateWebAuthnCredential(ctx, c))
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			_, err := s.UseWebAuthnCredential(ctx, c.CredentialID, func(x *model.WebAuthnCredential) error {
				if x.SignCount >= 8 {
					return errors.New("counter did not grow")
				}
				x.SignCount = 8
				return nil
			})
			if err == nil {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Errorf("%d uses with one counter value passed, want 1", ok.Load())
	}
}

// testWebAuthnChallenges: a ceremony is taken once, expired ones are not
// given, and concurrent takes yield exactly one winner.
func testWebAuthnChallenges(t *testing.T, s store.Store, clk *clock.Fake) {
	now := clk.Now()
	ch := &model.WebAuthnChallenge{ID: "c1", Purpose: "login", UserID: "", Session: []byte(`{"challenge":"x"}`), CreatedAt: now, ExpiresAt: now.Add(5 * time.Minute)}
	must(t, "PutWebAuthnChallenge", s.PutWebAuthnChallenge(ctx, ch))
	wantErr(t, "PutWebAuthnChallenge twice", s.PutWebAuthnChallenge(ctx, ch), store.ErrAlreadyExists)
	got, err := s.TakeWebAuthnChallenge(ctx, "c1", now.Add(time.Minute))
	must(t, "TakeWebAuthnChallenge", err)
	same(t, "taken challenge", got, ch, func(c model.WebAuthnChallenge) model.WebAuthnChallenge {
		c.CreatedAt, c.ExpiresAt = nt(c.CreatedAt), nt(c.ExpiresAt)
		return c
	})
	_, err = s.TakeWebAuthnChallenge(ctx, "c1", now.Add(time.Minute))
	wantErr(t, "TakeWebAuthnChallenge a second time", err, store.ErrNotFound)

	// Expired: not given, and gone.
	must(t, "PutWebAuthnChallenge", s.PutWebAuthnChallenge(ctx, &model.WebAuthnChallenge{ID: "c2", Purpose: "mfa", UserID: "u1", Session: []byte("{}"), CreatedAt: now, ExpiresAt: now.Add(time.Minute)}))
	_, err = s.TakeWebAuthnChallenge(ctx, "c2", now.Add(time.Minute))
	wantErr(t, "TakeWebAuthnChallenge expired", err, store.ErrNotFound)
	_, err = s.TakeWebAuthnChallenge(ctx, "c2", now)
	wantErr(t, "TakeWebAuthnChallenge after an expired take", err, store.ErrNotFound)

	// PurgeExpired removes the expired ones only.
	must(t, "PutWebAuthnChallenge", s.PutWebAuthnChallenge(ctx, &model.WebAuthnChallenge{ID: "c3", Purpose: "login", Session: []byte("{}"), CreatedAt: now, ExpiresAt: now.Add(time.Minute)}))
	must(t, "PutWebAuthnChallenge", s.PutWebAuthnChallenge(ctx, &model.WebAuthnChallenge{ID: "c4", Purpose: "login", Session: []byte("{}"), CreatedAt: now, ExpiresAt: now.Add(time.Hour)}))
	must(t, "PurgeExpired", s.PurgeExpired(ctx, now.Add(2*time.Minute)))
	_, err = s.TakeWebAuthnChallenge(ctx, "c3", now)
	wantErr(t, "a purged challenge", err, store.ErrNotFound)
	if _, err := s.TakeWebAuthnChallenge(ctx, "c4", now); err != nil {
		t.Errorf("an unexpired challenge was purged: %v", err)
	}

	// Concurrent takes: exactly one.
	must(t, "PutWebAuthnChallenge", s.PutWebAuthnChallenge(ctx, &model.WebAuthnChallenge{ID: "c5", Purpose: "login", Session: []byte("{}"), CreatedAt: now, ExpiresAt: now.Add(time.Hour)}))
	var won atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := s.TakeWebAuthnChallenge(ctx, "c5", now); err == nil {
				won.Add(1)
			} else if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("concurrent take: %v", err)
			}
		})
	}
	wg.Wait()
	if won.Load() != 1 {
		t.Errorf("%d concurrent takes got the challenge, want 1", won.Load())
	}
}
