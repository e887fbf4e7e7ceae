package sqlstore

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// ---- devices ----

const deviceCols = `id, user_id, jkt, public_jwk, key_storage, platform, os_name, os_version,
	hostname, agent_version, trust_type, status, compliance, compliance_failures, compliance_at,
	posture, posture_at, created_at, last_seen, updated_at, key_attested, key_attestation`

// deviceRow receives a devices row (deviceCols).
type deviceRow struct {
	d                                           model.Device
	jwk, failures, posture, attestation         string
	complianceAt, postureAt, created, seen, upd int64
}

func (x *deviceRow) dest() []any {
	d := &x.d
	return []any{&d.ID, &d.UserID, &d.JKT, &x.jwk, &d.KeyStorage, &d.Platform, &d.OSName, &d.OSVersion,
		&d.Hostname, &d.AgentVersion, &d.TrustType, &d.Status, &d.Compliance, &x.failures, &x.complianceAt,
		&x.posture, &x.postureAt, &x.created, &x.seen, &x.upd, &d.KeyAttested, &x.attestation}
}

func scanDevice(r Row) (*model.Device, error) {
	var x deviceRow
	if err := r.Scan(x.dest()...); err != nil {
		return nil, err
	}
	return x.device(), nil
}

func (x *deviceRow) device() *model.Device {
	d, jwk, attestation, failures, posture := x.d, x.jwk, x.attestation, x.failures, x.posture
	complianceAt, postureAt, created, seen, upd := x.complianceAt, x.postureAt, x.created, x.seen, x.upd
	d.PublicJWK = unrawJSON(jwk)
	d.KeyAttestation = unrawJSON(attestation)
	d.ComplianceFailures = unrawJSON(failures)
	d.Posture = unrawJSON(posture)
	d.ComplianceAt = fromMicros(complianceAt)
	d.PostureAt = fromMicros(postureAt)
	d.CreatedAt = fromMicros(created)
	d.LastSeen = fromMicros(seen)
	d.UpdatedAt = fromMicros(upd)
	return &d
}

func deviceArgs(d *model.Device) []any {
	return []any{d.ID, d.UserID, d.JKT, rawJSON(d.PublicJWK), d.KeyStorage, d.Platform, d.OSName,
		d.OSVersion, d.Hostname, d.AgentVersion, d.TrustType, d.Status, d.Compliance,
		rawJSON(d.ComplianceFailures), micros(d.ComplianceAt), rawJSON(d.Posture), micros(d.PostureAt),
		micros(d.CreatedAt), micros(d.LastSeen), micros(d.UpdatedAt), d.KeyAttested, rawJSON(d.KeyAttestation)}
}

// CreateDevice stores a new device. A taken id or key thumbprint (JKT)
// is ErrAlreadyExists; the JKT is required. ctx's pending events
// (store.WithEvent: device.registered) commit with it.
func (s *Store) CreateDevice(ctx context.Context, d *model.Device) error {
	if d.JKT == "" {
		return errors.New("store: create device: JKT is required")
	}
	return s.execEvent(ctx, func(q Querier) error {
		_, err := q.Exec(ctx, `INSERT INTO devices (`+deviceCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)`,
			deviceArgs(d)...)
		return s.createErr("device", err)
	})
}

// GetDevice returns a device by id.
func (s *Store) GetDevice(ctx context.Context, id string) (*model.Device, error) {
	d, err := scanDevice(s.db.Read().QueryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = $1`, id))
	return d, s.getErr("device", err)
}

