package app

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/ssfrx"
)

// openSSFReceivers builds Ward's SSF receivers (ssf_receivers). A server
// starts them: each sets up its stream at its transmitter in the
// background and polls or takes pushes; a command-line tool only uses
// them to manage the streams (ward ssf-receiver). Close stops them before
// the bus and the store close.
func (a *App) openSSFReceivers(cfg *config.Config, log *slog.Logger, o Options) error {
	var rcs []ssfrx.ReceiverConfig
	for i, rc := range cfg.SSFReceivers {
		creds, err := receiverCredentials(rc, o)
		if err != nil {
			return fmt.Errorf("app: ssf_receivers[%d] (%s): %w", i, rc.Name, err)
		}
		rcs = append(rcs, ssfrx.ReceiverConfig{
			Name: rc.Name, Issuer: rc.Issuer, ConfigurationURL: rc.ConfigurationURL, Delivery: rc.Delivery,
			Audience: rc.Audience, EventsRequested: rc.EventsRequested, Description: rc.Description, Credentials: creds,
			EmailMap: rc.Subjects.Email, IssSubMap: rc.Subjects.IssSub, OpaqueMap: rc.Subjects.Opaque,
			Algorithms: rc.Algorithms, MaxAge: rc.MaxAge, ClockSkew: rc.ClockSkew, AllowedNetworks: rc.AllowedNetworkPrefixes(),
		})
	}
	svc, err := ssfrx.New(ssfrx.Options{Issuer: cfg.Issuer, Store: a.Store, Bus: a.Bus, Now: a.Now, Log: log, Receivers: rcs})
	if err != nil {
		return fmt.Errorf("app: %w", err)
	}
	a.SSFReceivers = svc
	if !o.Tool && len(rcs) > 0 {
		svc.Start()
		a.closers = append(a.closers, svc.Close)
	}
	return nil
}

// receiverCredentials reads a receiver's credential from where the
// configuration says, when it is used (a rotated file is picked up).
func receiverCredentials(rc config.SSFReceiver, o Options) (ssfrx.Credentials, error) {
	au := rc.Auth
	source := func(file, env string) func() (string, error) {
		if file != "" {
			return func() (string, error) {
				b, err := os.ReadFile(file)
				if err != nil {
					return "", fmt.Errorf("read credential file: %w", err)
				}
				return strings.TrimSpace(string(b)), nil
			}
		}
		return func() (string, error) {
			v, ok := o.LookupEnv(env)
			if !ok || strings.TrimSpace(v) == "" {
				return "", fmt.Errorf("$%s is not set", env)
			}
			return strings.TrimSpace(v), nil
		}
	}
	if au.ClientID == "" {
		return ssfrx.BearerToken(source(au.TokenFile, au.TokenEnv)), nil
	}
	return ssfrx.ClientCredentials(ssfrx.ClientCredentialsConfig{
		TokenURL: au.TokenURL, ClientID: au.ClientID, Secret: source(au.ClientSecretFile, au.ClientSecretEnv),
		Scopes: au.Scopes, AllowedNetworks: rc.AllowedNetworkPrefixes(), Now: o.Now,
	}), nil
}
