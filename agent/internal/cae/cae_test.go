package cae

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func resp(status int, challenges ...string) *http.Response {
	h := http.Header{}
	for _, c := range challenges {
		h.Add("WWW-Authenticate", c)
	}
	return &http.Response{StatusCode: status, Header: h}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestChallenge(t *testing.T) {
	revoked := `{"access_token":{"nbf":{"essential":true,"value":"1800000000"}}}`
	stepUp := `{"access_token":{"acr":{"essential":true,"values":["urn:ward:acr:mfa"]}}}`
	for _, tc := range []struct {
		name string
		resp *http.Response
		want string // "" = not a challenge
	}{
		{"insufficient_claims", resp(401, `DPoP algs="ES256", error="insufficient_claims", claims="`+b64(revoked)+`"`), revoked},
		{"step-up", resp(401, `DPoP error="insufficient_user_authentication", acr_values="urn:ward:acr:mfa", max_age=5, claims="`+b64(stepUp)+`"`), stepUp},
		{"Entra padded base64", resp(401, `Bearer error="insufficient_claims", claims="`+base64.StdEncoding.EncodeToString([]byte(revoked))+`"`), revoked},
		{"second field", resp(401, `Basic realm="x"`, `Bearer error="insufficient_claims", claims="`+b64(revoked)+`"`), revoked},
		{"not a 401", resp(403, `DPoP error="insufficient_claims", claims="`+b64(revoked)+`"`), ""},
		{"no claims", resp(401, `DPoP error="insufficient_claims"`), ""},
		{"invalid_token", resp(401, `DPoP error="invalid_token"`), ""},
		{"claims not base64", resp(401, `DPoP error="insufficient_claims", claims="%%%not-base64%%%"`), ""},
		{"claims not JSON", resp(401, `DPoP error="insufficient_claims", claims="`+b64("not json")+`"`), ""},
		{"claims a JSON array", resp(401, `DPoP error="insufficient_claims", claims="`+b64(`[1,2]`)+`"`), ""},
		{"claims too long", resp(401, `DPoP error="insufficient_claims", claims="`+b64(`{"access_token":{"x":"`+strings.Repeat("a", MaxClaims)+`"}}`)+`"`), ""},
		{"unparseable header", resp(401, `DPoP error="insufficient_claims, claims="`+b64(revoked)), ""},
		{"nil", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch, ok := Challenge(tc.resp)
			if tc.want == "" {
				if ok {
					t.Fatalf("accepted %q", ch.Claims)
				}
				return
			}
			if !ok || string(ch.Claims) != tc.want {
				t.Fatalf("got %v %q, want %q", ok, ch, tc.want)
			}
		})
	}
}

func TestWithCapability(t *testing.T) {
	decode := func(s string) map[string]any {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		return m
	}
	cp1 := map[string]any{"values": []any{"cp1"}}
	for _, tc := range []struct{ in, want string }{
		{"", `{"access_token":{"xms_cc":{"values":["cp1"]}}}`},
		{"not json", `{"access_token":{"xms_cc":{"values":["cp1"]}}}`},
		{`{"access_token":{"nbf":{"essential":true,"value":"17"}}}`, `{"access_token":{"nbf":{"essential":true,"value":"17"},"xms_cc":{"values":["cp1"]}}}`},
		{`{"access_token":{"xms_cc":{"values":["cp2"]}},"id_token":{"acr":null}}`, `{"access_token":{"xms_cc":{"values":["cp1"]}},"id_token":{"acr":null}}`},
		{`{"access_token":null,"userinfo":5}`, `{"access_token":{"xms_cc":{"values":["cp1"]}}}`},
	} {
		got := decode(WithCapability(tc.in))
		if !reflect.DeepEqual(got, decode(tc.want)) {
			t.Errorf("WithCapability(%q) = %v, want %s", tc.in, got, tc.want)
		}
		if at, _ := got["access_token"].(map[string]any); !reflect.DeepEqual(at["xms_cc"], cp1) {
			t.Errorf("WithCapability(%q): no capability", tc.in)
		}
	}
}

func TestSecureURL(t *testing.T) {
	for u, want := range map[string]bool{
		"https://api.example.com/x": true, "HTTPS://api.example.com": true,
		"http://127.0.0.1:8080/x": true, "http://localhost/x": true, "http://[::1]:80/": true,
		"http://api.example.com/x": false, "http://127.example.com/": false, "ftp://127.0.0.1/": false,
		"http://10.0.0.1/": false,
	} {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		if got := SecureURL(pu); got != want {
			t.Errorf("SecureURL(%s) = %v, want %v", u, got, want)
		}
	}
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

// TestCheckRequest: a token goes over https or to loopback http only; a
// refused request's body is closed, a passed one's is not.
func TestCheckRequest(t *testing.T) {
	for _, c := range []struct {
		url string
		ok  bool
	}{
		{"https://docs.example/x", true},
		{"http://127.0.0.1:8080/x", true},
		{"http://localhost/x", true},
		{"http://docs.example/x", false},
		{"http://127.example.com/x", false},
		{"ftp://docs.example/x", false},
	} {
		body := &closeRecorder{Reader: strings.NewReader("x")}
		req, _ := http.NewRequest(http.MethodPost, c.url, body)
		req.Body = body
		err := CheckRequest(req, "test")
		if (err == nil) != c.ok || body.closed == c.ok {
			t.Errorf("%s: err %v, body closed %v", c.url, err, body.closed)
		}
		if err != nil && !strings.HasPrefix(err.Error(), "test: ") {
			t.Errorf("%s: error %q does not name its sender", c.url, err)
		}
	}
	req := &http.Request{Body: &closeRecorder{Reader: strings.NewReader("")}}
	if err := CheckRequest(req, "test"); err == nil || !req.Body.(*closeRecorder).closed {
		t.Errorf("request without URL: %v", err)
	}
}
