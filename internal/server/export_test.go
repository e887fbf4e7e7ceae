package server_test

import (
	"context"
	"net"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/wardtest"
)

// A SIEM that is down does not slow or fail the token endpoint: with a
// syslog sink whose receiver refuses connections, every token request
// succeeds and is recorded, while the sink's cursor stays where it was
// (its events wait in the database) and a file sink beside it exports
// them all.
func TestTokenEndpointWithSinkDown(t *testing.T) {
	// A port nothing listens on: connections are refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	path := filepath.Join(t.TempDir(), "ocsf.jsonl")
	in := wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) {
		c.Export.Sinks = []config.ExportSink{
			{Name: "siem", Type: config.ExportSyslog, Syslog: config.ExportSyslogSink{Address: down}},
			{Name: "archive", Type: config.ExportFile, File: config.ExportFileSink{Path: path}},
		}
	}})
	const n = 50
	for i := range n {
		r := do(t, in, call{path: "/token", basic: [2]string{"service", wardtest.ServiceSecret},
			form: url.Values{"grant_type": {"client_credentials"}}})
		if r.Status != 200 {
			t.Fatalf("token request %d with the SIEM down: %d %v", i, r.Status, r.Body)
		}
	}
	ctx := context.Background()
	issued, err := in.App.Store.ListEvents(ctx, store.EventFilter{Types: []model.EventType{model.EventTokenIssued}, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(issued) < n {
		t.Fatalf("%d token.issued events, want %d", len(issued), n)
	}
	newest := issued[0].Seq
	// The cursors by sink (the online detectors follow the log with a
	// cursor of their own beside the sinks').
	cursor := func(sink string) (store.ExportCursor, bool) {
		cs, _ := in.App.Store.ListExportCursors(ctx)
		for _, c := range cs {
			if c.Sink == sink {
				return c, true
			}
		}
		return store.ExportCursor{}, false
	}
	eventually(t, "the file sink exports every event", func() bool {
		c, ok := cursor("archive")
		return ok && c.Seq >= newest
	})
	if c, ok := cursor("siem"); !ok || c.Seq != 0 {
		t.Fatalf("the unreachable sink's cursor moved: %+v %v", c, ok)
	}
}
