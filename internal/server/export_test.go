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
	eventually(t, "the file sink exports every event", func() bool {
		cs, _ := in.App.Store.ListExportCursors(ctx)
		return len(cs) == 2 && cs[0].Sink == "archive" && cs[0].Seq >= newest
	})
	cs, _ := in.App.Store.ListExportCursors(ctx)
	if cs[1].Sink != "siem" || cs[1].Seq != 0 {
		t.Fatalf("the unreachable sink's cursor moved: %+v", cs[1])
	}
}
