package server_test

import (
	"bytes"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/wardtest"
)

// TestNoSecretInLogsOrDatabase runs full flows with debug logging, then
// searches every log line and every byte of the database files for each
// secret that was issued or used. The seed names server logs as a theft
// route; Ward must not be one.
func TestNoSecretInLogsOrDatabase(t *testing.T) {
	in := wardtest.Start(t, wardtest.Options{})
	s := newSigner(t)
	var secrets []string
	add := func(v ...string) {
		for _, x := range v {
			if x != "" {
				secrets = append(secrets, x)
			}
		}
	}
	add(wardtest.AlicePassword, wardtest.BobPassword, wardtest.AliceTOTP, wardtest.ServiceSecret, wardtest.WebSecret)

	// Code flow, refresh, reuse, failures.
	code, verifier := codeFlow(t, in, "spa", s, nil)
	add(code, verifier)
	r := exchange(t, in, "spa", code, verifier, s)
	add(r.str("access_token"), r.str("refresh_token"), r.str("id_token"))
	r2 := refresh(t, in, "spa", r.str("refresh_token"), s)
	add(r2.str("access_token"), r2.str("refresh_token"))
	refresh(t, in, "spa", r.str("refresh_token"), s) // reuse
	exchange(t, in, "spa", code, verifier, s)        // code reuse
	// Client credentials, introspection, revocation, failed auth with a secret.
	cc := do(t, in, call{path: "/token", basic: serviceAuth, signer: s, form: url.Values{"grant_type": {"client_credentials"}}})
	add(cc.str("access_token"))
	do(t, in, call{path: "/introspect", basic: serviceAuth, form: url.Values{"token": {cc.str("access_token")}}})
	do(t, in, call{path: "/token", basic: [2]string{"service", "a-wrong-secret-that-is-long"}, form: url.Values{"grant_type": {"client_credentials"}}})
	add("a-wrong-secret-that-is-long")
	// A failed password attempt.
	b := in.Browser()
	_, challenge := wardtest.PKCE()
	_, body := wardtest.Do(t, b, "GET", in.AuthorizeURL("web", challenge, nil), nil)
	f := wardtest.HiddenFields(body)
	f.Set("username", "bob")
	f.Set("password", "bob-wrong-password-typed")
	wardtest.Do(t, b, "POST", in.URL+"/login", f)
	add("bob-wrong-password-typed")
	do(t, in, call{path: "/revoke", basic: [2]string{"web", wardtest.WebSecret}, form: url.Values{"token": {"some-refresh-token-guess-xyz"}}})
	add("some-refresh-token-guess-xyz")

	in.App.Store.Close() // flush WAL content into view; we scan all files anyway
	logs := in.LogText()
	if !strings.Contains(logs, `"level"`) {
		t.Fatal("no log output captured: the test would prove nothing")
	}
	files := map[string][]byte{"log": []byte(logs)}
	entries, _ := os.ReadDir(filepath.Dir(in.DBPath))
	for _, e := range entries {
		if e.Name() == "kek.key" || e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(filepath.Dir(in.DBPath), e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	if len(files) < 2 {
		t.Fatalf("no database files found next to %s", in.DBPath)
	}
	for _, sec := range secrets {
		for name, content := range files {
			if bytes.Contains(content, []byte(sec)) {
				t.Errorf("secret %.6s… found in %s", sec, name)
			}
		}
	}
}
