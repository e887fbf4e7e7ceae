-- Devices: whether Ward verified where the device key lives (TPM 2.0 key
-- attestation) and what the attestation established (JSON). key_storage
-- stays what the agent reported.
-- Conventions as in 00001.

-- +goose Up
ALTER TABLE devices ADD COLUMN key_attested BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE devices ADD COLUMN key_attestation TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE devices DROP COLUMN key_attestation;
ALTER TABLE devices DROP COLUMN key_attested;
