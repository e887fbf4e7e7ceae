package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ward-idp/ward/internal/clientspec"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/identity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

// Demo data created in dev mode.
const (
	DevUsername      = "alice"
	DevSPAClientID   = "demo-spa"
	DevServiceClient = "demo-service"
	// DevAgentClientID is the device agent's client (`ward device enroll`).
	DevAgentClientID = "ward-agent"
	// DevAdminClientID is a device-agent client that may also ask for the
	// admin API's scope: the way to call the admin API in dev mode.
	DevAdminClientID = "ward-admin"
	// devAdminScope is the admin API's scope (admin.ScopeAdmin).
	devAdminScope = "ward:admin"
	// DevCredentialsFile, under data_dir, keeps the generated demo
	// credentials (mode 0600): the store holds only their hashes.
	DevCredentialsFile = "dev-credentials.json"
)

// DevData is what dev mode created, for the banner.
type DevData struct {
	Issuer string
	User   DevUser
	// Clients are the demo clients, secrets included where known.
	Clients []DevClient
	// CredentialsFile is where the credentials are kept.
	CredentialsFile string
}

// DevUser is the demo user. Password and TOTP fields are empty when they
// are not known (the credentials file was removed after the user was
// created).
type DevUser struct {
	Username   string
	Password   secret.String
	TOTPSecret secret.String
	TOTPURL    secret.String
}

// DevClient is a demo client.
type DevClient struct {
	ID           string
	AuthMethod   string
	GrantTypes   []string
	RedirectURIs []string
	Scopes       []string
	DPoPBound    bool
	Secret       secret.String
}

// devCredentials is the on-disk form of the demo credentials.
type devCredentials struct {
	Username      string            `json:"username"`
	Password      string            `json:"password,omitempty"`
	TOTPSecret    string            `json:"totp_secret,omitempty"`
	TOTPURL       string            `json:"totp_url,omitempty"`
	ClientSecrets map[string]string `json:"client_secrets,omitempty"`
}

// DevData returns the demo data (nil outside dev mode).
func (a *App) DevData() *DevData { return a.dev }

// DevSPASpec is the demo single-page app: public, PKCE + DPoP, exact
// loopback redirect URIs (no port wildcard).
func DevSPASpec(issuer string) clientspec.Spec {
	redirects := []string{"http://127.0.0.1:8700/demo/callback", "http://localhost:8700/demo/callback"}
	logout := []string{"http://127.0.0.1:8700/demo/", "http://localhost:8700/demo/"}
	if u, err := url.Parse(strings.TrimSuffix(issuer, "/")); err == nil && u.Host != "" {
		if cb := u.String() + "/demo/callback"; !slices.Contains(redirects, cb) {
			redirects = append(redirects, cb)
			logout = append(logout, u.String()+"/demo/")
		}
	}
	return clientspec.Spec{
		ID:                     DevSPAClientID,
		Name:                   "Demo single-page app",
		AuthMethod:             model.AuthNone,
		RedirectURIs:           redirects,
		PostLogoutRedirectURIs: logout,
		GrantTypes:             []string{model.GrantAuthorizationCode, model.GrantRefreshToken},
		Scopes:                 []string{"openid", "profile", "email", "offline_access"},
		DPoPBoundAccessTokens:  true,
		// A browser app, although its redirect URIs are loopback ones
		// (which would make it a native app by RFC 8252's rule).
		ApplicationType: clientspec.ApplicationWeb,
	}
}

// DevServiceSpec is the demo machine-to-machine client.
func DevServiceSpec() clientspec.Spec {
	return clientspec.Spec{
		ID:         DevServiceClient,
		Name:       "Demo service (client credentials)",
		AuthMethod: model.AuthClientSecretBasic,
		GrantTypes: []string{model.GrantClientCredentials},
	}
}

// DevAgentSpec is the device agent: public, device-code grant, sessions
// bound to the device key (DPoP), and the scope that lets it register the
// device (model.ScopeDevice).
func DevAgentSpec() clientspec.Spec {
	return clientspec.Spec{
		ID:                    DevAgentClientID,
		Name:                  "Ward device agent",
		AuthMethod:            model.AuthNone,
		GrantTypes:            []string{model.GrantDeviceCode, model.GrantRefreshToken},
		Scopes:                []string{"openid", "profile", "offline_access", model.ScopeDevice},
		DPoPBoundAccessTokens: true,
		// The agent follows claims challenges: long-lived tokens.
		CAECapable: true,
	}
}

// DevAdminSpec is the admin API's client in dev mode: the device agent's
// grants (device code, DPoP-bound to the device key) with the scope
// ward:admin as well, so that `ward device enroll --client-id ward-admin
// --scope …` signs alice in and `ward device curl /admin/api/v1/…` calls
// the admin API (DevAdminCommands).
func DevAdminSpec() clientspec.Spec {
	return clientspec.Spec{
		ID:                    DevAdminClientID,
		Name:                  "Ward admin API (device agent)",
		AuthMethod:            model.AuthNone,
		GrantTypes:            []string{model.GrantDeviceCode, model.GrantRefreshToken},
		Scopes:                []string{"openid", "profile", "offline_access", model.ScopeDevice, devAdminScope},
		DPoPBoundAccessTokens: true,
		CAECapable:            true,
	}
}

