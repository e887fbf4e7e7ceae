package sqlstore

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// ---- users ----

const userCols = `id, username, email, display_name, password_hash, totp_secret, roles,
	disabled, failed_logins, locked_until, created_at, updated_at,
	risk_level, risk_updated_at, password_changed_at`

// userRow receives a users row (userCols).
type userRow struct {
	u                        model.User
	roles                    string
	locked, created, updated int64
	failed                   int64
	riskAt, pwAt             int64
}

func (x *userRow) dest() []any {
	u := &x.u
	return []any{&u.ID, &u.Username, &u.Email, &u.DisplayName, &u.PasswordHash, &u.TOTPSecret,
		&x.roles, &u.Disabled, &x.failed, &x.locked, &x.created, &x.updated, &u.RiskLevel, &x.riskAt, &x.pwAt}
}

func (x *userRow) user() (*model.User, error) {
	u := &x.u
	var err error
	if u.Roles, err = unjsonList(x.roles, "user roles"); err != nil {
		return nil, err
	}
	u.TOTPSecret = unblob(u.TOTPSecret)
	u.FailedLogins = int(x.failed)
	u.LockedUntil = fromMicros(x.locked)
	u.CreatedAt = fromMicros(x.created)
	u.UpdatedAt = fromMicros(x.updated)
	u.RiskUpdatedAt = fromMicros(x.riskAt)
	u.PasswordChangedAt = fromMicros(x.pwAt)
	return u, nil
}

func scanUser(r Row) (*model.User, error) {
	var x userRow
	if err := r.Scan(x.dest()...); err != nil {
		return nil, err
	}
	return x.user()
}

func userArgs(u *model.User) []any {
	return []any{u.ID, u.Username, u.Email, u.DisplayName, u.PasswordHash, blob(u.TOTPSecret),
		jsonList(u.Roles), u.Disabled, int64(u.FailedLogins), micros(u.LockedUntil),
		micros(u.CreatedAt), micros(u.UpdatedAt), u.RiskLevel, micros(u.RiskUpdatedAt), micros(u.PasswordChangedAt)}
}

// CreateUser stores a new user. A taken id or username (compared
// case-insensitively) is ErrAlreadyExists.
func (s *Store) CreateUser(ctx context.Context, u *model.User) error {
	return s.execEvent(ctx, func(q Querier) error {
		_, err := q.Exec(ctx,
			`INSERT INTO users (`+userCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
			userArgs(u)...)
		return s.createErr("user", err)
	})
}

// GetUser returns the user with the given id.
func (s *Store) GetUser(ctx context.Context, id string) (*model.User, error) {
	u, err := scanUser(s.db.Lookup().QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE id = $1`, id))
	return u, s.getErr("user", err)
}

// GetUserByUsername returns the user with exactly this username (the
// caller case-folds). The lower() term lets both backends use the unique
// index on lower(username).
func (s *Store) GetUserByUsername(ctx context.Context, username string) (*model.User, error) {
	u, err := scanUser(s.db.Read().QueryRow(ctx,
		`SELECT `+userCols+` FROM users WHERE lower(username) = lower($1) AND username = $1`, username))
	return u, s.getErr("user", err)
}

// ListUsers returns all users ordered by username.
func (s *Store) ListUsers(ctx context.Context) ([]*model.User, error) {
	rs, err := s.db.Read().Query(ctx, `SELECT `+userCols+` FROM users ORDER BY username, id`)
	return collect(rs, err, "list users", scanUser)
}

// UpdateUser applies fn to the stored user and saves the result in one
// transaction, together with ctx's pending event (store.WithEvent). The
// id cannot change. An update that removes the user's TOTP secret deletes
// the user's recovery codes in the same transaction: they belong to that
// second factor.
func (s *Store) UpdateUser(ctx context.Context, id string, fn func(*model.User) error) (*model.User, error) {
	var out *model.User
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		u, err := s.lockUser(ctx, q, id)
		if err != nil {
			return nil, err
		}
		hadTOTP := len(u.TOTPSecret) > 0
		if err := fn(u); err != nil {
			return nil, err
		}
		if err := s.saveUser(ctx, q, id, u); err != nil {
			return nil, err
		}
		if hadTOTP && len(u.TOTPSecret) == 0 {
			if _, err := q.Exec(ctx, `DELETE FROM recovery_codes WHERE user_id = $1`, id); err != nil {
				return nil, wrap("delete recovery codes", err)
			}
		}
		out = u
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// lockUser reads a user for a read-modify-write transaction (locking the
// row where the backend needs it).
func (s *Store) lockUser(ctx context.Context, q Querier, id string) (*model.User, error) {
	u, err := scanUser(q.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE id = $1`+s.d.ForUpdate, id))
	if err != nil {
		return nil, s.getErr("user", err)
	}
	return u, nil
}

