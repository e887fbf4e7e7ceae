// Package clientspec describes an OAuth client as an administrator writes
// it (configuration file, CLI, admin API) and validates that description:
// the rules every way of registering a client shares. It is a leaf: the
// configuration, the clients service and the admin API all use it without
// depending on each other.
package clientspec

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/ward-idp/ward/internal/model"
)

// ErrInvalid is matched (errors.Is) by every validation error.
var ErrInvalid = errors.New("invalid client")

// FieldError is one validation problem, naming the field.
type FieldError struct {
	Field string // e.g. "redirect_uris[1]"
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// MinSecretLength is the shortest client secret accepted for a client
// whose secret is supplied rather than generated (static clients).
const MinSecretLength = 16

// AuthMethods lists the known token endpoint authentication methods.
var AuthMethods = []string{model.AuthNone, model.AuthClientSecretBasic, model.AuthClientSecretPost, model.AuthPrivateKeyJWT}

// GrantTypes lists the known grant types.
var GrantTypes = []string{model.GrantAuthorizationCode, model.GrantRefreshToken, model.GrantClientCredentials, model.GrantDeviceCode}

// Application types (OpenID Connect Dynamic Client Registration §2,
// application_type): what runs the client. Conditional Access tells browser
// apps from native ones by it (client_types: browser, native); when it is
// empty Ward infers it from the redirect URIs (RFC 8252: loopback or
// private-use schemes are native).
const (
	ApplicationWeb    = "web"
	ApplicationNative = "native"
)

// ApplicationTypes lists the accepted application_type values ("" = infer).
var ApplicationTypes = []string{ApplicationWeb, ApplicationNative}

// Spec describes a client to create or update. Its field names follow the
// configuration (and RFC 7591) names used in error messages.
type Spec struct {
	ID                     string
	Name                   string
	AuthMethod             string // token_endpoint_auth_method
	RedirectURIs           []string
	PostLogoutRedirectURIs []string
	// GrantTypes defaults to [authorization_code] (RFC 7591 §2) when empty.
	GrantTypes            []string
	Scopes                []string
	Audience              []string
	DPoPBoundAccessTokens bool
	// RequireProtectedSessions: only sessions bound to the key of a
	// registered, active device (token protection).
	RequireProtectedSessions bool
	// CAECapable: long-lived access tokens for requests that declare
	// the CAE capability.
	CAECapable     bool
	JWKS           json.RawMessage
	AccessTokenTTL time.Duration // 0: server default
	// ApplicationType is web, native, or empty to infer it from the
	// redirect URIs.
	ApplicationType string
}

// UsesSecret reports whether the auth method authenticates with a shared
// secret (client_secret_basic or client_secret_post).
func UsesSecret(authMethod string) bool {
	return authMethod == model.AuthClientSecretBasic || authMethod == model.AuthClientSecretPost
}

// Normalize applies defaults: grant types default to authorization_code.
func (s *Spec) Normalize() {
	if len(s.GrantTypes) == 0 {
		s.GrantTypes = []string{model.GrantAuthorizationCode}
	}
}

// Validate reports every problem with s at once (errors.Join of
// *FieldError, each matching ErrInvalid). It checks s as given; call
// Normalize first to apply defaults. Configuration validation uses the same
// function, prefixing the field paths.
func Validate(s Spec) error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	switch {
	case s.ID == "":
		add("id", "required")
	case len(s.ID) > 200:
		add("id", "longer than 200 characters")
	case strings.IndexFunc(s.ID, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsPrint(r) || unicode.IsSpace(r) }) >= 0:
		add("id", "must be printable ASCII without spaces")
	}
	if !slices.Contains(AuthMethods, s.AuthMethod) {
		add("auth_method", "%q is not one of %s", s.AuthMethod, strings.Join(AuthMethods, ", "))
	}
	public := s.AuthMethod == model.AuthNone
	for i, u := range s.RedirectURIs {
		if msg := checkRedirectURI(u); msg != "" {
			add(fmt.Sprintf("redirect_uris[%d]", i), "%s", msg)
		}
	}
	for i, u := range s.PostLogoutRedirectURIs {
		if msg := checkRedirectURI(u); msg != "" {
			add(fmt.Sprintf("post_logout_redirect_uris[%d]", i), "%s", msg)
		}
	}
	for i, g := range s.GrantTypes {
		if !slices.Contains(GrantTypes, g) {
			add(fmt.Sprintf("grant_types[%d]", i), "%q is not one of %s", g, strings.Join(GrantTypes, ", "))
		}
	}
	if slices.Contains(s.GrantTypes, model.GrantAuthorizationCode) && len(s.RedirectURIs) == 0 {
		add("redirect_uris", "at least one redirect URI is required for the authorization_code grant")
	}
	if public && slices.Contains(s.GrantTypes, model.GrantClientCredentials) {
		add("grant_types", "client_credentials is not allowed for a public client (auth_method none)")
	}
	for i, sc := range s.Scopes {
		if sc == "" || strings.ContainsFunc(sc, func(r rune) bool { return unicode.IsSpace(r) || r == '"' || r == '\\' }) {
			add(fmt.Sprintf("scopes[%d]", i), "%q is not a valid scope token", sc)
		}
	}
	for i, a := range s.Audience {
		if a == "" {
			add(fmt.Sprintf("audience[%d]", i), "empty")
		}
	}
	switch {
	case s.AuthMethod == model.AuthPrivateKeyJWT && len(s.JWKS) == 0:
		add("jwks", "required for private_key_jwt")
	case len(s.JWKS) > 0:
		var set struct {
			Keys []json.RawMessage `json:"keys"`
		}
		if err := json.Unmarshal(s.JWKS, &set); err != nil {
			add("jwks", "not a JSON Web Key Set: %v", err)
		} else if len(set.Keys) == 0 {
			add("jwks", "has no keys")
		}
		// A client registers public keys only: a private or symmetric
		// member means someone pasted the wrong file, and storing it would
		// put a secret into a plaintext column.
		for i, k := range set.Keys {
			var members map[string]json.RawMessage
			if json.Unmarshal(k, &members) != nil {
				add(fmt.Sprintf("jwks.keys[%d]", i), "not a JSON object")
				continue
			}
			for _, m := range []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"} {
				if _, ok := members[m]; ok {
					add(fmt.Sprintf("jwks.keys[%d]", i), "contains private or symmetric key material (%q); register public keys only", m)
					break
				}
			}
		}
	}
	if s.AccessTokenTTL < 0 {
		add("access_token_ttl", "must not be negative")
	}
	if s.ApplicationType != "" && !slices.Contains(ApplicationTypes, s.ApplicationType) {
		add("application_type", "%q is not one of %s", s.ApplicationType, strings.Join(ApplicationTypes, ", "))
	}
	return errors.Join(errs...)
}