// GetDeviceByJKT returns the device whose key has the thumbprint jkt
// (one lookup in the unique index devices_jkt).
func (s *Store) GetDeviceByJKT(ctx context.Context, jkt string) (*model.Device, error) {
	d, err := scanDevice(s.db.Lookup().QueryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE jkt = $1`, jkt))
	return d, s.getErr("device", err)
}

// ListDevices returns devices matching f, newest (CreatedAt) first, at
// most f.Limit (default 100, max 1000).
func (s *Store) ListDevices(ctx context.Context, f store.DeviceFilter) ([]*model.Device, error) {
	var (
		where []string
		args  []any
	)
	if f.UserID != "" {
		args = append(args, f.UserID)
		where = append(where, "user_id = $"+strconv.Itoa(len(args)))
	}
	if f.Status != "" {
		args = append(args, f.Status)
		where = append(where, "status = $"+strconv.Itoa(len(args)))
	}
	if f.Compliance != "" {
		args = append(args, f.Compliance)
		where = append(where, "compliance = $"+strconv.Itoa(len(args)))
	}
	q := `SELECT ` + deviceCols + ` FROM devices`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	args = append(args, int64(limit(f.Limit)))
	q += ` ORDER BY created_at DESC, id LIMIT $` + strconv.Itoa(len(args))
	rs, err := s.db.Read().Query(ctx, q, args...)
	return collect(rs, err, "list devices", scanDevice)
}

// UpdateDevice applies fn to the stored device and saves it atomically,
// together with ctx's pending event (store.WithEvent). The id cannot
// change; a JKT taken by another device is ErrAlreadyExists.
func (s *Store) UpdateDevice(ctx context.Context, id string, fn func(*model.Device) error) (*model.Device, error) {
	var out *model.Device
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		d, err := scanDevice(q.QueryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = $1`+s.d.ForUpdate, id))
		if err != nil {
			return nil, s.getErr("device", err)
		}
		if err := fn(d); err != nil {
			return nil, err
		}
		d.ID = id
		if d.JKT == "" {
			return nil, errors.New("store: update device: JKT is required")
		}
		if _, err := q.Exec(ctx, `UPDATE devices SET user_id = $2, jkt = $3, public_jwk = $4,
			key_storage = $5, platform = $6, os_name = $7, os_version = $8, hostname = $9,
			agent_version = $10, trust_type = $11, status = $12, compliance = $13,
			compliance_failures = $14, compliance_at = $15, posture = $16, posture_at = $17,
			created_at = $18, last_seen = $19, updated_at = $20, key_attested = $21, key_attestation = $22
			WHERE id = $1`, deviceArgs(d)...); err != nil {
			if s.d.IsUniqueViolation(err) {
				return nil, alreadyExists("device jkt")
			}
			return nil, wrap("update device", err)
		}
		out = d
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteDevice deletes a device. Refresh tokens bound to it are left to
// the caller (RevokeDeviceSessions first). ctx's pending events
// (store.WithEvent: device.deleted) commit with the deletion.
func (s *Store) DeleteDevice(ctx context.Context, id string) error {
	return s.execEvent(ctx, func(q Querier) error {
		n, err := q.Exec(ctx, `DELETE FROM devices WHERE id = $1`, id)
		return deleted("device", n, err)
	})
}