// saveUser writes u over the user id (the id cannot change).
func (s *Store) saveUser(ctx context.Context, q Querier, id string, u *model.User) error {
	u.ID = id
	_, err := q.Exec(ctx, `UPDATE users SET username = $2, email = $3, display_name = $4,
		password_hash = $5, totp_secret = $6, roles = $7, disabled = $8, failed_logins = $9,
		locked_until = $10, created_at = $11, updated_at = $12, risk_level = $13, risk_updated_at = $14,
		password_changed_at = $15 WHERE id = $1`, userArgs(u)...)
	if err != nil {
		if s.d.IsUniqueViolation(err) {
			return alreadyExists("username")
		}
		return wrap("update user", err)
	}
	return nil
}

// DeleteUser deletes a user, its group memberships and its recovery
// codes, together with ctx's pending event (store.WithEvent). Sessions
// are left to the caller, which revokes them (and reports the
// revocation) first.
func (s *Store) DeleteUser(ctx context.Context, id string) error {
	return s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		if _, err := q.Exec(ctx, `DELETE FROM recovery_codes WHERE user_id = $1`, id); err != nil {
			return nil, wrap("delete recovery codes", err)
		}
		n, err := q.Exec(ctx, `DELETE FROM users WHERE id = $1`, id)
		if err := deleted("user", n, err); err != nil {
			return nil, err
		}
		_, err = q.Exec(ctx, `DELETE FROM group_members WHERE user_id = $1`, id)
		return nil, wrap("delete user memberships", err)
	})
}

// ---- groups ----

// groupSelect yields one row per member (or one row with member ” for
// an empty group), ordered so that scanGroups can fold them.
const groupSelect = `SELECT g.id, g.name, g.created_at, COALESCE(m.user_id, '')
	FROM groups g LEFT JOIN group_members m ON m.group_id = g.id`

const groupOrder = ` ORDER BY g.name, g.id, m.pos`

func scanGroups(rs Rows, err error, op string) ([]*model.Group, error) {
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rs.Close()
	var (
		out []*model.Group
		cur *model.Group
	)
	for rs.Next() {
		var (
			id, name, member string
			created          int64
		)
		if err := rs.Scan(&id, &name, &created, &member); err != nil {
			return nil, wrap(op, err)
		}
		if cur == nil || cur.ID != id {
			cur = &model.Group{ID: id, Name: name, CreatedAt: fromMicros(created)}
			out = append(out, cur)
		}
		if member != "" {
			cur.Members = append(cur.Members, member)
		}
	}
	if err := rs.Err(); err != nil {
		return nil, wrap(op, err)
	}
	return out, wrap(op, rs.Close())
}

func (s *Store) oneGroup(ctx context.Context, q Querier, where string, arg any) (*model.Group, error) {
	rs, err := q.Query(ctx, groupSelect+` WHERE `+where+groupOrder, arg)
	gs, err := scanGroups(rs, err, "get group")
	if err != nil {
		return nil, err
	}
	if len(gs) == 0 {
		return nil, notFound("group")
	}
	return gs[0], nil
}

func writeMembers(ctx context.Context, q Querier, g *model.Group) error {
	for i, m := range dedupe(g.Members) {
		if _, err := q.Exec(ctx, `INSERT INTO group_members (group_id, user_id, pos) VALUES ($1, $2, $3)`,
			g.ID, m, int64(i)); err != nil {
			return wrap("write group members", err)
		}
	}
	return nil
}

