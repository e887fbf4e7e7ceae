package oauth

import (
	"net/http"
	"strings"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/authz"
)

// scopesSupported are the scopes Ward understands itself; clients may be
// allowed others (resource scopes).
var scopesSupported = []string{"openid", "profile", "email", "offline_access"}

func (p *Provider) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	setCORS(w, r)
	doc := map[string]any{
		"issuer":                                           p.issuer,
		"authorization_endpoint":                           p.url(PathAuthorize),
		"token_endpoint":                                   p.url(PathToken),
		"userinfo_endpoint":                                p.url(PathUserinfo),
		"jwks_uri":                                         p.url(PathJWKS),
		"pushed_authorization_request_endpoint":            p.url(PathPAR),
		"device_authorization_endpoint":                    p.url(PathDeviceAuthorization),
		"introspection_endpoint":                           p.url(PathIntrospect),
		"revocation_endpoint":                              p.url(PathRevoke),
		"end_session_endpoint":                             p.url(PathLogout),
		"response_types_supported":                         []string{"code"},
		"response_modes_supported":                         []string{"query"},
		"grant_types_supported":                            []string{"authorization_code", "refresh_token", "client_credentials", model.GrantDeviceCode},
		"subject_types_supported":                          []string{"public"},
		"id_token_signing_alg_values_supported":            []string{"ES256"},
		"scopes_supported":                                 scopesSupported,
		"claims_supported":                                 []string{"sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "acr", "amr", "sid", "name", "preferred_username", "email"},
		"code_challenge_methods_supported":                 []string{"S256"},
		"token_endpoint_auth_methods_supported":            authMethods,
		"token_endpoint_auth_signing_alg_values_supported": clientAssertionAlgNames(),
		"introspection_endpoint_auth_methods_supported":    authMethods[1:],
		"revocation_endpoint_auth_methods_supported":       authMethods,
		"dpop_signing_alg_values_supported":                strings.Fields(p.dpopAlgs),
		"authorization_response_iss_parameter_supported":   true,
		"require_pushed_authorization_requests":            false,
		"request_parameter_supported":                      false,
		"request_uri_parameter_supported":                  false,
		// The claims parameter (Core §5.5) is read for access tokens: a
		// resource's claims challenge (nbf, acr) and the CAE capability
		// (xms_cc); other members are ignored, as §5.5 allows.
		"claims_parameter_supported":    true,
		"acr_values_supported":          authz.ACRValues,
		"frontchannel_logout_supported": false,
		"backchannel_logout_supported":  false,
		"prompt_values_supported":       []string{"none", "login"},
		"service_documentation":         p.issuer + "/",
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSONCached(w, doc)
}

func (p *Provider) handleJWKS(w http.ResponseWriter, r *http.Request) {
	setCORS(w, r)
	w.Header().Set("Cache-Control", "public, max-age=60")
	w.Header().Set("Content-Type", "application/jwk-set+json")
	writeJSONCached(w, p.c.Keys.JWKS())
}
