package keystore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// maxKeyFile bounds what is read from a key file.
const maxKeyFile = 64 << 10

// ensureDir creates dir (and its parents) and makes dir itself 0700.
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("keystore: create directory: %w", err)
	}
	if runtime.GOOS != "windows" {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("keystore: restrict directory: %w", err)
		}
	}
	return nil
}

// writeNew atomically creates path with data and mode 0600 inside a 0700
// directory: the data goes to a temporary file in the same directory,
// is synced, and is then linked to path, which fails if path exists (so
// two concurrent creators cannot overwrite each other's key). Readers
// never see a partial file.
func writeNew(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := ensureDir(dir); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("keystore: temporary file: %w", err)
	}
	tmpName := tmp.Name()
	defer func() {
		if tmp != nil {
			tmp.Close()
		}
		os.Remove(tmpName) // after a successful link this drops the extra name only
	}()
	if runtime.GOOS != "windows" {
		if err := tmp.Chmod(0o600); err != nil {
			return fmt.Errorf("keystore: restrict temporary file: %w", err)
		}
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("keystore: write key file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("keystore: sync key file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("keystore: close key file: %w", err)
	}
	tmp = nil
	if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s", ErrExists, path)
		}
		// Filesystems without hard links: check, then rename (a small
		// window in which a concurrent creator could be overwritten).
		if _, serr := os.Lstat(path); serr == nil {
			return fmt.Errorf("%w: %s", ErrExists, path)
		}
		if err := os.Rename(tmpName, path); err != nil {
			return fmt.Errorf("keystore: install key file: %w", err)
		}
	}
	syncDir(dir)
	return nil
}

// syncDir makes a new directory entry durable (best effort; not possible
// on Windows).
func syncDir(dir string) {
	if runtime.GOOS == "windows" {
		return
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// readPrivate reads a key file after checking that it is a regular file
// (not a symlink) that neither group nor others can access. Permission
// bits are not checked on Windows, where they do not describe access.
func readPrivate(path string) ([]byte, error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, path)
	}
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("keystore: %s is not a regular file (symlinks are refused)", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	defer f.Close()
	// Check the opened file, not the name, so a swap after Lstat is caught.
	fi, err = f.Stat()
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("keystore: %s is not a regular file", path)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, &PermissionError{Path: path, Mode: fi.Mode().Perm()}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("keystore: read %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("keystore: %s is larger than %d bytes", path, maxKeyFile)
	}
	return data, nil
}

// remove deletes path, mapping absence to ErrNotFound.
func remove(path string) error {
	err := os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s", ErrNotFound, path)
	}
	if err != nil {
		return fmt.Errorf("keystore: %w", err)
	}
	syncDir(filepath.Dir(path))
	return nil
}