// CreateGroup stores a new group with its members (empty and repeated
// member ids are dropped). A taken id or name is ErrAlreadyExists. ctx's
// pending events (store.WithEvent) commit with it.
func (s *Store) CreateGroup(ctx context.Context, g *model.Group) error {
	return s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		_, err := q.Exec(ctx, `INSERT INTO groups (id, name, created_at) VALUES ($1, $2, $3)`,
			g.ID, g.Name, micros(g.CreatedAt))
		if err != nil {
			return nil, s.createErr("group", err)
		}
		return nil, writeMembers(ctx, q, g)
	})
}

// GetGroup returns a group by id.
func (s *Store) GetGroup(ctx context.Context, id string) (*model.Group, error) {
	return s.oneGroup(ctx, s.db.Read(), `g.id = $1`, id)
}

// GetGroupByName returns a group by its exact name.
func (s *Store) GetGroupByName(ctx context.Context, name string) (*model.Group, error) {
	return s.oneGroup(ctx, s.db.Read(), `g.name = $1`, name)
}

// ListGroups returns all groups ordered by name.
func (s *Store) ListGroups(ctx context.Context) ([]*model.Group, error) {
	rs, err := s.db.Read().Query(ctx, groupSelect+groupOrder)
	return scanGroups(rs, err, "list groups")
}

// GroupsOfUser returns the groups the user is a member of, by name.
func (s *Store) GroupsOfUser(ctx context.Context, userID string) ([]*model.Group, error) {
	rs, err := s.db.Read().Query(ctx, groupSelect+
		` WHERE g.id IN (SELECT group_id FROM group_members WHERE user_id = $1)`+groupOrder, userID)
	return scanGroups(rs, err, "list groups of user")
}