// DevAdminCommands are the two commands that call the admin API of a dev
// Ward at issuer: enrol this machine through the admin client (sign in as
// the demo user), then send a request with its DPoP-bound token.
func DevAdminCommands(issuer string) []string {
	return []string{
		"ward device enroll --server " + strings.TrimSuffix(issuer, "/") + " --client-id " + DevAdminClientID +
			` --scope "` + strings.Join(DevAdminSpec().Scopes, " ") + `"`,
		"ward device curl /admin/api/v1/users",
	}
}

// ensureDevData creates the demo user and clients if missing and returns
// their credentials, keeping generated ones in the dev credentials file.
func (a *App) ensureDevData(ctx context.Context) (*DevData, error) {
	path := filepath.Join(a.Config.DataDir, DevCredentialsFile)
	creds, err := readDevCredentials(path)
	if err != nil {
		return nil, err
	}
	dirty := false
	if creds.ClientSecrets == nil {
		creds.ClientSecrets = map[string]string{}
	}

	u, err := a.Store.GetUserByUsername(ctx, DevUsername)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Reuse credentials from the file if the database was wiped, so
		// the authenticator app entry keeps working.
		if creds.Password == "" || creds.Username != DevUsername {
			creds.Password = randomPassword(16)
			creds.TOTPSecret, creds.TOTPURL = "", ""
		}
		if creds.TOTPSecret == "" {
			creds.TOTPSecret, creds.TOTPURL, err = a.Identity.NewTOTPKey(&model.User{Username: DevUsername}, "Ward")
			if err != nil {
				return nil, err
			}
		}
		creds.Username = DevUsername
		u, err = a.Identity.CreateUser(ctx, ActorSystem, identity.NewUser{
			Username:    DevUsername,
			Email:       "alice@example.com",
			DisplayName: "Alice (demo)",
			Password:    creds.Password,
			Roles:       []string{model.RoleAdmin},
			TOTPSecret:  creds.TOTPSecret,
		})
		if err != nil {
			return nil, fmt.Errorf("create demo user: %w", err)
		}
		dirty = true
		a.Log.InfoContext(ctx, "dev: demo user created", "user_id", u.ID, "username", u.Username)
	case err != nil:
		return nil, err
	default:
		if !u.HasRole(model.RoleAdmin) {
			if err := a.Identity.SetRoles(ctx, ActorSystem, u.ID, append(slices.Clone(u.Roles), model.RoleAdmin)); err != nil {
				return nil, err
			}
		}
		if creds.Username != DevUsername {
			creds = devCredentials{ClientSecrets: creds.ClientSecrets}
		}
	}

	spa := DevSPASpec(a.Config.Issuer)
	if _, _, err := a.Clients.Upsert(ctx, ActorSystem, model.ClientManagedByDev, spa, ""); err != nil {
		return nil, fmt.Errorf("demo client %s: %w", spa.ID, err)
	}
	svc := DevServiceSpec()
	sec := creds.ClientSecrets[svc.ID]
	if sec == "" {
		sec = secret.RandomToken()
		creds.ClientSecrets[svc.ID] = sec
		dirty = true
	}
	if _, _, err := a.Clients.Upsert(ctx, ActorSystem, model.ClientManagedByDev, svc, secret.String(sec)); err != nil {
		return nil, fmt.Errorf("demo client %s: %w", svc.ID, err)
	}
	agent := DevAgentSpec()
	if _, _, err := a.Clients.Upsert(ctx, ActorSystem, model.ClientManagedByDev, agent, ""); err != nil {
		return nil, fmt.Errorf("demo client %s: %w", agent.ID, err)
	}
	adm := DevAdminSpec()
	if _, _, err := a.Clients.Upsert(ctx, ActorSystem, model.ClientManagedByDev, adm, ""); err != nil {
		return nil, fmt.Errorf("demo client %s: %w", adm.ID, err)
	}
	if dirty {
		if err := writeDevCredentials(path, creds); err != nil {
			return nil, err
		}
	}

	d := &DevData{
		Issuer: a.Config.Issuer,
		User: DevUser{
			Username:   DevUsername,
			Password:   secret.String(creds.Password),
			TOTPSecret: secret.String(creds.TOTPSecret),
			TOTPURL:    secret.String(creds.TOTPURL),
		},
		CredentialsFile: path,
	}
	for _, s := range []clientspec.Spec{spa, svc, agent, adm} {
		s.Normalize()
		d.Clients = append(d.Clients, DevClient{
			ID: s.ID, AuthMethod: s.AuthMethod, GrantTypes: s.GrantTypes, RedirectURIs: s.RedirectURIs,
			Scopes: s.Scopes, DPoPBound: s.DPoPBoundAccessTokens, Secret: secret.String(creds.ClientSecrets[s.ID]),
		})
	}
	return d, nil
}

