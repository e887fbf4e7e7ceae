package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set at link time by release builds (scripts/build):
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.buildDate=2026-12-06T12:00:00Z" ./cmd/ward
//
// When empty, the build information Go embeds is used.
var (
	version   string
	commit    string
	buildDate string
)

// versionInfo describes the running binary from the build information Go
// embeds: the module version (a tag, or "(devel)" for a local build), the
// commit and its time when built from a git checkout, and whether the
// tree had uncommitted changes.
type versionInfo struct {
	Version    string
	Commit     string
	CommitTime string // the commit's time (vcs.time), RFC 3339
	BuildDate  string // set at link time only
	Modified   bool
	GoVersion  string
}

func readVersion() versionInfo {
	v := versionInfo{Version: "unknown", GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		v.fromBuildInfo(bi)
	}
	if version != "" {
		v.Version = version
	}
	if commit != "" {
		v.Commit = commit
	}
	v.BuildDate = buildDate
	return v
}

func (v *versionInfo) fromBuildInfo(bi *debug.BuildInfo) {
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.CommitTime = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
}

func (v versionInfo) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ward %s", v.Version)
	if v.Commit != "" {
		c := v.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		fmt.Fprintf(&b, " (commit %s", c)
		if v.Modified {
			b.WriteString(", modified")
		}
		if v.CommitTime != "" {
			fmt.Fprintf(&b, ", %s", v.CommitTime)
		}
		b.WriteString(")")
	}
	if v.BuildDate != "" {
		fmt.Fprintf(&b, " built %s", v.BuildDate)
	}
	fmt.Fprintf(&b, " %s %s/%s", v.GoVersion, runtime.GOOS, runtime.GOARCH)
	return b.String()
}
