package storetest

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// approvedDeviceCode is a device authorization request of session s1
// that is approved and not yet used.
func approvedDeviceCode(hash, userCode string) *model.DeviceCode {
	d := fullDeviceCode(hash, userCode)
	d.Status, d.UserID, d.SessionID, d.AuthTime = model.DeviceCodeApproved, "u1", "s1", at(-time.Minute)
	d.DenyReason, d.DenyDescription = "", ""
	return d
}

// codeRedeemers are the two redemptions of a one-time code: each creates
// its code (hash) and redeems it, issuing rt (nil: none), with ctx's
// pending events.
var codeRedeemers = []struct {
	name   string
	create func(s store.Store, hash string) error
	redeem func(s store.Store, c context.Context, hash string, when time.Time, rt *model.RefreshToken) (used time.Time, err error)
}{
	{"auth code", func(s store.Store, hash string) error {
		c := fullCode(hash)
		c.UserID, c.SessionID = "u1", "s1"
		return s.CreateAuthCode(ctx, c)
	}, func(s store.Store, c context.Context, hash string, when time.Time, rt *model.RefreshToken) (time.Time, error) {
		ac, err := s.RedeemAuthCode(c, []byte(hash), when, rt)
		if ac == nil {
			return time.Time{}, err
		}
		return ac.UsedAt, err
	}},
	{"device code", func(s store.Store, hash string) error {
		return s.CreateDeviceCode(ctx, approvedDeviceCode(hash, "UC-"+hash))
	}, func(s store.Store, c context.Context, hash string, when time.Time, rt *model.RefreshToken) (time.Time, error) {
		dc, err := s.RedeemDeviceCode(c, []byte(hash), when, rt)
		if dc == nil {
			return time.Time{}, err
		}
		return dc.UsedAt, err
	}},
}

// testRedeemCodeConcurrent races redemptions of one code, each with its
// own refresh token and token.issued event: exactly one spends the code
// and commits its token and its event; the others get ErrAlreadyUsed
// with the winner's UsedAt and write nothing. A redemption without a
// refresh token (a public client without DPoP) still commits its event,
// and a device request that is not approved cannot be redeemed.
func testRedeemCodeConcurrent(t *testing.T, s store.Store) {
	must(t, "CreateUser", s.CreateUser(ctx, fullUser("u1", "alice")))
	must(t, "CreateSession", s.CreateSession(ctx, fullSession("s1", "u1")))
	for _, r := range codeRedeemers {
		t.Run(r.name, func(t *testing.T) {
			hash := "race-" + r.name
			must(t, "create", r.create(s, hash))
			before := len(storedEvents(t, s))
			evs := make([]*model.Event, racers)
			ectxs := make([]context.Context, racers)
			for i := range racers {
				evs[i] = pendingEvent("ev-"+hash+"-"+strconv.Itoa(i), model.EventTokenIssued, "u1")
				ectxs[i] = store.WithEvent(ctx, evs[i])
			}
			used := make([]time.Time, racers)
			errs := race(func(i int) error {
				var err error
				used[i], err = r.redeem(s, ectxs[i], hash, at(time.Duration(i+1)*time.Second), fullRefresh(hash+"-rt-"+strconv.Itoa(i), "s1"))
				return err
			})
			w := oneWinner(t, "concurrent redemption", errs, store.ErrAlreadyUsed)
			if w < 0 {
				return
			}
			stored := storedEvents(t, s)
			if n := len(stored) - before; n != 1 {
				t.Errorf("%d events stored, want 1", n)
			}
			for i := range racers {
				if got := store.EventStored(ectxs[i], evs[i]); got != (i == w) {
					t.Errorf("goroutine %d: EventStored %v, want %v", i, got, i == w)
				}
				if got := stored[evs[i].ID] != nil; got != (i == w) {
					t.Errorf("goroutine %d: event in the table %v, want %v", i, got, i == w)
				}
				_, err := s.GetRefreshToken(ctx, []byte(hash+"-rt-"+strconv.Itoa(i)))
				if i == w && err != nil {
					t.Errorf("winner's refresh token: %v", err)
				}
				if i != w && !errors.Is(err, store.ErrNotFound) {
					t.Errorf("goroutine %d lost, but its refresh token is stored (%v)", i, err)
				}
				if !used[i].Equal(at(time.Duration(w+1) * time.Second).Truncate(time.Microsecond)) {
					t.Errorf("goroutine %d: UsedAt %v, want the winner's %v", i, used[i], at(time.Duration(w+1)*time.Second))
				}
			}
			// Spent for good: one more redemption writes nothing.
			e := pendingEvent("ev-"+hash+"-late", model.EventTokenIssued, "u1")
			_, err := r.redeem(s, store.WithEvent(ctx, e), hash, at(time.Hour), nil)
			wantErr(t, "redemption after the race", err, store.ErrAlreadyUsed)
			if storedEvents(t, s)[e.ID] != nil {
				t.Error("a redemption of a spent code stored its event")
			}
			_, err = r.redeem(s, ctx, "missing-"+hash, at(time.Hour), nil)
			wantErr(t, "redeem a missing code", err, store.ErrNotFound)

			// No refresh token: the code and the event commit together.
			must(t, "create", r.create(s, hash+"-nort"))
			e = pendingEvent("ev-"+hash+"-nort", model.EventTokenIssued, "u1")
			ectx := store.WithEvent(ctx, e)
			_, err = r.redeem(s, ectx, hash+"-nort", at(time.Minute), nil)
			must(t, "redeem without a refresh token", err)
			if !store.EventStored(ectx, e) || storedEvents(t, s)[e.ID] == nil {
				t.Error("redemption without a refresh token: event not committed")
			}
		})
	}
	pending := fullDeviceCode("pending", "UC-PENDING")
	must(t, "CreateDeviceCode", s.CreateDeviceCode(ctx, pending))
	if _, err := s.RedeemDeviceCode(ctx, pending.Hash, at(time.Second), nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RedeemDeviceCode of a pending request: %v, want ErrNotFound", err)
	}
	if got, err := s.GetDeviceCode(ctx, pending.Hash); err != nil || !got.UsedAt.IsZero() {
		t.Errorf("pending request after a refused redemption: %+v, %v; want unused", got, err)
	}
}

