package clientspec

import (
	"errors"
	"strings"
	"testing"

	"github.com/ward-idp/ward/internal/model"
)

func spaSpec() Spec {
	return Spec{ID: "spa", AuthMethod: model.AuthNone, RedirectURIs: []string{"https://app.example/cb"},
		GrantTypes: []string{model.GrantAuthorizationCode, model.GrantRefreshToken}, Scopes: []string{"openid"}}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Spec)
		fields []string
	}{
		{"ok", func(*Spec) {}, nil},
		{"no id", func(s *Spec) { s.ID = "" }, []string{"id"}},
		{"id with space", func(s *Spec) { s.ID = "a b" }, []string{"id"}},
		{"auth method", func(s *Spec) { s.AuthMethod = "magic" }, []string{"auth_method"}},
		{"relative redirect", func(s *Spec) { s.RedirectURIs = []string{"cb"} }, []string{"redirect_uris[0]"}},
		{"redirect fragment", func(s *Spec) { s.RedirectURIs = []string{"https://a/cb#f"} }, []string{"redirect_uris[0]"}},
		{"http without host", func(s *Spec) { s.RedirectURIs = []string{"https:///cb"} }, []string{"redirect_uris[0]"}},
		{"no redirect for code", func(s *Spec) { s.RedirectURIs = nil }, []string{"redirect_uris"}},
		{"grant unknown", func(s *Spec) { s.GrantTypes = []string{"implicit"} }, []string{"grant_types[0]"}},
		{"public client_credentials", func(s *Spec) { s.GrantTypes = []string{model.GrantClientCredentials} }, []string{"grant_types"}},
		{"scope with space", func(s *Spec) { s.Scopes = []string{"a b"} }, []string{"scopes[0]"}},
		{"bad jwks", func(s *Spec) { s.JWKS = []byte(`{"keys":[]}`) }, []string{"jwks"}},
		{"application type", func(s *Spec) { s.ApplicationType = "desktop" }, []string{"application_type"}},
		{"application type web", func(s *Spec) { s.ApplicationType = ApplicationWeb }, nil},
		{"application type native", func(s *Spec) { s.ApplicationType = ApplicationNative }, nil},
		{"several", func(s *Spec) { s.ID = ""; s.AuthMethod = "x"; s.GrantTypes = []string{"y"} }, []string{"id", "auth_method", "grant_types[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := spaSpec()
			tt.mutate(&s)
			err := Validate(s)
			var got []string
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("error %v does not match ErrInvalid", err)
				}
				for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
					got = append(got, e.(*FieldError).Field)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.fields, ",") {
				t.Errorf("got fields %v (%v), want %v", got, err, tt.fields)
			}
		})
	}
}

func TestValidateRejectsPrivateJWKS(t *testing.T) {
	spec := Spec{ID: "pkj", Name: "PKJ", AuthMethod: "private_key_jwt", GrantTypes: []string{"client_credentials"},
		JWKS: []byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","d":"jpsQnnGQmL-YBIffH1136cLyGrnpPbcyYFGV3QvV2cM"}]}`)}
	err := Validate(spec)
	if err == nil || !strings.Contains(err.Error(), "private") {
		t.Fatalf("Validate = %v, want a refusal of private key material", err)
	}
	spec.JWKS = []byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}`)
	if err := Validate(spec); err != nil {
		t.Fatalf("public key refused: %v", err)
	}
}
