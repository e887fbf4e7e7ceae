-- Device authorization requests denied at approval by Conditional Access
-- (not by the user): why (the audit reason, e.g. ca_block) and what the
-- device's poll is told. Empty for a request the user denied. Conventions
-- as in 00001.

-- +goose Up
ALTER TABLE device_codes ADD COLUMN deny_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE device_codes ADD COLUMN deny_description TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE device_codes DROP COLUMN deny_description;
ALTER TABLE device_codes DROP COLUMN deny_reason;