// testRedeemCodeRefusedEvent is RunTokenEventAtomicity's part for the
// one-time codes: a redemption whose event the database refuses spends
// nothing and stores no refresh token, so once the fault clears the code
// can be redeemed, exactly once.
func testRedeemCodeRefusedEvent(t *testing.T, s store.Store, refused func(id string, typ model.EventType) *model.Event) {
	for _, r := range codeRedeemers {
		hash := "fault-" + r.name
		must(t, r.name+": create", r.create(s, hash))
		ectx := store.WithEvent(ctx, refused("r-"+hash, model.EventTokenIssued))
		_, err := r.redeem(s, ectx, hash, at(time.Second), fullRefresh(hash+"-rt", "s1"))
		if err == nil || errors.Is(err, store.ErrAlreadyUsed) || errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: redemption with a refused event: %v, want a plain failure", r.name, err)
		}
		if _, err := s.GetRefreshToken(ctx, []byte(hash+"-rt")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: refresh token of the refused redemption stored (%v)", r.name, err)
		}
		e := pendingEvent("a-"+hash, model.EventTokenIssued, "u1")
		ectx = store.WithEvent(ctx, e)
		used, err := r.redeem(s, ectx, hash, at(2*time.Second), fullRefresh(hash+"-rt2", "s1"))
		must(t, r.name+": redemption after the fault", err)
		if !used.Equal(at(2 * time.Second).Truncate(time.Microsecond)) {
			t.Errorf("%s: UsedAt %v, want the second attempt's", r.name, used)
		}
		if !store.EventStored(ectx, e) {
			t.Errorf("%s: EventStored false after the fault cleared", r.name)
		}
		if _, err := s.GetRefreshToken(ctx, []byte(hash+"-rt2")); err != nil {
			t.Errorf("%s: refresh token after the fault cleared: %v", r.name, err)
		}
		_, err = r.redeem(s, ctx, hash, at(3*time.Second), nil)
		wantErr(t, r.name+": third redemption", err, store.ErrAlreadyUsed)
	}
}

