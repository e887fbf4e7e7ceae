package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// BackupInfo describes a database file written by Backup or put in place
// by Restore.
type BackupInfo struct {
	// Bytes is the size of the file.
	Bytes int64
	// SchemaVersion is the newest migration applied to it.
	SchemaVersion int64
}

// Backup writes a consistent copy of the database at src to the new file
// dst with VACUUM INTO: one read transaction, so the copy is the database
// as of one instant while a running server keeps writing (WAL readers do
// not block writers). dst must not exist; it is created 0600 and checked
// with PRAGMA integrity_check before Backup returns. The copy holds what
// the database holds: signing keys and secrets only encrypted under the
// key-encryption key, which is never in it.
func Backup(ctx context.Context, src, dst string) (BackupInfo, error) {
	if st, err := os.Stat(src); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: backup: %w", err)
	} else if st.IsDir() {
		return BackupInfo{}, fmt.Errorf("sqlite: backup: %s is a directory", src)
	}
	if _, err := os.Lstat(dst); err == nil {
		return BackupInfo{}, fmt.Errorf("sqlite: backup: %s exists", dst)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return BackupInfo{}, fmt.Errorf("sqlite: backup: %w", err)
	}
	// Create the file first so that it is private from the start; VACUUM
	// INTO writes into an existing empty file.
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: backup: %w", err)
	}
	f.Close()
	ok := false
	defer func() {
		if !ok {
			os.Remove(dst)
		}
	}()
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	db, err := sql.Open("sqlite", dsn(src, q))
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: backup: %w", err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, dst); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: backup: vacuum into: %w", err)
	}
	if err := syncFile(dst); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: backup: %w", err)
	}
	info, err := Check(ctx, dst)
	if err != nil {
		return BackupInfo{}, err
	}
	ok = true
	return info, nil
}

// Check opens the database file at path read-only and runs PRAGMA
// integrity_check; it reports the file's size and schema version.
func Check(ctx context.Context, path string) (BackupInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: check: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: check: %w", err)
	}
	q := url.Values{}
	q.Add("mode", "ro")
	q.Add("_pragma", "busy_timeout(10000)")
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: abs}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: check: %w", err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `PRAGMA integrity_check`)
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: check %s: %w", path, err)
	}
	var problems []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return BackupInfo{}, fmt.Errorf("sqlite: check %s: %w", path, err)
		}
		if s != "ok" {
			problems = append(problems, s)
		}
	}
	if err := rows.Close(); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: check %s: %w", path, err)
	}
	if err := rows.Err(); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: check %s: %w", path, err)
	}
	if len(problems) > 0 {
		return BackupInfo{}, fmt.Errorf("sqlite: check %s: integrity check failed: %s", path, strings.Join(problems, "; "))
	}
	var version int64
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version_id), 0) FROM goose_db_version WHERE is_applied`).Scan(&version); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: check %s: not a Ward database: %w", path, err)
	}
	return BackupInfo{Bytes: st.Size(), SchemaVersion: version}, nil
}

// Restore puts a copy of the backup file src in place as the database at
// dst after checking it. An existing database at dst is replaced only
// with force, and its -wal and -shm files are removed (they belong to the
// database being replaced and would corrupt the restored one); the
// caller makes sure that no process has dst open. The restored file is
// 0600. The next Open migrates it forward if it is older than the code.
func Restore(ctx context.Context, src, dst string, force bool) (BackupInfo, error) {
	info, err := Check(ctx, src)
	if err != nil {
		return BackupInfo{}, err
	}
	if _, err := os.Lstat(dst); err == nil && !force {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %s exists (replace it with force)", dst)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), filepath.Base(dst)+".restore-*")
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w", err)
	}
	defer os.Remove(tmp.Name())
	in, err := os.Open(src)
	if err != nil {
		tmp.Close()
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w", err)
	}
	_, err = io.Copy(tmp, in)
	in.Close()
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w", err)
	}
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		if err := os.Remove(dst + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return BackupInfo{}, fmt.Errorf("sqlite: restore: %w", err)
		}
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w", err)
	}
	if err := syncFile(filepath.Dir(dst)); err != nil {
		return BackupInfo{}, fmt.Errorf("sqlite: restore: %w", err)
	}
	return info, nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
