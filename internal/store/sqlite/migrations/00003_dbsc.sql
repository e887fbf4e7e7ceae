-- Device Bound Session Credentials: the browser key an SSO session is
-- bound to (RFC 7638 thumbprint and public JWK). Empty: an unbound
-- session, whose SSO cookie alone is its credential. Conventions as in
-- 00001.

-- +goose Up
ALTER TABLE sessions ADD COLUMN dbsc_key_jkt TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN dbsc_key TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE sessions DROP COLUMN dbsc_key;
ALTER TABLE sessions DROP COLUMN dbsc_key_jkt;