// testRefuseAuthCode: a refusal spends a code with its event and marks it
// Refused with the refused request's key; a successful redemption does
// not mark it. Raced against redemptions, exactly one of all of them
// spends the code, and the record says which kind won.
func testRefuseAuthCode(t *testing.T, s store.Store) {
	must(t, "CreateUser", s.CreateUser(ctx, fullUser("u1", "alice")))
	must(t, "CreateSession", s.CreateSession(ctx, fullSession("s1", "u1")))
	create := func(hash string) {
		c := fullCode(hash)
		c.UserID, c.SessionID = "u1", "s1"
		must(t, "CreateAuthCode", s.CreateAuthCode(ctx, c))
	}
	create("refused")
	e := pendingEvent("ev-refused", model.EventTokenRequestFailed, "u1")
	ectx := store.WithEvent(ctx, e)
	ac, err := s.RefuseAuthCode(ectx, []byte("refused"), at(time.Second), "jkt-1")
	must(t, "RefuseAuthCode", err)
	if !ac.Refused || ac.RefusedJKT != "jkt-1" || ac.UsedAt.IsZero() || !store.EventStored(ectx, e) {
		t.Errorf("refused code %+v (event stored %v), want used, Refused, jkt-1 and its event", ac, store.EventStored(ectx, e))
	}
	if got, err := s.GetAuthCode(ctx, []byte("refused")); err != nil || !got.Refused || got.RefusedJKT != "jkt-1" {
		t.Errorf("GetAuthCode after a refusal: %+v, %v", got, err)
	}
	late := pendingEvent("ev-refused-late", model.EventTokenIssued, "u1")
	used, err := s.RedeemAuthCode(store.WithEvent(ctx, late), []byte("refused"), at(2*time.Second), fullRefresh("refused-rt", "s1"))
	wantErr(t, "redeem a refused code", err, store.ErrAlreadyUsed)
	if used == nil || !used.Refused {
		t.Errorf("redeem a refused code: record %+v, want the refused one", used)
	}
	if storedEvents(t, s)[late.ID] != nil {
		t.Error("a redemption of a refused code stored its event")
	}
	if _, err := s.GetRefreshToken(ctx, []byte("refused-rt")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a redemption of a refused code stored its refresh token (%v)", err)
	}
	_, err = s.RefuseAuthCode(ctx, []byte("missing"), at(time.Second), "")
	wantErr(t, "refuse a missing code", err, store.ErrNotFound)

	create("redeemed")
	must(t, "RedeemAuthCode", func() error {
		_, err := s.RedeemAuthCode(ctx, []byte("redeemed"), at(time.Second), nil)
		return err
	}())
	if got, err := s.GetAuthCode(ctx, []byte("redeemed")); err != nil || got.Refused || got.RefusedJKT != "" {
		t.Errorf("GetAuthCode after a redemption: %+v, %v; want not refused", got, err)
	}

	// Refusals and redemptions race: one spends the code.
	create("race")
	errs := race(func(i int) error {
		var err error
		if i%2 == 0 {
			_, err = s.RefuseAuthCode(ctx, []byte("race"), at(time.Duration(i+1)*time.Second), "jkt-"+strconv.Itoa(i))
		} else {
			_, err = s.RedeemAuthCode(ctx, []byte("race"), at(time.Duration(i+1)*time.Second), fullRefresh("race-rt-"+strconv.Itoa(i), "s1"))
		}
		return err
	})
	w := oneWinner(t, "refusals against redemptions", errs, store.ErrAlreadyUsed)
	if w < 0 {
		return
	}
	got, err := s.GetAuthCode(ctx, []byte("race"))
	if err != nil || got.Refused != (w%2 == 0) || (w%2 == 0 && got.RefusedJKT != "jkt-"+strconv.Itoa(w)) {
		t.Errorf("raced code %+v, %v; winner %d", got, err, w)
	}
	for i := 1; i < racers; i += 2 {
		_, err := s.GetRefreshToken(ctx, []byte("race-rt-"+strconv.Itoa(i)))
		if (i == w) != (err == nil) {
			t.Errorf("redemption %d (winner %d): refresh token lookup %v", i, w, err)
		}
	}
}