// CheckSecretPresence checks that a secret is given exactly when the auth
// method uses one: client_secret_basic/post need one; none (public) and
// private_key_jwt must not have one. field names the secret in errors.
func CheckSecretPresence(authMethod string, hasSecret bool, field string) error {
	switch {
	case UsesSecret(authMethod) && !hasSecret:
		return &FieldError{Field: field, Msg: "required for auth_method " + authMethod}
	case !UsesSecret(authMethod) && hasSecret && authMethod == model.AuthNone:
		return &FieldError{Field: field, Msg: "a public client (auth_method none) must not have a secret"}
	case !UsesSecret(authMethod) && hasSecret:
		return &FieldError{Field: field, Msg: "not used with auth_method " + authMethod + "; remove it"}
	}
	return nil
}

// checkRedirectURI returns why u is not an acceptable redirect URI, or "".
// Redirect URIs are compared by exact string match, so they must be
// absolute and carry no fragment (RFC 6749 §3.1.2).
func checkRedirectURI(u string) string {
	p, err := url.Parse(u)
	switch {
	case err != nil:
		return fmt.Sprintf("%q is not a URL", u)
	case !p.IsAbs():
		return fmt.Sprintf("%q is not an absolute URI", u)
	case p.Fragment != "" || strings.Contains(u, "#"):
		return fmt.Sprintf("%q must not contain a fragment", u)
	case (p.Scheme == "http" || p.Scheme == "https") && p.Host == "":
		return fmt.Sprintf("%q has no host", u)
	}
	return ""
}
