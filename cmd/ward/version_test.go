package main

import (
	"bytes"
	"context"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionFromBuildInfo(t *testing.T) {
	var v versionInfo
	v.GoVersion = "go1.26.8"
	v.fromBuildInfo(&debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123"},
		{Key: "vcs.time", Value: "2026-12-01T10:00:00Z"},
		{Key: "vcs.modified", Value: "true"},
	}})
	got := v.String()
	for _, want := range []string{"ward v1.4.0", "commit 0123456789ab", "modified", "2026-12-01T10:00:00Z", "go1.26.8"} {
		if !strings.Contains(got, want) {
			t.Errorf("version %q lacks %q", got, want)
		}
	}
	v = versionInfo{Version: "(devel)", GoVersion: "go1.26.8", BuildDate: "2026-12-06T12:00:00Z"}
	if got := v.String(); !strings.HasPrefix(got, "ward (devel) built 2026-12-06T12:00:00Z go1.26.8") {
		t.Errorf("version without vcs: %q", got)
	}
}

func TestVersionFlag(t *testing.T) {
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--version"}, &cliEnv{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, environ: []string{}})
	if code != 0 || !strings.HasPrefix(out.String(), "ward ") || !strings.HasSuffix(out.String(), "\n") {
		t.Fatalf("ward --version: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
}
