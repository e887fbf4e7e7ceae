-- Whether an authorization code was spent by a refusal (Conditional
-- Access, an ended session) rather than by the redemption that issued its
-- tokens, and the DPoP key of the refused request. The same client
-- presenting it again with the same key and PKCE verifier (a retry, a
-- reloaded callback page) obtained nothing the first time, so Ward
-- refuses it again without treating it as the replay of a stolen code.
-- Any other second presentation is still a code reuse. Existing codes
-- count as redeemed (the safe reading).

-- +goose Up
ALTER TABLE auth_codes ADD COLUMN refused BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE auth_codes ADD COLUMN refused_jkt TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE auth_codes DROP COLUMN refused_jkt;
ALTER TABLE auth_codes DROP COLUMN refused;
