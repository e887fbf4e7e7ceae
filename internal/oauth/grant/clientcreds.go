package grant

import (
	"context"
	"strings"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth/authz"
	"github.com/ward-idp/ward/internal/oauth/oautherr"
	"github.com/ward-idp/ward/internal/policy"
)

// clientCredentials issues a token to the client itself (RFC 6749 §4.4).
type clientCredentials struct{ *env }

func (g clientCredentials) Grant(ctx context.Context, req *Request) (*Response, *oautherr.Error) {
	c := req.Client
	if c.Public() || !c.AllowsGrant(model.GrantClientCredentials) {
		return nil, oautherr.New(oautherr.UnauthorizedClient, "client may not use the client credentials grant")
	}
	scope, e := authz.CheckScope(c, req.Get("scope"))
	if e != nil {
		return nil, e
	}
	for _, s := range strings.Fields(scope) {
		if s == "openid" || s == "offline_access" {
			return nil, oautherr.New(oautherr.InvalidScope, "scope "+s+" is not available to the client credentials grant")
		}
	}
	return g.issue(ctx, req, decision{flow: policy.FlowClientCredentials, client: c, scope: scope}, model.EventTokenIssued, nil)
}