// RevokeDeviceSessions revokes, in one transaction, every unrevoked
// session holding at least one refresh token bound to the device (as
// RevokeSession does: revocation time and cause recorded, all refresh
// tokens of the session deleted) and returns their ids in ascending
// order. Sessions already revoked keep their first revocation. ctx's
// pending event (store.WithEvent) commits with them and its completion
// function gets the ids.
func (s *Store) RevokeDeviceSessions(ctx context.Context, deviceID string, at time.Time, cause string) ([]string, error) {
	if at.IsZero() {
		return nil, errors.New("store: revoke device sessions: revocation time is required")
	}
	if deviceID == "" {
		return nil, errors.New("store: revoke device sessions: device id is required")
	}
	var ids []string
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		rs, err := q.Query(ctx, `UPDATE sessions SET revoked_at = $2, revoke_cause = $3
			WHERE revoked_at = 0 AND id IN (SELECT session_id FROM refresh_tokens WHERE device_id = $1)
			RETURNING id`, deviceID, micros(at), cause)
		ids, err = collect(rs, err, "revoke device sessions", func(r Row) (string, error) {
			var id string
			return id, r.Scan(&id)
		})
		if err != nil {
			return nil, err
		}
		ids, err = deleteSessionTokens(ctx, q, ids, "revoke device session tokens")
		return ids, err
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// ---- device authorization requests (RFC 8628) ----

const deviceCodeCols = `hash, user_code, client_id, scope, dpop_jkt, status, user_id, session_id,
	auth_time, amr, acr, created_at, expires_at, poll_interval, last_poll, used_at, claims, deny_reason, deny_description`

func scanDeviceCode(r Row) (*model.DeviceCode, error) {
	var (
		c                                                    model.DeviceCode
		amr                                                  string
		authTime, created, expires, interval, lastPoll, used int64
	)
	if err := r.Scan(&c.Hash, &c.UserCode, &c.ClientID, &c.Scope, &c.DPoPJKT, &c.Status, &c.UserID,
		&c.SessionID, &authTime, &amr, &c.ACR, &created, &expires, &interval, &lastPoll, &used, &c.Claims,
		&c.DenyReason, &c.DenyDescription); err != nil {
		return nil, err
	}
	var err error
	if c.AMR, err = unjsonList(amr, "device code amr"); err != nil {
		return nil, err
	}
	c.AuthTime = fromMicros(authTime)
	c.CreatedAt = fromMicros(created)
	c.ExpiresAt = fromMicros(expires)
	c.Interval = time.Duration(interval)
	c.LastPoll = fromMicros(lastPoll)
	c.UsedAt = fromMicros(used)
	return &c, nil
}

func deviceCodeArgs(c *model.DeviceCode) []any {
	return []any{c.Hash, c.UserCode, c.ClientID, c.Scope, c.DPoPJKT, c.Status, c.UserID, c.SessionID,
		micros(c.AuthTime), jsonList(c.AMR), c.ACR, micros(c.CreatedAt), micros(c.ExpiresAt),
		int64(c.Interval), micros(c.LastPoll), micros(c.UsedAt), c.Claims, c.DenyReason, c.DenyDescription}
}

// CreateDeviceCode stores a new device authorization request in one
// statement. The unique index on user_code covers every row; a row with
// the same user code that has expired by the store clock's now is taken
// over (overwritten) by the new request, an unexpired one makes the
// statement change nothing and the call return ErrAlreadyExists. A taken
// device-code hash is ErrAlreadyExists too.
func (s *Store) CreateDeviceCode(ctx context.Context, c *model.DeviceCode) error {
	if len(c.Hash) == 0 {
		return errors.New("store: create device code: hash is required")
	}
	if c.UserCode == "" {
		return errors.New("store: create device code: user code is required")
	}
	args := append(deviceCodeArgs(c), micros(s.now()))
	n, err := s.db.Write().Exec(ctx, `INSERT INTO device_codes (`+deviceCodeCols+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
		ON CONFLICT (user_code) DO UPDATE SET hash = excluded.hash, client_id = excluded.client_id,
			scope = excluded.scope, dpop_jkt = excluded.dpop_jkt, status = excluded.status,
			user_id = excluded.user_id, session_id = excluded.session_id, auth_time = excluded.auth_time,
			amr = excluded.amr, acr = excluded.acr, created_at = excluded.created_at,
			expires_at = excluded.expires_at, poll_interval = excluded.poll_interval,
			last_poll = excluded.last_poll, used_at = excluded.used_at, claims = excluded.claims,
			deny_reason = excluded.deny_reason, deny_description = excluded.deny_description
		WHERE device_codes.expires_at <= $20`, args...)
	if err != nil {
		return s.createErr("device code", err)
	}
	if n == 0 {
		return alreadyExists("device user code")
	}
	return nil
}

// GetDeviceCode returns a request by device-code hash, expired or not
// (the caller answers expired_token).
func (s *Store) GetDeviceCode(ctx context.Context, hash []byte) (*model.DeviceCode, error) {
	c, err := scanDeviceCode(s.db.Read().QueryRow(ctx,
		`SELECT `+deviceCodeCols+` FROM device_codes WHERE hash = $1`, hash))
	return c, s.getErr("device code", err)
}

// GetDeviceCodeByUserCode returns the unexpired request (by the store
// clock) with this user code; an expired one is ErrNotFound.
func (s *Store) GetDeviceCodeByUserCode(ctx context.Context, userCode string) (*model.DeviceCode, error) {
	c, err := scanDeviceCode(s.db.Read().QueryRow(ctx,
		`SELECT `+deviceCodeCols+` FROM device_codes WHERE user_code = $1 AND expires_at > $2`,
		userCode, micros(s.now())))
	return c, s.getErr("device code", err)
}

// UpdateDeviceCode applies fn to the stored request and saves it in one
// transaction that locks the row, so concurrent updates (approval racing
// denial, two polls) are serialised. The hash cannot change; a user code
// taken by another request is ErrAlreadyExists.
func (s *Store) UpdateDeviceCode(ctx context.Context, hash []byte, fn func(*model.DeviceCode) error) (*model.DeviceCode, error) {
	var out *model.DeviceCode
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		out = nil
		c, err := scanDeviceCode(q.QueryRow(ctx,
			`SELECT `+deviceCodeCols+` FROM device_codes WHERE hash = $1`+s.d.ForUpdate, hash))
		if err != nil {
			return nil, s.getErr("device code", err)
		}
		if err := fn(c); err != nil {
			return nil, err
		}
		c.Hash = slices.Clone(hash)
		if c.UserCode == "" {
			return nil, errors.New("store: update device code: user code is required")
		}
		if _, err := q.Exec(ctx, `UPDATE device_codes SET user_code = $2, client_id = $3, scope = $4,
			dpop_jkt = $5, status = $6, user_id = $7, session_id = $8, auth_time = $9, amr = $10,
			acr = $11, created_at = $12, expires_at = $13, poll_interval = $14, last_poll = $15,
			used_at = $16, claims = $17, deny_reason = $18, deny_description = $19 WHERE hash = $1`, deviceCodeArgs(c)...); err != nil {
			if s.d.IsUniqueViolation(err) {
				return nil, alreadyExists("device user code")
			}
			return nil, wrap("update device code", err)
		}
		out = c
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ---- compliance policies ----

const policyCols = `platform, id, name, rules, created_at, updated_at`

func scanPolicy(r Row) (*model.CompliancePolicy, error) {
	var (
		p                model.CompliancePolicy
		rules            string
		created, updated int64
	)
	if err := r.Scan(&p.Platform, &p.ID, &p.Name, &rules, &created, &updated); err != nil {
		return nil, err
	}
	p.Rules = unrawJSON(rules)
	p.CreatedAt = fromMicros(created)
	p.UpdatedAt = fromMicros(updated)
	return &p, nil
}

// PutCompliancePolicy stores the policy of p.Platform, replacing any
// existing one in one statement. A replacement keeps the stored
// CreatedAt and takes everything else (ID, Name, Rules, UpdatedAt) from
// p. A zero UpdatedAt is the store clock's now; a zero CreatedAt of a new
// policy is its UpdatedAt. p is not modified.
func (s *Store) PutCompliancePolicy(ctx context.Context, p *model.CompliancePolicy) error {
	if p.Platform == "" {
		return errors.New("store: put compliance policy: platform is required")
	}
	updated := p.UpdatedAt
	if updated.IsZero() {
		updated = s.now()
	}
	created := p.CreatedAt
	if created.IsZero() {
		created = updated
	}
	return s.execEvent(ctx, func(q Querier) error {
		_, err := q.Exec(ctx, `INSERT INTO compliance_policies (`+policyCols+`)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (platform) DO UPDATE SET id = excluded.id, name = excluded.name,
			rules = excluded.rules, updated_at = excluded.updated_at`,
			p.Platform, p.ID, p.Name, rawJSON(p.Rules), micros(created), micros(updated))
		return wrap("put compliance policy", err)
	})
}

// GetCompliancePolicy returns the policy of a platform ("*" for all).
func (s *Store) GetCompliancePolicy(ctx context.Context, platform string) (*model.CompliancePolicy, error) {
	p, err := scanPolicy(s.db.Read().QueryRow(ctx,
		`SELECT `+policyCols+` FROM compliance_policies WHERE platform = $1`, platform))
	return p, s.getErr("compliance policy", err)
}

// ListCompliancePolicies returns all policies ordered by platform.
func (s *Store) ListCompliancePolicies(ctx context.Context) ([]*model.CompliancePolicy, error) {
	rs, err := s.db.Read().Query(ctx, `SELECT `+policyCols+` FROM compliance_policies ORDER BY platform`)
	return collect(rs, err, "list compliance policies", scanPolicy)
}

// DeleteCompliancePolicy deletes the policy of a platform.
func (s *Store) DeleteCompliancePolicy(ctx context.Context, platform string) error {
	return s.execEvent(ctx, func(q Querier) error {
		n, err := q.Exec(ctx, `DELETE FROM compliance_policies WHERE platform = $1`, platform)
		return deleted("compliance policy", n, err)
	})
}
