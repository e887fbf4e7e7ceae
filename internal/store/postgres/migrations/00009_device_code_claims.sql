-- Continuous Access Evaluation: the claims request parameter of a device
-- authorization request (a resource's claims challenge, e.g. an acr the
-- approving sign-in must meet). Conventions as in 00001.

-- +goose Up
ALTER TABLE device_codes ADD COLUMN claims TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE device_codes DROP COLUMN claims;
