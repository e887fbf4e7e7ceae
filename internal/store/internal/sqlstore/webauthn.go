package sqlstore

import (
	"context"
	"errors"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// ---- WebAuthn credentials and ceremonies ----

const webauthnCols = `id, user_id, credential_id, name, public_key, aaguid, sign_count, transports, attachment,
	attestation_format, attestation_type, discoverable, backup_eligible, backup_state, created_at, last_used_at`

func scanWebAuthn(r Row) (*model.WebAuthnCredential, error) {
	var (
		c                 model.WebAuthnCredential
		aaguid            []byte
		count             int64
		transports        string
		created, lastUsed int64
	)
	if err := r.Scan(&c.ID, &c.UserID, &c.CredentialID, &c.Name, &c.PublicKey, &aaguid, &count, &transports, &c.Attachment,
		&c.AttestationFormat, &c.AttestationType, &c.Discoverable, &c.BackupEligible, &c.BackupState, &created, &lastUsed); err != nil {
		return nil, err
	}
	var err error
	if c.Transports, err = unjsonList(transports, "webauthn transports"); err != nil {
		return nil, err
	}
	c.AAGUID = unblob(aaguid)
	c.SignCount = uint32(count)
	c.CreatedAt, c.LastUsedAt = fromMicros(created), fromMicros(lastUsed)
	return &c, nil
}

// CreateWebAuthnCredential stores a new credential with ctx's pending
// events.
func (s *Store) CreateWebAuthnCredential(ctx context.Context, c *model.WebAuthnCredential) error {
	if c.ID == "" || c.UserID == "" || len(c.CredentialID) == 0 || len(c.PublicKey) == 0 {
		return errors.New("store: create webauthn credential: id, user, credential id and public key are required")
	}
	return s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		// The user's row first, as every write about a user's factors.
		if _, err := s.lockUser(ctx, q, c.UserID); err != nil {
			return nil, err
		}
		_, err := q.Exec(ctx, `INSERT INTO webauthn_credentials (`+webauthnCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
			c.ID, c.UserID, c.CredentialID, c.Name, c.PublicKey, blob(c.AAGUID), int64(c.SignCount), jsonList(c.Transports),
			c.Attachment, c.AttestationFormat, c.AttestationType, c.Discoverable, c.BackupEligible, c.BackupState,
			micros(c.CreatedAt), micros(c.LastUsedAt))
		return nil, s.createErr("webauthn credential", err)
	})
}

// GetWebAuthnCredential finds a credential by its credential id.
func (s *Store) GetWebAuthnCredential(ctx context.Context, credentialID []byte) (*model.WebAuthnCredential, error) {
	c, err := scanWebAuthn(s.db.Read().QueryRow(ctx, `SELECT `+webauthnCols+` FROM webauthn_credentials WHERE credential_id = $1`, credentialID))
	return c, s.getErr("webauthn credential", err)
}

// ListWebAuthnCredentials returns a user's credentials, oldest first.
func (s *Store) ListWebAuthnCredentials(ctx context.Context, userID string) ([]*model.WebAuthnCredential, error) {
	rs, err := s.db.Read().Query(ctx, `SELECT `+webauthnCols+` FROM webauthn_credentials WHERE user_id = $1 ORDER BY created_at, id`, userID)
	return collect(rs, err, "list webauthn credentials", scanWebAuthn)
}

