package rs

import (
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// rfc9449Challenges returns the WWW-Authenticate values of the RFC 9449
// example responses, with the RFC 8792 line folding undone.
func rfc9449Challenges(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	fold := regexp.MustCompile(`\\\n\s*`)
	for _, name := range []string{"15-block.txt", "16-block.txt", "17-multi-challenge-no-token.txt",
		"18-multi-challenge-invalid-token.txt", "19-multi-challenge-ambiguous.txt", "24-block.txt"} {
		data, err := os.ReadFile(filepath.Join(vectorsDir, "rfc9449", name))
		if err != nil {
			t.Fatal(err)
		}
		text := fold.ReplaceAllString(string(data), "")
		for _, line := range strings.Split(text, "\n") {
			line = strings.TrimSpace(line)
			if v, ok := strings.CutPrefix(line, "WWW-Authenticate:"); ok {
				out[name] = strings.TrimSpace(v)
			}
		}
		if out[name] == "" {
			t.Fatalf("%s: no WWW-Authenticate", name)
		}
	}
	return out
}

func TestParseRFC9449Challenges(t *testing.T) {
	vs := rfc9449Challenges(t)
	type ch struct {
		scheme string
		params map[string]string
	}
	want := map[string][]ch{
		"15-block.txt": {{"DPoP", map[string]string{"algs": "ES256 PS256"}}},
		"16-block.txt": {{"DPoP", map[string]string{"error": "invalid_token", "error_description": "Invalid DPoP key binding", "algs": "ES256"}}},
		"17-multi-challenge-no-token.txt": {
			{"Bearer", nil},
			{"DPoP", map[string]string{"algs": "ES256 PS256"}},
		},
		"18-multi-challenge-invalid-token.txt": {
			{"Bearer", map[string]string{"error": "invalid_token", "error_description": "Invalid token"}},
			{"DPoP", map[string]string{"algs": "ES256 PS256"}},
		},
		"19-multi-challenge-ambiguous.txt": {
			{"Bearer", map[string]string{"error": "invalid_request", "error_description": "Multiple methods used to include access token"}},
			{"DPoP", map[string]string{"algs": "ES256 PS256", "error": "invalid_request", "error_description": "Multiple methods used to include access token"}},
		},
		"24-block.txt": {{"DPoP", map[string]string{"error": "use_dpop_nonce", "error_description": "Resource server requires nonce in DPoP proof"}}},
	}
	for name, v := range vs {
		h := http.Header{}
		h.Add("WWW-Authenticate", v)
		got, err := ParseChallenges(h)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		w := want[name]
		if len(got) != len(w) {
			t.Errorf("%s: %d challenges, want %d: %+v", name, len(got), len(w), got)
			continue
		}
		for i := range w {
			if got[i].Scheme != w[i].scheme || !reflect.DeepEqual(got[i].Params, w[i].params) {
				t.Errorf("%s[%d] = %s %v, want %s %v", name, i, got[i].Scheme, got[i].Params, w[i].scheme, w[i].params)
			}
		}
	}
}

func TestParseChallengesGrammar(t *testing.T) {
	cases := []struct {
		in   string
		want []string // formatted challenges
	}{
		// RFC 9110 §11.6.1 example.
		{`Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple"`,
			[]string{`Newauth realm="apps", type=1, title="Login to \"apps\""`, `Basic realm="simple"`}},
		{`Basic`, []string{`Basic`}},
		{`Basic `, []string{`Basic`}},
		{`Negotiate abc+/def==`, []string{`Negotiate abc+/def==`}},
		{`Negotiate abc==, Basic realm="x"`, []string{`Negotiate abc==`, `Basic realm="x"`}},
		{`, ,Bearer  realm = "a" ,, DPoP`, []string{`Bearer realm="a"`, `DPoP`}},
		{`DPoP ERROR="x"`, []string{`DPoP error="x"`}},
		{`Bearer error=invalid_token`, []string{`Bearer error="invalid_token"`}},
		{`Bearer max_age="0", acr_values="a b"`, []string{`Bearer max_age=0, acr_values="a b"`}},
	}
	for _, tc := range cases {
		got, err := parseChallengeList(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		var s []string
		for _, c := range got {
			s = append(s, c.String())
		}
		if !reflect.DeepEqual(s, tc.want) {
			t.Errorf("%q:\n got %q\nwant %q", tc.in, s, tc.want)
		}
	}
	for _, bad := range []string{
		``, `"quoted"`, `Bearer realm="unterminated`, `Bearer realm="a" x`, `Bearer a=1, a=2`,
		`Bearer realm="a\` + "\x01" + `"`, `Bearer realm="` + "\x7f" + `"`, `Bearer =x`, `Basic abc def`,
	} {
		if got, err := parseChallengeList(bad); err == nil {
			t.Errorf("%q parsed as %+v", bad, got)
		}
	}
}

func TestEntraClaimsChallenge(t *testing.T) {
	// The shape Microsoft documents for a CAE claims challenge: padded
	// standard base64 of the claims JSON.
	json := `{"access_token":{"nbf":{"essential":true, "value":"1602013991"}}}`
	h := http.Header{}
	h.Set("WWW-Authenticate", `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000", error="insufficient_claims", claims="`+base64.StdEncoding.EncodeToString([]byte(json))+`"`)
	c, ok := ParseClaimsChallenge(h)
	if !ok || c.Error != CodeInsufficientClaims || string(c.Claims) != json {
		t.Fatalf("challenge = %+v", c)
	}
	if at, ok := c.RequiredNotBefore(); !ok || !at.Equal(time.Unix(1602013991, 0)) {
		t.Errorf("nbf = %v %v", at, ok)
	}
	// Garbage in claims is reported, not fatal.
	h.Set("WWW-Authenticate", `DPoP error="insufficient_claims", claims="!!!"`)
	c, ok = ParseClaimsChallenge(h)
	if !ok || c.Claims != nil || c.ClaimsErr == nil {
		t.Fatalf("bad claims: %+v", c)
	}
	// No CAE challenge.
	h.Set("WWW-Authenticate", `DPoP algs="ES256"`)
	if _, ok := ParseClaimsChallenge(h); ok {
		t.Error("plain challenge reported as CAE")
	}
}

func TestChallengeRoundTrip(t *testing.T) {
	st := NewRevocationState(StateConfig{})
	now := time.Unix(1_800_000_000, 0)
	for _, d := range []*Decision{
		{Kind: Revoked, By: "user", RevokedAt: now.Add(-time.Minute)},
		{Kind: StepUp, By: "requirement", Requirement: Requirement{ACR: "urn:ward:acr:password", AuthTimeAfter: now.Add(-time.Hour)}},
	} {
		e := caeError(d, st, now)
		for _, bearer := range []bool{false, true} {
			w := newHeaderRecorder()
			writeError(w, e, "ES256", "", bearer)
			c, ok := ParseClaimsChallenge(w.h)
			if !ok || c.Error != e.Code || string(c.Claims) == "" || c.ClaimsErr != nil {
				t.Fatalf("%+v: parsed %+v", d, c)
			}
			if d.Kind == StepUp {
				if strings.Join(c.ACRValues, " ") != "urn:ward:acr:password urn:ward:acr:mfa" || c.MaxAge != 3600 {
					t.Errorf("step-up params %v %d", c.ACRValues, c.MaxAge)
				}
			} else if at, ok := c.RequiredNotBefore(); !ok || !at.Equal(d.RevokedAt) {
				t.Errorf("nbf %v", at)
			}
		}
	}
}

type headerRecorder struct {
	h    http.Header
	code int
	body strings.Builder
}

func newHeaderRecorder() *headerRecorder              { return &headerRecorder{h: http.Header{}} }
func (r *headerRecorder) Header() http.Header         { return r.h }
func (r *headerRecorder) WriteHeader(code int)        { r.code = code }
func (r *headerRecorder) Write(b []byte) (int, error) { return r.body.Write(b) }
