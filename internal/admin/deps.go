package admin

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/audit"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/clientspec"
	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/oauth"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/session"
)

// The interfaces below are what the admin API asks of each service,
// method for method; the wiring passes the services themselves. Keeping
// them here, at the consumer, means the API depends on what it calls and
// nothing else: it reaches no store and no other part of the application.

// Identity is the identity service: users, groups, passwords, roles,
// risk, second factors (identity.Service).
type Identity interface {
	GetUser(ctx context.Context, id string) (*model.User, error)
	ListUsers(ctx context.Context) ([]*model.User, error)
	CreateUser(ctx context.Context, actor string, nu identity.NewUser) (*model.User, error)
	SetPassword(ctx context.Context, actor, userID, password string) error
	SetRoles(ctx context.Context, actor, userID string, roles []string) error
	SetDisabled(ctx context.Context, actor, userID string, disabled bool) error
	SetRisk(ctx context.Context, actor, userID, level, reason string) error
	Unlock(ctx context.Context, actor, userID string) error
	RemoveTOTP(ctx context.Context, actor, userID string) error
	NewRecoveryCodes(ctx context.Context, actor, userID string) ([]secret.String, error)
	RecoveryCodesLeft(ctx context.Context, userID string) (int, error)
	RecoveryCodesLeftByUser(ctx context.Context) (map[string]int, error)
	ListPasskeys(ctx context.Context, userID string) ([]*model.WebAuthnCredential, error)
	PasskeyCounts(ctx context.Context) (map[string]int, error)
	RemovePasskey(ctx context.Context, actor, userID, id string) error
	RenamePasskey(ctx context.Context, actor, userID, id, name string) (*model.WebAuthnCredential, error)
	ResetPasskeys(ctx context.Context, actor, userID, reason string) (int, error)
	DeleteUser(ctx context.Context, actor, userID string) error
	GroupsOf(ctx context.Context, userID string) ([]*model.Group, error)
	GetGroup(ctx context.Context, id string) (*model.Group, error)
	ListGroups(ctx context.Context) ([]*model.Group, error)
	CreateGroup(ctx context.Context, actor, name string) (*model.Group, error)
	AddMember(ctx context.Context, actor, groupID, userID string) error
	RemoveMember(ctx context.Context, actor, groupID, userID string) error
	DeleteGroup(ctx context.Context, actor, groupID string) error
}

// Clients is the OAuth clients service (clients.Service).
type Clients interface {
	List(ctx context.Context) ([]*model.Client, error)
	Get(ctx context.Context, id string) (*model.Client, error)
	Create(ctx context.Context, actor string, spec clientspec.Spec) (*model.Client, secret.String, error)
	Update(ctx context.Context, actor, id string, change func(*clientspec.Spec) error) (*model.Client, secret.String, error)
	RotateSecret(ctx context.Context, actor, id string) (secret.String, error)
	Delete(ctx context.Context, actor, id string) error
}

// Devices is the device service: registered devices and compliance
// policies (device.Service).
type Devices interface {
	List(ctx context.Context, f device.Filter) ([]*model.Device, error)
	Get(ctx context.Context, id string) (*model.Device, error)
	Disable(ctx context.Context, actor, id string) (*model.Device, error)
	MarkLost(ctx context.Context, actor, id string) (*model.Device, error)
	Enable(ctx context.Context, actor, id string) (*model.Device, error)
	Delete(ctx context.Context, actor, id string) error
	ListPolicies(ctx context.Context) ([]*model.CompliancePolicy, error)
	GetPolicy(ctx context.Context, platform string) (*model.CompliancePolicy, error)
	PutPolicy(ctx context.Context, actor, platform string, rules []byte) (*model.CompliancePolicy, error)
	DeletePolicy(ctx context.Context, actor, platform string) error
}

// Access is the Conditional Access service (access.Service).
type Access interface {
	Current(ctx context.Context) (*policy.Document, int64, error)
	Apply(ctx context.Context, doc *policy.Document, o access.ApplyOptions) (*access.ApplyResult, error)
	Versions(ctx context.Context, limit int) ([]*model.PolicyVersion, error)
	Version(ctx context.Context, n int64) (*model.PolicyVersion, *policy.Document, error)
	Explain(ctx context.Context, w access.WhatIf) (*access.Result, error)
}

// Sessions is the owner of sign-in sessions (session.Service).
type Sessions interface {
	Get(ctx context.Context, id string) (*model.Session, error)
	List(ctx context.Context, f session.Filter) ([]*model.Session, error)
	Revoke(ctx context.Context, actor, id string, cause model.RevocationCause) (bool, error)
	RevokeUser(ctx context.Context, actor, userID string, cause model.RevocationCause) ([]string, error)
}

// AuditLog reads the audit record, newest first (the store does).
type AuditLog interface {
	ListEvents(ctx context.Context, q audit.Query) ([]*audit.Record, error)
}

// Authenticator checks the access token (and DPoP proof) of a request to
// one of Ward's own resources (oauth.Provider).
type Authenticator interface {
	AuthenticateResource(r *http.Request) (*oauth.Caller, string, *oauth.Error)
}

// Deps is what the admin API is built from. Every field but Risk, Graph,
// Log and Now is required.
type Deps struct {
	Identity Identity
	Clients  Clients
	Devices  Devices
	Access   Access
	Sessions Sessions
	// Risk serves the risk routes and sets a user's level (nil: the risk
	// routes are absent and PUT /users/{id}/risk sets the level through
	// Identity alone).
	Risk Risk
	// Graph serves GET /graph (nil: the route is absent).
	Graph Graph
	// Incidents serves the incident routes (nil: absent).
	Incidents Incidents
	Audit     AuditLog
	// Auth authenticates every request.
	Auth Authenticator
	// Bus carries the API's own events (access denials).
	Bus bus.Bus
	// Issuer is Ward's issuer URL: the audience admin tokens must have.
	Issuer string
	// TrustedProxies are the proxies whose X-Forwarded-For is believed
	// for the client address of events.
	TrustedProxies []netip.Prefix
	Now            func() time.Time // default time.Now
	Log            *slog.Logger     // default: discard
}
