package server_test

import (
	"context"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// deviceEventInstances is writeEventInstances with the device client tv.
func deviceEventInstances(t *testing.T, f func(t *testing.T, in *wardtest.Instance, refuse func(t *testing.T, types ...model.EventType) func())) {
	configure := func(c *config.Config) {
		c.StaticClients = append(c.StaticClients, config.StaticClient{ID: "tv", Name: "Living Room TV", AuthMethod: "none",
			GrantTypes: []string{deviceGrant, "refresh_token"}, Scopes: []string{"openid", "offline_access"}})
	}
	t.Run("sqlite", func(t *testing.T) {
		in := wardtest.Start(t, wardtest.Options{Configure: configure})
		f(t, in, func(t *testing.T, types ...model.EventType) func() { return refuseEventsSQLite(t, in.DBPath, types) })
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
		if dsn == "" {
			if os.Getenv("CI") != "" {
				t.Fatal("CI is set but WARD_TEST_POSTGRES_DSN is not")
			}
			t.Skip("set WARD_TEST_POSTGRES_DSN to run against PostgreSQL")
		}
		in := wardtest.Start(t, wardtest.Options{PostgresDSN: dsn, Configure: configure})
		f(t, in, func(t *testing.T, types ...model.EventType) func() {
			return refuseEventsPostgres(t, in.PostgresDSN(), types)
		})
	})
}

// deviceAnswers returns the stored device_code.approved and .denied of
// client tv.
func deviceAnswers(t *testing.T, in *wardtest.Instance) []*store.StoredEvent {
	t.Helper()
	evs, err := in.App.Store.ListEvents(context.Background(), store.EventFilter{ClientID: "tv",
		Types: []model.EventType{model.EventDeviceCodeApproved, model.EventDeviceCodeDenied}})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// confirmForm is the confirmation page's form with decision.
func confirmForm(page, decision string) map[string][]string {
	form := wardtest.HiddenFields(page)
	form.Set("decision", decision)
	return form
}

// A device approval whose device_code.approved the database refuses
// approves nothing: the user gets a plain error page, the request stays
// pending (the device is told to keep polling) and nothing is recorded.
// Once the database accepts it, the same answer approves, with exactly
// one event, and the device gets its tokens; answering again changes
// nothing. Then approvals and denials of one request race from the
// browser: exactly one answer lands, with exactly one event, and it is
// what the device is told.
func TestDeviceAnswerCommitsWithEvent(t *testing.T) {
	deviceEventInstances(t, func(t *testing.T, in *wardtest.Instance, refuse func(*testing.T, ...model.EventType) func()) {
		ctx := context.Background()
		deviceCode, userCode := startDeviceFlow(t, in, "tv", nil, nil)
		b := in.Browser()
		resp, page := deviceSignIn(t, in, b, userCode)
		if resp.StatusCode != 200 || !strings.Contains(page, `value="approve"`) {
			t.Fatalf("want the confirmation page, got %d %.300s", resp.StatusCode, page)
		}

		lift := refuse(t, model.EventDeviceCodeApproved)
		resp, body := wardtest.Do(t, b, http.MethodPost, in.URL+"/device/confirm", confirmForm(page, "approve"))
		if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(body, "Something went wrong on our side.") {
			t.Fatalf("approval with its record refused: %d, want 500 and the error page; %.300s", resp.StatusCode, body)
		}
		wantNoInternals(t, "refused approval", body)
		dc, err := in.App.Store.GetDeviceCode(ctx, in.App.TokenHasher.Sum(deviceCode))
		if err != nil || dc.Status != model.DeviceCodePending || dc.UserID != "" {
			t.Fatalf("request after a refused approval: %+v, %v; want it pending", dc, err)
		}
		if evs := deviceAnswers(t, in); len(evs) != 0 {
			t.Fatalf("%d answers recorded after a refused approval, want none", len(evs))
		}
		wantError(t, poll(t, in, "tv", deviceCode, nil), http.StatusBadRequest, "authorization_pending")

		lift()
		resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/device/confirm", confirmForm(page, "approve"))
		if resp.StatusCode != 200 || !strings.Contains(body, "Device connected") {
			t.Fatalf("approval after the refusal: %d %.300s", resp.StatusCode, body)
		}
		evs := deviceAnswers(t, in)
		if len(evs) != 1 || evs[0].Type != model.EventDeviceCodeApproved || evs[0].UserID == "" {
			t.Fatalf("answers recorded: %+v, want one device_code.approved", evs)
		}
		for _, decision := range []string{"approve", "deny"} {
			resp, body = wardtest.Do(t, b, http.MethodPost, in.URL+"/device/confirm", confirmForm(page, decision))
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "Code expired") {
				t.Errorf("%s of an approved request: %d %.200s, want it refused as answered", decision, resp.StatusCode, body)
			}
		}
		in.Clock.Advance(6 * time.Second) // past the polling interval
		if r := poll(t, in, "tv", deviceCode, nil); r.Status != 200 || r.str("access_token") == "" {
			t.Fatalf("poll after the approval: %d %s", r.Status, r.Body)
		}
		if n := len(deviceAnswers(t, in)); n != 1 {
			t.Errorf("%d answers recorded after answering again, want 1", n)
		}

		// Approvals and denials of a second request, at once.
		deviceCode, userCode = startDeviceFlow(t, in, "tv", nil, nil)
		resp, page = deviceSignIn(t, in, b, userCode)
		if resp.StatusCode != 200 || !strings.Contains(page, `value="approve"`) {
			t.Fatalf("want the confirmation page, got %d %.300s", resp.StatusCode, page)
		}
		const n = 8
		statuses := make([]int, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			decision := []string{"approve", "deny"}[i%2]
			wg.Go(func() {
				<-start
				resp, _ := wardtest.Do(t, b, http.MethodPost, in.URL+"/device/confirm", confirmForm(page, decision))
				statuses[i] = resp.StatusCode
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, st := range statuses {
			switch {
			case st == 200 && winner >= 0:
				t.Errorf("answers %d and %d both landed", winner, i)
			case st == 200:
				winner = i
			case st != http.StatusBadRequest:
				t.Errorf("answer %d: status %d, want 200 or 400 (answered)", i, st)
			}
		}
		if winner < 0 {
			t.Fatal("no answer landed")
		}
		evs = deviceAnswers(t, in)
		want := []model.EventType{model.EventDeviceCodeApproved, model.EventDeviceCodeDenied}[winner%2]
		if len(evs) != 2 || evs[0].Type != want {
			t.Fatalf("answers recorded: %v, want the first approval and one %s", types(evs), want)
		}
		dc, err = in.App.Store.GetDeviceCode(ctx, in.App.TokenHasher.Sum(deviceCode))
		if wantStatus := []string{model.DeviceCodeApproved, model.DeviceCodeDenied}[winner%2]; err != nil || dc.Status != wantStatus {
			t.Errorf("request after the race: %+v, %v; want %s", dc, err, wantStatus)
		}
	})
}

func types(evs []*store.StoredEvent) []model.EventType {
	var out []model.EventType
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}
