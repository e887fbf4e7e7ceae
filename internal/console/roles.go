package console

import (
	"slices"

	"github.com/ward-idp/ward/internal/model"
)

// Permission is something an operator may do in the console.
type Permission string

// Permissions, each granted by the roles in rolePermissions.
const (
	// PermSignOut: sign out of the console (any console role).
	PermSignOut Permission = "console.sign_out"
	// PermView: the dashboard, users and devices (read only).
	PermView Permission = "console.view"
	// PermViewLogs: the sign-in and audit logs and their verification.
	PermViewLogs Permission = "logs.view"
	// PermExportLogs: export audit records (JSON lines).
	PermExportLogs Permission = "logs.export"
	// PermRevokeSessions: revoke one session or all of a user's.
	PermRevokeSessions Permission = "sessions.revoke"
	// PermDisableUsers: disable and enable accounts.
	PermDisableUsers Permission = "users.disable"
	// PermResetPasswords: set a temporary password, unlock an account.
	PermResetPasswords Permission = "users.reset_password"
	// PermManageDevices: disable a device, mark it lost, enable it.
	PermManageDevices Permission = "devices.manage"
	// PermManageRisk: dismiss detections as false positives, confirm
	// that an account is compromised.
	PermManageRisk Permission = "risk.manage"
	// PermManageIncidents: assign, comment, close, reopen and merge
	// incidents and take their response actions.
	PermManageIncidents Permission = "incidents.manage"
	// PermViewAccess: the Conditional Access policies, their versions,
	// named locations, What-If and report-only results (read only).
	PermViewAccess Permission = "access.view"
	// PermViewConfig: the applications (clients) and signing keys.
	PermViewConfig Permission = "config.view"
	// PermManageClients: rotate a client's secret.
	PermManageClients Permission = "clients.manage"
	// PermManageKeys: rotate the signing keys.
	PermManageKeys Permission = "keys.manage"
)

// rolePermissions is what each role may do (docs/console.md has the
// table). model.RoleAdmin is the global administrator.
var rolePermissions = map[string][]Permission{
	model.RoleAdmin: {PermSignOut, PermView, PermViewLogs, PermExportLogs, PermRevokeSessions, PermDisableUsers,
		PermResetPasswords, PermManageDevices, PermManageRisk, PermManageIncidents, PermViewAccess, PermViewConfig, PermManageClients, PermManageKeys},
	model.RoleSecurityOperator: {PermSignOut, PermView, PermViewLogs, PermExportLogs, PermRevokeSessions,
		PermDisableUsers, PermManageDevices, PermManageRisk, PermManageIncidents, PermViewAccess, PermViewConfig},
	model.RoleHelpdesk: {PermSignOut, PermView, PermViewLogs, PermRevokeSessions, PermResetPasswords, PermViewAccess, PermViewConfig},
	model.RoleReader:   {PermSignOut, PermView, PermViewLogs, PermViewAccess, PermViewConfig},
}

// RoleNames are the console's names of the roles.
var RoleNames = map[string]string{
	model.RoleAdmin:            "Global administrator",
	model.RoleSecurityOperator: "Security operator",
	model.RoleHelpdesk:         "Helpdesk",
	model.RoleReader:           "Reader",
}

// Allowed reports whether a user holding roles may do p.
func Allowed(roles []string, p Permission) bool {
	for _, r := range roles {
		if slices.Contains(rolePermissions[r], p) {
			return true
		}
	}
	return false
}

// consoleRoles returns the console roles among roles, strongest first.
func consoleRoles(roles []string) []string {
	var out []string
	for _, r := range []string{model.RoleAdmin, model.RoleSecurityOperator, model.RoleHelpdesk, model.RoleReader} {
		if slices.Contains(roles, r) {
			out = append(out, r)
		}
	}
	return out
}
