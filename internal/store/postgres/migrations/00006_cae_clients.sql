-- Continuous Access Evaluation: a client allowed long-lived access tokens
-- when its requests declare the CAE capability. Conventions as in 00001.

-- +goose Up
ALTER TABLE clients ADD COLUMN cae_capable BOOLEAN NOT NULL DEFAULT FALSE;

-- +goose Down
ALTER TABLE clients DROP COLUMN cae_capable;