// UseWebAuthnCredential applies fn to a credential under its row's lock.
func (s *Store) UseWebAuthnCredential(ctx context.Context, credentialID []byte, fn func(*model.WebAuthnCredential) error) (*model.WebAuthnCredential, error) {
	var out *model.WebAuthnCredential
	err := s.db.InTx(ctx, func(q Querier) error {
		out = nil
		c, err := scanWebAuthn(q.QueryRow(ctx, `SELECT `+webauthnCols+` FROM webauthn_credentials WHERE credential_id = $1`+s.d.ForUpdate, credentialID))
		if err != nil {
			return s.getErr("webauthn credential", err)
		}
		if err := fn(c); err != nil {
			return err
		}
		if _, err := q.Exec(ctx, `UPDATE webauthn_credentials SET sign_count = $2, backup_state = $3, last_used_at = $4, name = $5 WHERE id = $1`,
			c.ID, int64(c.SignCount), c.BackupState, micros(c.LastUsedAt), c.Name); err != nil {
			return wrap("update webauthn credential", err)
		}
		out = c
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// RenameWebAuthnCredential names a user's credential, with ctx's pending
// events.
func (s *Store) RenameWebAuthnCredential(ctx context.Context, userID, id, name string) error {
	return s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		n, err := q.Exec(ctx, `UPDATE webauthn_credentials SET name = $3 WHERE user_id = $1 AND id = $2`, userID, id, name)
		if err != nil {
			return nil, wrap("rename webauthn credential", err)
		}
		if n == 0 {
			return nil, notFound("webauthn credential")
		}
		return nil, nil
	})
}

// DeleteWebAuthnCredential deletes one of a user's credentials with ctx's
// pending events.
func (s *Store) DeleteWebAuthnCredential(ctx context.Context, userID, id string) (*model.WebAuthnCredential, error) {
	var out *model.WebAuthnCredential
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		out = nil
		if _, err := s.lockUser(ctx, q, userID); err != nil {
			return nil, err
		}
		c, err := scanWebAuthn(q.QueryRow(ctx, `SELECT `+webauthnCols+` FROM webauthn_credentials WHERE user_id = $1 AND id = $2`, userID, id))
		if err != nil {
			return nil, s.getErr("webauthn credential", err)
		}
		n, err := q.Exec(ctx, `DELETE FROM webauthn_credentials WHERE id = $1`, id)
		if err := deleted("webauthn credential", n, err); err != nil {
			return nil, err
		}
		out = c
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// DeleteWebAuthnCredentials deletes all of a user's credentials with ctx's
// pending events.
func (s *Store) DeleteWebAuthnCredentials(ctx context.Context, userID string) (int, error) {
	var n int64
	err := s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		if _, err := s.lockUser(ctx, q, userID); err != nil {
			return nil, err
		}
		rs, err := q.Query(ctx, `DELETE FROM webauthn_credentials WHERE user_id = $1 RETURNING id`, userID)
		ids, err := collect(rs, err, "delete webauthn credentials", func(r Row) (string, error) {
			var id string
			return id, r.Scan(&id)
		})
		n = int64(len(ids))
		// The deleted ids go to the pending events' builder.
		return ids, err
	})
	if err != nil {
		return 0, err
	}
	return int(n), nil
}

// WebAuthnCredentialCounts counts the credentials of every user that has
// some.
func (s *Store) WebAuthnCredentialCounts(ctx context.Context) (map[string]int, error) {
	type kv struct {
		id string
		n  int64
	}
	rs, err := s.db.Read().Query(ctx, `SELECT user_id, COUNT(*) FROM webauthn_credentials GROUP BY user_id`)
	rows, err := collect(rs, err, "count webauthn credentials", func(r Row) (kv, error) {
		var x kv
		return x, r.Scan(&x.id, &x.n)
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(rows))
	for _, x := range rows {
		out[x.id] = int(x.n)
	}
	return out, nil
}

const challengeCols = `id, purpose, user_id, session, created_at, expires_at`

// PutWebAuthnChallenge stores a ceremony.
func (s *Store) PutWebAuthnChallenge(ctx context.Context, c *model.WebAuthnChallenge) error {
	if c.ID == "" || len(c.Session) == 0 || c.ExpiresAt.IsZero() {
		return errors.New("store: put webauthn challenge: id, session and expiry are required")
	}
	_, err := s.db.Write().Exec(ctx, `INSERT INTO webauthn_challenges (`+challengeCols+`) VALUES ($1, $2, $3, $4, $5, $6)`,
		c.ID, c.Purpose, c.UserID, c.Session, micros(c.CreatedAt), micros(c.ExpiresAt))
	return s.createErr("webauthn challenge", err)
}

// TakeWebAuthnChallenge deletes a ceremony and returns it unless expired.
// The DELETE ... RETURNING is one statement: only the caller whose
// statement deleted the row gets it.
func (s *Store) TakeWebAuthnChallenge(ctx context.Context, id string, now time.Time) (*model.WebAuthnChallenge, error) {
	rs, err := s.db.Write().Query(ctx, `DELETE FROM webauthn_challenges WHERE id = $1 RETURNING `+challengeCols, id)
	got, err := collect(rs, err, "take webauthn challenge", func(r Row) (*model.WebAuthnChallenge, error) {
		var (
			c             model.WebAuthnChallenge
			created, expi int64
		)
		if err := r.Scan(&c.ID, &c.Purpose, &c.UserID, &c.Session, &created, &expi); err != nil {
			return nil, err
		}
		c.CreatedAt, c.ExpiresAt = fromMicros(created), fromMicros(expi)
		return &c, nil
	})
	if err != nil {
		return nil, err
	}
	if len(got) == 0 || !now.Before(got[0].ExpiresAt) {
		return nil, notFound("webauthn challenge")
	}
	return got[0], nil
}

var _ store.WebAuthnStore = (*Store)(nil)
