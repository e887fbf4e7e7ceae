package sqlstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/ward-idp/ward/internal/model"
)

// ---- Conditional Access policy versions ----

const policyVersionCols = `version, document, digest, created_at, created_by, comment`

func scanPolicyVersion(r Row) (*model.PolicyVersion, error) {
	var (
		v       model.PolicyVersion
		doc     string
		created int64
	)
	if err := r.Scan(&v.Version, &doc, &v.Digest, &created, &v.CreatedBy, &v.Comment); err != nil {
		return nil, err
	}
	v.Document = []byte(doc)
	v.CreatedAt = fromMicros(created)
	return &v, nil
}

// scanPolicyVersionMeta scans a row without the document.
func scanPolicyVersionMeta(r Row) (*model.PolicyVersion, error) {
	var (
		v       model.PolicyVersion
		created int64
	)
	if err := r.Scan(&v.Version, &v.Digest, &created, &v.CreatedBy, &v.Comment); err != nil {
		return nil, err
	}
	v.CreatedAt = fromMicros(created)
	return &v, nil
}

// CreatePolicyVersion stores v.Version, which must follow the latest
// version. The check and the insert run in one transaction, with ctx's
// pending event (store.WithEvent); on PostgreSQL a concurrent writer of
// the same number fails on the primary key, so exactly one of two racing
// writers wins.
func (s *Store) CreatePolicyVersion(ctx context.Context, v *model.PolicyVersion) error {
	if v.Version < 1 || len(v.Document) == 0 || v.Digest == "" {
		return errors.New("store: create policy version: version, document and digest are required")
	}
	created := v.CreatedAt
	if created.IsZero() {
		created = s.now()
	}
	return s.inTxEvent(ctx, func(q Querier) ([]string, error) {
		var latest int64
		if err := q.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM policy_versions`).Scan(&latest); err != nil {
			return nil, wrap("create policy version", err)
		}
		switch {
		case v.Version <= latest:
			return nil, alreadyExists(fmt.Sprintf("policy version %d", v.Version))
		case v.Version != latest+1:
			return nil, fmt.Errorf("store: create policy version: version %d does not follow %d", v.Version, latest)
		}
		_, err := q.Exec(ctx, `INSERT INTO policy_versions (`+policyVersionCols+`) VALUES ($1, $2, $3, $4, $5, $6)`,
			v.Version, string(v.Document), v.Digest, micros(created), v.CreatedBy, v.Comment)
		if err != nil && s.d.IsUniqueViolation(err) {
			return nil, alreadyExists(fmt.Sprintf("policy version %d", v.Version))
		}
		return nil, wrap("create policy version", err)
	})
}

// LatestPolicyVersion returns the version in force.
func (s *Store) LatestPolicyVersion(ctx context.Context) (*model.PolicyVersion, error) {
	v, err := scanPolicyVersion(s.db.Read().QueryRow(ctx,
		`SELECT `+policyVersionCols+` FROM policy_versions ORDER BY version DESC LIMIT 1`))
	return v, s.getErr("policy version", err)
}

// LatestPolicyVersionNumber returns the number of the version in force (0:
// none).
func (s *Store) LatestPolicyVersionNumber(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.Read().QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM policy_versions`).Scan(&n)
	return n, wrap("latest policy version", err)
}

// GetPolicyVersion returns one version with its document.
func (s *Store) GetPolicyVersion(ctx context.Context, version int64) (*model.PolicyVersion, error) {
	v, err := scanPolicyVersion(s.db.Read().QueryRow(ctx,
		`SELECT `+policyVersionCols+` FROM policy_versions WHERE version = $1`, version))
	return v, s.getErr("policy version", err)
}

// ListPolicyVersions returns versions newest first, without documents.
func (s *Store) ListPolicyVersions(ctx context.Context, n int) ([]*model.PolicyVersion, error) {
	rs, err := s.db.Read().Query(ctx, `SELECT version, digest, created_at, created_by, comment
		FROM policy_versions ORDER BY version DESC LIMIT $1`, int64(limit(n)))
	return collect(rs, err, "list policy versions", scanPolicyVersionMeta)
}
