package app

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/google/uuid"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/identity"
)

// webAuthnOptions turns the passkeys configuration into the identity
// service's options (nil: passkeys off, said why in the log). The FIDO
// metadata file of an allow list is read and verified here: a bad file
// stops the start.
func webAuthnOptions(cfg *config.Config, log *slog.Logger) (*identity.WebAuthnOptions, error) {
	if why := cfg.PasskeysOff(); why != "" {
		log.Info("passkeys are off", "why", why)
		return nil, nil
	}
	p := cfg.Passkeys
	o := &identity.WebAuthnOptions{
		RPID: cfg.PasskeyRPID(), RPName: p.RPName, Origins: cfg.PasskeyOrigins(), Timeout: p.Timeout, Attestation: p.Attestation,
	}
	if p.Attestation == identity.AttestationAllowList {
		for _, s := range p.AllowedAAGUIDs {
			u, err := uuid.Parse(s)
			if err != nil {
				return nil, fmt.Errorf("app: passkeys.allowed_aaguids: %w", err)
			}
			o.AllowedAAGUIDs = append(o.AllowedAAGUIDs, u)
		}
		blob, err := os.ReadFile(p.MetadataFile)
		if err != nil {
			return nil, fmt.Errorf("app: passkeys.metadata_file: %w", err)
		}
		if o.Metadata, err = identity.ParseMetadataBLOB(blob); err != nil {
			return nil, fmt.Errorf("app: passkeys.metadata_file %s: %w", p.MetadataFile, err)
		}
	}
	att := p.Attestation
	if att == "" {
		att = identity.AttestationNone
	}
	log.Info("passkeys are on", "rp_id", o.RPID, "origins", o.Origins, "attestation", att)
	return o, nil
}
