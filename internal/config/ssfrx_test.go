package config

import (
	"reflect"
	"testing"
	"time"
)

func TestSSFReceiversFromFile(t *testing.T) {
	cfg, err := load(t, `
ssf_receivers:
  - name: idp-b
    issuer: https://idp-b.example.com
    delivery: push
    events_requested: [https://schemas.openid.net/secevent/caep/event-type/session-revoked]
    auth: {client_id: ward-a, client_secret_file: /etc/ward/idp-b.secret, token_url: https://idp-b.example.com/token, scopes: [ssf.manage, ssf.poll]}
    subjects: {email: email, iss_sub: username}
    algorithms: [ES256, RS256]
    max_age: 1h
    allowed_networks: [10.20.0.0/16]
  - name: edr
    issuer: http://127.0.0.1:9000
    auth: {token_env: WARD_EDR_TOKEN}
`)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := cfg.SSFReceivers
	if len(r) != 2 || r[0].Delivery != "push" || r[0].Auth.ClientSecretFile != "/etc/ward/idp-b.secret" || r[0].Subjects.IssSub != "username" ||
		r[0].MaxAge != time.Hour || len(r[0].AllowedNetworkPrefixes()) != 1 || r[1].Auth.TokenEnv != "WARD_EDR_TOKEN" || r[1].Delivery != "" {
		t.Fatalf("receivers: %+v", r)
	}
}

// Every problem of every receiver is reported at once, at its path; HMAC
// and none cannot be configured.
func TestSSFReceiversValidation(t *testing.T) {
	cfg, err := load(t, `
ssf_receivers:
  - name: a
    issuer: http://idp.example.com
    delivery: carrier-pigeon
    auth: {token_file: /x, token_env: X}
  - name: a
    issuer: ftp://x
    auth: {client_id: c, token_url: "https://t.example/?q=1"}
    subjects: {opaque: phone}
    algorithms: [HS256, none]
    allowed_networks: [10.0.0.5]
  - name: "b c"
    auth: {token_env: X, client_id: c}
    events_requested: [session-revoked]
`)
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	var paths []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		paths = append(paths, e.(*FieldError).Path)
	}
	want := []string{
		"ssf_receivers[0].issuer", "ssf_receivers[0].delivery", "ssf_receivers[0].auth",
		"ssf_receivers[1].name", "ssf_receivers[1].issuer", "ssf_receivers[1].auth", "ssf_receivers[1].auth.token_url",
		"ssf_receivers[1].subjects.opaque", "ssf_receivers[1].algorithms[0]", "ssf_receivers[1].algorithms[1]",
		"ssf_receivers[1].allowed_networks[0]",
		"ssf_receivers[2].name", "ssf_receivers[2].issuer", "ssf_receivers[2].events_requested[0]", "ssf_receivers[2].auth",
	}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("got\n%v\nwant\n%v\n(%v)", paths, want, err)
	}
}
