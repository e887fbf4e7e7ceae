package console

import "testing"

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/console/users/x":             "/console/users/x",
		"/console/logs?tab=audit":      "/console/logs?tab=audit",
		"":                             "/console/",
		"//evil.example/console/":      "/console/",
		"https://evil.example/console": "/console/",
		"/consolex":                    "/console/",
		"/console/\\evil.example":      "/console/",
		"/console/login?next=/x":       "/console/",
		"/console/callback?code=x":     "/console/",
		"/console/x\r\nSet-Cookie: a":  "/console/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNiceMax(t *testing.T) {
	for in, want := range map[int64]int64{0: 4, 1: 4, 4: 4, 5: 8, 9: 12, 23: 40, 40: 40, 41: 80, 99: 120, 101: 120, 1234: 2000} {
		if got := niceMax(in); got != want || got < in {
			t.Errorf("niceMax(%d) = %d, want %d", in, got, want)
		}
	}
}

func TestAllowed(t *testing.T) {
	if Allowed([]string{"reader"}, PermRevokeSessions) || !Allowed([]string{"reader", "helpdesk"}, PermRevokeSessions) ||
		Allowed(nil, PermView) || Allowed([]string{"auditor"}, PermView) || !Allowed([]string{"admin"}, PermManageDevices) {
		t.Error("role permissions")
	}
}
