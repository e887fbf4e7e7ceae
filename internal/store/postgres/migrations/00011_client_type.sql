-- OAuth clients: the application type (OpenID Connect registration:
-- web or native; empty = inferred from the redirect URIs) and whether the
-- configuration file manages the client (managed_by = 'config'), so that
-- a change the next start would undo is refused instead.
-- Conventions as in 00001.

-- +goose Up
ALTER TABLE clients ADD COLUMN application_type TEXT NOT NULL DEFAULT '';
ALTER TABLE clients ADD COLUMN managed_by TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE clients DROP COLUMN managed_by;
ALTER TABLE clients DROP COLUMN application_type;