// DevBanner is the text `ward serve --dev` prints to stdout (not to the
// log): where to go and how to sign in. It is empty outside dev mode.
func (a *App) DevBanner() string {
	d := a.dev
	if d == nil {
		return ""
	}
	unknown := func(s secret.String) string {
		if s == "" {
			return "(unknown: not in " + d.CredentialsFile + "; reset with `ward user passwd " + d.User.Username + " --dev`)"
		}
		return s.Reveal()
	}
	var b strings.Builder
	line := strings.Repeat("─", 72)
	fmt.Fprintf(&b, "%s\n  Ward is running in DEVELOPMENT mode. Do not use this data in production.\n%s\n", line, line)
	fmt.Fprintf(&b, "  Issuer:        %s\n", d.Issuer)
	fmt.Fprintf(&b, "  Discovery:     %s/.well-known/openid-configuration\n", strings.TrimSuffix(d.Issuer, "/"))
	fmt.Fprintf(&b, "  Data:          %s\n", a.dataLocation())
	if !a.Config.Console.Disabled {
		fmt.Fprintf(&b, "  Console:       %s/console/ (sign in as %s: password, then a TOTP code)\n", strings.TrimSuffix(d.Issuer, "/"), d.User.Username)
	}
	fmt.Fprintf(&b, "\n  Demo user:     %s (role admin: global administrator of the console)\n", d.User.Username)
	fmt.Fprintf(&b, "  Password:      %s\n", unknown(d.User.Password))
	if d.User.TOTPSecret != "" {
		fmt.Fprintf(&b, "  TOTP secret:   %s\n", d.User.TOTPSecret.Reveal())
		fmt.Fprintf(&b, "  TOTP URL:      %s\n", d.User.TOTPURL.Reveal())
	} else {
		fmt.Fprintf(&b, "  TOTP secret:   %s\n", unknown(""))
	}
	b.WriteString("\n")
	for _, c := range d.Clients {
		fmt.Fprintf(&b, "  Client:        %s (%s; %s)\n", c.ID, c.AuthMethod, strings.Join(c.GrantTypes, ", "))
		if c.Secret != "" {
			fmt.Fprintf(&b, "    secret:      %s\n", c.Secret.Reveal())
		}
		for _, r := range c.RedirectURIs {
			fmt.Fprintf(&b, "    redirect:    %s\n", r)
		}
		if len(c.Scopes) > 0 {
			fmt.Fprintf(&b, "    scopes:      %s\n", strings.Join(c.Scopes, " "))
		}
		if c.DPoPBound {
			fmt.Fprintf(&b, "    DPoP-bound access tokens required\n")
		}
		if c.ID == DevAgentClientID {
			fmt.Fprintf(&b, "    enrol with:  ward device enroll --server %s\n", strings.TrimSuffix(d.Issuer, "/"))
		}
	}
	fmt.Fprintf(&b, "\n  Admin API:     sign in as %s through the %s client with the device agent,\n", d.User.Username, DevAdminClientID)
	fmt.Fprintf(&b, "                 then call any /admin/api/v1 path with its DPoP-bound token:\n")
	for _, c := range DevAdminCommands(d.Issuer) {
		fmt.Fprintf(&b, "    %s\n", c)
	}
	fmt.Fprintf(&b, "                 (on a machine enrolled already, add --agent-config admin.json to both)\n")
	fmt.Fprintf(&b, "\n  Credentials are kept in %s (mode 0600).\n%s\n", d.CredentialsFile, line)
	return b.String()
}

func readDevCredentials(path string) (devCredentials, error) {
	var c devCredentials
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%s: %w (delete it to regenerate the demo credentials)", path, err)
	}
	return c, nil
}

// writeDevCredentials replaces the file atomically with mode 0600.
func writeDevCredentials(path string, c devCredentials) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(c); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".dev-credentials-*")
	if err != nil {
		return fmt.Errorf("write dev credentials: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write dev credentials: %w", err)
	}
	return nil
}

// randomPassword returns n characters from an alphabet without look-alikes.
func randomPassword(n int) string {
	const alphabet = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	out := make([]byte, n)
	max := big.NewInt(int64(len(alphabet)))
	for i := range out {
		x, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(err)
		}
		out[i] = alphabet[x.Int64()]
	}
	return string(out)
}

// dataLocation says where this instance keeps its data: the absolute
// data directory, and the database when it is not the SQLite file in it.
func (a *App) dataLocation() string {
	dir := a.Config.DataDir
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if a.Config.Storage.Driver == config.DriverPostgres {
		return dir + " (database: PostgreSQL)"
	}
	return dir
}