// UpdateGroup applies fn to the stored group and saves it (members
// included) in one transaction, with ctx's pending events
// (store.WithEvent).
func (s *Store) UpdateGroup(ctx context.Context, id string, fn func(*model.Group) error) (*model.Group, error) {
	var out *model.Group
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		out = nil
		if s.d.ForUpdate != "" {
			if _, err := q.Exec(ctx, `SELECT 1 FROM groups WHERE id = $1`+s.d.ForUpdate, id); err != nil {
				return nil, wrap("lock group", err)
			}
		}
		g, err := s.oneGroup(ctx, q, `g.id = $1`, id)
		if err != nil {
			return nil, err
		}
		if err := fn(g); err != nil {
			return nil, err
		}
		g.ID = id
		if _, err := q.Exec(ctx, `UPDATE groups SET name = $2, created_at = $3 WHERE id = $1`,
			g.ID, g.Name, micros(g.CreatedAt)); err != nil {
			if s.d.IsUniqueViolation(err) {
				return nil, alreadyExists("group name")
			}
			return nil, wrap("update group", err)
		}
		if _, err := q.Exec(ctx, `DELETE FROM group_members WHERE group_id = $1`, id); err != nil {
			return nil, wrap("update group members", err)
		}
		if err := writeMembers(ctx, q, g); err != nil {
			return nil, err
		}
		g.Members = dedupe(g.Members)
		if len(g.Members) == 0 {
			g.Members = nil
		}
		out = g
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteGroup deletes a group; its memberships go with it (ON DELETE
// CASCADE). ctx's pending events (store.WithEvent) commit with it.
func (s *Store) DeleteGroup(ctx context.Context, id string) error {
	return s.execEvent(ctx, func(q Querier) error {
		n, err := q.Exec(ctx, `DELETE FROM groups WHERE id = $1`, id)
		return deleted("group", n, err)
	})
}

// ---- clients ----

const clientCols = `id, name, secret_hash, token_endpoint_auth_method, redirect_uris,
	post_logout_redirect_uris, grant_types, scopes, audience, jwks, dpop_bound_access_tokens,
	access_token_ttl, created_at, updated_at, require_protected_sessions, cae_capable,
	application_type, managed_by`

func scanClient(r Row) (*model.Client, error) {
	var (
		c                             model.Client
		redirects, postLogout, grants string
		scopes, audience, jwks        string
		ttl, created, updated         int64
	)
	if err := r.Scan(&c.ID, &c.Name, &c.SecretHash, &c.TokenEndpointAuthMethod, &redirects, &postLogout,
		&grants, &scopes, &audience, &jwks, &c.DPoPBoundAccessTokens, &ttl, &created, &updated,
		&c.RequireProtectedSessions, &c.CAECapable, &c.ApplicationType, &c.ManagedBy); err != nil {
		return nil, err
	}
	var err error
	for _, f := range []struct {
		dst  *[]string
		src  string
		what string
	}{
		{&c.RedirectURIs, redirects, "client redirect_uris"},
		{&c.PostLogoutRedirectURIs, postLogout, "client post_logout_redirect_uris"},
		{&c.GrantTypes, grants, "client grant_types"},
		{&c.Scopes, scopes, "client scopes"},
		{&c.Audience, audience, "client audience"},
	} {
		if *f.dst, err = unjsonList(f.src, f.what); err != nil {
			return nil, err
		}
	}
	c.SecretHash = unblob(c.SecretHash)
	c.JWKS = unrawJSON(jwks)
	c.AccessTokenTTL = time.Duration(ttl)
	c.CreatedAt = fromMicros(created)
	c.UpdatedAt = fromMicros(updated)
	return &c, nil
}

func clientArgs(c *model.Client) []any {
	return []any{c.ID, c.Name, blob(c.SecretHash), c.TokenEndpointAuthMethod, jsonList(c.RedirectURIs),
		jsonList(c.PostLogoutRedirectURIs), jsonList(c.GrantTypes), jsonList(c.Scopes),
		jsonList(c.Audience), rawJSON(c.JWKS), c.DPoPBoundAccessTokens, int64(c.AccessTokenTTL),
		micros(c.CreatedAt), micros(c.UpdatedAt), c.RequireProtectedSessions, c.CAECapable,
		c.ApplicationType, c.ManagedBy}
}

// CreateClient stores a new client, with ctx's pending events
// (store.WithEvent: client.created).
func (s *Store) CreateClient(ctx context.Context, c *model.Client) error {
	return s.execEvent(ctx, func(q Querier) error {
		_, err := q.Exec(ctx, `INSERT INTO clients (`+clientCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`, clientArgs(c)...)
		return s.createErr("client", err)
	})
}

// GetClient returns a client by id.
func (s *Store) GetClient(ctx context.Context, id string) (*model.Client, error) {
	c, err := scanClient(s.db.Read().QueryRow(ctx, `SELECT `+clientCols+` FROM clients WHERE id = $1`, id))
	return c, s.getErr("client", err)
}

// ListClients returns all clients ordered by id.
func (s *Store) ListClients(ctx context.Context) ([]*model.Client, error) {
	rs, err := s.db.Read().Query(ctx, `SELECT `+clientCols+` FROM clients ORDER BY id`)
	return collect(rs, err, "list clients", scanClient)
}

// UpdateClient applies fn to the stored client and saves it atomically,
// with ctx's pending events (store.WithEvents: built after fn, so they
// may name what it changed).
func (s *Store) UpdateClient(ctx context.Context, id string, fn func(*model.Client) error) (*model.Client, error) {
	var out *model.Client
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		out = nil
		c, err := scanClient(q.QueryRow(ctx, `SELECT `+clientCols+` FROM clients WHERE id = $1`+s.d.ForUpdate, id))
		if err != nil {
			return nil, s.getErr("client", err)
		}
		if err := fn(c); err != nil {
			return nil, err
		}
		c.ID = id
		if _, err := q.Exec(ctx, `UPDATE clients SET name = $2, secret_hash = $3,
			token_endpoint_auth_method = $4, redirect_uris = $5, post_logout_redirect_uris = $6,
			grant_types = $7, scopes = $8, audience = $9, jwks = $10, dpop_bound_access_tokens = $11,
			access_token_ttl = $12, created_at = $13, updated_at = $14, require_protected_sessions = $15,
			cae_capable = $16, application_type = $17, managed_by = $18 WHERE id = $1`, clientArgs(c)...); err != nil {
			return nil, wrap("update client", err)
		}
		out = c
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteClient deletes a client, with ctx's pending events
// (store.WithEvent: client.deleted).
func (s *Store) DeleteClient(ctx context.Context, id string) error {
	return s.execEvent(ctx, func(q Querier) error {
		n, err := q.Exec(ctx, `DELETE FROM clients WHERE id = $1`, id)
		return deleted("client", n, err)
	})
}

// ---- signing keys ----

const keyCols = `kid, alg, private_enc, public_jwk, created_at, active_at, retire_at`

func scanKey(r Row) (*model.SigningKey, error) {
	var (
		k                       model.SigningKey
		jwk                     string
		created, active, retire int64
	)
	if err := r.Scan(&k.KID, &k.Alg, &k.PrivateEnc, &jwk, &created, &active, &retire); err != nil {
		return nil, err
	}
	k.PrivateEnc = unblob(k.PrivateEnc)
	k.PublicJWK = unrawJSON(jwk)
	k.CreatedAt = fromMicros(created)
	k.ActiveAt = fromMicros(active)
	k.RetireAt = fromMicros(retire)
	return &k, nil
}

func keyArgs(k *model.SigningKey) []any {
	return []any{k.KID, k.Alg, blob(k.PrivateEnc), rawJSON(k.PublicJWK), micros(k.CreatedAt),
		micros(k.ActiveAt), micros(k.RetireAt)}
}

// CreateSigningKey stores a new signing key, with ctx's pending events
// (store.WithEvent: key.created).
func (s *Store) CreateSigningKey(ctx context.Context, k *model.SigningKey) error {
	return s.execEvent(ctx, func(q Querier) error {
		_, err := q.Exec(ctx, `INSERT INTO signing_keys (`+keyCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, keyArgs(k)...)
		return s.createErr("signing key", err)
	})
}

// errKeyExists: CreateFirstSigningKey found a key that may sign; nothing
// is written.
var errKeyExists = errors.New("store: a signing key exists")

// CreateFirstSigningKey stores k, with ctx's pending events, only when no
// key of k's algorithm with a private key is left unscheduled for
// retirement (see store.Store): the look and the insert are one
// transaction. On PostgreSQL it first locks the table against other
// writers (reads go on): otherwise two instances starting on an empty
// database would both find no key in READ COMMITTED and both insert.
// SQLite serialises writers already.
func (s *Store) CreateFirstSigningKey(ctx context.Context, k *model.SigningKey) (bool, error) {
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		if s.d.LockSigningKeys != "" {
			if _, err := q.Exec(ctx, s.d.LockSigningKeys); err != nil {
				return nil, wrap("lock signing keys", err)
			}
		}
		var n int64
		if err := q.QueryRow(ctx, `SELECT COUNT(*) FROM signing_keys
			WHERE retire_at = 0 AND alg = $1 AND private_enc IS NOT NULL AND length(private_enc) > 0`, k.Alg).Scan(&n); err != nil {
			return nil, wrap("find signing keys", err)
		}
		if n > 0 {
			return nil, errKeyExists
		}
		_, err := q.Exec(ctx, `INSERT INTO signing_keys (`+keyCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, keyArgs(k)...)
		return nil, s.createErr("signing key", err)
	})
	if errors.Is(err, errKeyExists) {
		return false, nil
	}
	return err == nil, err
}

// RetireSigningKey deletes kid, with ctx's pending events, in one
// conditional statement that also checks that signer, the key the
// caller saw signing, is still not scheduled for retirement and that kid
// does not come after it (see store.Store). A rotation replaces the
// signer by retiring it and inserting a newer key in one transaction, so
// whatever the statement sees of a concurrent rotation (nothing, or
// both), it never deletes the key that signs once both have committed.
func (s *Store) RetireSigningKey(ctx context.Context, kid, signer string) error {
	if kid == signer {
		return store.ErrAlreadyUsed
	}
	err := s.execEvent(ctx, func(q Querier) error {
		n, err := q.Exec(ctx, `DELETE FROM signing_keys WHERE kid = $1 AND EXISTS (
			SELECT 1 FROM signing_keys sk WHERE sk.kid = $2 AND sk.retire_at = 0 AND (
				signing_keys.retire_at <> 0 OR signing_keys.active_at < sk.active_at OR
				(signing_keys.active_at = sk.active_at AND signing_keys.created_at < sk.created_at)))`, kid, signer)
		if err != nil {
			return wrap("retire signing key", err)
		}
		if n == 0 {
			return errKeyExists
		}
		return nil
	})
	if !errors.Is(err, errKeyExists) {
		return err
	}
	var one int
	if err := s.db.Read().QueryRow(ctx, `SELECT 1 FROM signing_keys WHERE kid = $1`, kid).Scan(&one); err != nil {
		return s.getErr("signing key", err)
	}
	return store.ErrAlreadyUsed
}

// RotateSigningKey schedules the retirement of every key that signs at
// k.ActiveAt and stores k, with ctx's pending events, in one transaction
// (see store.Store). The UPDATE takes the rows it retires: of two
// concurrent rotations the second waits for the first and then finds
// previous retired, so it writes nothing.
func (s *Store) RotateSigningKey(ctx context.Context, k *model.SigningKey, previous string, retireAt time.Time) ([]string, error) {
	if retireAt.IsZero() || k.ActiveAt.IsZero() {
		return nil, errors.New("store: rotate signing key: activation and retirement times are required")
	}
	var retired []string
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		rs, err := q.Query(ctx, `UPDATE signing_keys SET retire_at = $1
			WHERE retire_at = 0 AND active_at <= $2 AND kid <> $3 RETURNING kid`, micros(retireAt), micros(k.ActiveAt), k.KID)
		retired, err = collect(rs, err, "retire signing keys", func(r Row) (string, error) {
			var kid string
			return kid, r.Scan(&kid)
		})
		if err != nil {
			return nil, err
		}
		if !slices.Contains(retired, previous) {
			return nil, store.ErrAlreadyUsed // rotated (or gone) meanwhile
		}
		if _, err := q.Exec(ctx, `INSERT INTO signing_keys (`+keyCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, keyArgs(k)...); err != nil {
			return nil, s.createErr("signing key", err)
		}
		slices.Sort(retired)
		return retired, nil
	})
	if err != nil {
		return nil, err
	}
	return retired, nil
}

// ListSigningKeys returns all keys, oldest first.
func (s *Store) ListSigningKeys(ctx context.Context) ([]*model.SigningKey, error) {
	rs, err := s.db.Read().Query(ctx, `SELECT `+keyCols+` FROM signing_keys ORDER BY created_at, kid`)
	return collect(rs, err, "list signing keys", scanKey)
}

// UpdateSigningKey applies fn to the stored key and saves it atomically.
func (s *Store) UpdateSigningKey(ctx context.Context, kid string, fn func(*model.SigningKey) error) (*model.SigningKey, error) {
	var out *model.SigningKey
	err := s.db.InTx(ctx, func(q Querier) error {
		k, err := scanKey(q.QueryRow(ctx, `SELECT `+keyCols+` FROM signing_keys WHERE kid = $1`+s.d.ForUpdate, kid))
		if err != nil {
			return s.getErr("signing key", err)
		}
		if err := fn(k); err != nil {
			return err
		}
		k.KID = kid
		if _, err := q.Exec(ctx, `UPDATE signing_keys SET alg = $2, private_enc = $3, public_jwk = $4,
			created_at = $5, active_at = $6, retire_at = $7 WHERE kid = $1`, keyArgs(k)...); err != nil {
			return wrap("update signing key", err)
		}
		out = k
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteSigningKey deletes a key, with ctx's pending events
// (store.WithEvent: key.retired).
func (s *Store) DeleteSigningKey(ctx context.Context, kid string) error {
	return s.execEvent(ctx, func(q Querier) error {
		n, err := q.Exec(ctx, `DELETE FROM signing_keys WHERE kid = $1`, kid)
		return deleted("signing key", n, err)
	})
}
