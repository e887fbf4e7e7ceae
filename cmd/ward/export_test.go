package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/ward-idp/ward/internal/geo"
	"github.com/ward-idp/ward/internal/geo/geotest"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

// The export pages through the whole log (more events than a page),
// writes only activity, in store order, filtered by time, user and
// session, as lines the activity reader takes back; an event that would
// not make a valid line is skipped and counted.
func TestExportActivity(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "ward.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	t0 := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	const n = 2*exportPage + 17
	for i := range n {
		e := &model.Event{ID: fmt.Sprint("ev-", i), Type: model.EventTokenRefreshed, Time: t0.Add(time.Duration(i) * time.Second),
			UserID: fmt.Sprint("u", i%3), SessionID: fmt.Sprint("s", i%3), ClientID: "spa", IP: "192.0.2.1", Outcome: model.OutcomeSuccess,
			Data: map[string]string{"grant_type": "refresh_token", "rt_gen_presented": "1", "rt_gen_issued": "2"}}
		if i%10 == 0 {
			e.Type, e.Data = model.EventUserCreated, nil // not activity
		}
		if i == 5 {
			e.IP = "not-an-ip" // not a valid line
		}
		if _, err := st.AppendEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	var out, errs bytes.Buffer
	env := &cliEnv{stdout: &out, stderr: &errs}
	city, asn := geotest.Write(t, t.TempDir(), []geotest.Place{
		{CIDR: "192.0.2.0/24", Country: "JP", City: "Tokyo", Lat: 35.69, Lon: 139.69, ASN: 64500, ASOrg: "Example Telecom"}})
	places, err := geo.Open(city, asn)
	if err != nil {
		t.Fatal(err)
	}
	defer places.Close()
	written, skipped, err := exportActivity(ctx, st, places, env, exportFilter{})
	if err != nil || skipped != 1 || written != n-n/10-1-1 {
		t.Fatalf("export: %d written, %d skipped, %v", written, skipped, err)
	}
	r := activity.NewReader(&out)
	var last time.Time
	count := 0
	for {
		a, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("line %d: %v", count+1, err)
		}
		// Located from the MMDB files, so a backtest elsewhere needs none.
		if a.Kind != activity.KindRefresh || a.RefreshGenIssued != 2 || a.Time.Before(last) ||
			a.Country != "JP" || a.City != "Tokyo" || !a.HasCoords || a.ASN != 64500 || a.ASOrg != "Example Telecom" {
			t.Fatalf("line %d: %+v", count+1, a)
		}
		last = a.Time
		count++
	}
	if count != written {
		t.Fatalf("read %d lines, wrote %d", count, written)
	}

	out.Reset()
	f := exportFilter{since: t0.Add(100 * time.Second), until: t0.Add(200 * time.Second), user: "u1", session: "s1"}
	if written, _, err = exportActivity(ctx, st, nil, env, f); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		a, err := activity.Parse([]byte(l))
		if err != nil || a.UserID != "u1" || a.Time.Before(f.since) || !a.Time.Before(f.until) || a.Country != "" {
			t.Fatalf("filtered line: %s %v", l, err)
		}
	}
	if written == 0 || written > 34 {
		t.Fatalf("%d lines for 100 seconds of one user in three", written)
	}
}

// The command: flags checked, and an empty log exports nothing.
func TestLogsExportCommand(t *testing.T) {
	h := newHarness(t, "")
	h.ok("correct-horse-battery-staple\n", "user", "add", "dave", "--password-stdin")
	out, errs, code := h.run("", "logs", "export", "--format", "csv")
	if code != exitUsage || !strings.Contains(errs, "only jsonl") {
		t.Fatalf("--format csv: %d %q %q", code, out, errs)
	}
	if out, errs, code = h.run("", "logs", "export", "--since", "1h", "--user", "dave"); code != 0 || out != "" || !strings.Contains(errs, "no activity") {
		t.Fatalf("export: %d %q %q", code, out, errs)
	}
}
