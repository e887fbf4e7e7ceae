package server_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/wardtest"
)

// FuzzTokenEndpoint sends arbitrary bodies, Authorization and DPoP headers
// to the token endpoint: it must never panic or answer 5xx, and every
// failure must be a JSON OAuth error that does not echo the input.
func FuzzTokenEndpoint(f *testing.F) {
	in := wardtest.Start(f, wardtest.Options{})
	s := newSigner(f)
	proof, _ := s.ProofAt("POST", in.URL+"/token", "", "", in.Clock.Now())
	seeds := []struct{ body, authz, dpop string }{
		{"grant_type=client_credentials", "Basic c2VydmljZTpzZXJ2aWNlLXNlY3JldC0wMTIzNDU2Nzg5LWFiY2RlZmdoaWprbG1ub3BxcnN0dQ==", proof},
		{"grant_type=client_credentials&scope=docs.read", "Basic c2VydmljZTp4", ""},
		{"grant_type=authorization_code&code=x&redirect_uri=https%3A%2F%2Fapp.example%2Fcallback&code_verifier=abc&client_id=spa", "", proof},
		{"grant_type=refresh_token&refresh_token=abc&client_id=native", "", ""},
		{"grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=a.b.c", "", ""},
		{"%%%&&==", "Basic %%%", "x.y.z"},
		{"grant_type=client_credentials&grant_type=client_credentials", "", ""},
	}
	for _, sd := range seeds {
		f.Add(sd.body, sd.authz, sd.dpop)
	}
	f.Fuzz(func(t *testing.T, body, authz, dpopHdr string) {
		req := httptest.NewRequest(http.MethodPost, in.URL+"/token", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if authz != "" {
			req.Header["Authorization"] = []string{authz}
		}
		if dpopHdr != "" {
			req.Header["Dpop"] = []string{dpopHdr}
		}
		rec := httptest.NewRecorder()
		in.Server.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("non-JSON response %d: %q", rec.Code, rec.Body)
		}
		if rec.Code == http.StatusOK {
			return
		}
		code, _ := out["error"].(string)
		switch code {
		case "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type",
			"invalid_scope", "invalid_dpop_proof", "use_dpop_nonce":
		default:
			t.Fatalf("unexpected error code %q (status %d)", code, rec.Code)
		}
		desc, _ := out["error_description"].(string)
		for _, v := range []string{body, authz, dpopHdr} {
			if len(v) >= 12 && strings.Contains(desc, v) {
				t.Fatalf("error description echoes input: %q", desc)
			}
		}
	})
}
