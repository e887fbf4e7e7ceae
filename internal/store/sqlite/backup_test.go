package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

// TestBackupWhileWriting backs up a database that a writer keeps
// changing, restores it elsewhere and checks that the copy is a
// consistent prefix of the writes: every user up to some n, none after.
func TestBackupWhileWriting(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "ward.db")
	s, err := sqlite.Open(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	written := 0
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				written = i
				return
			default:
			}
			if err := s.CreateUser(ctx, &model.User{ID: fmt.Sprintf("u%06d", i), Username: fmt.Sprintf("user%06d", i)}); err != nil {
				t.Errorf("CreateUser %d: %v", i, err)
				written = i
				return
			}
		}
	}()
	// Let some writes land, then back up in the middle of the others.
	for {
		if _, err := s.GetUser(ctx, "u000050"); err == nil {
			break
		}
	}
	bak := filepath.Join(t.TempDir(), "ward-backup.db")
	info, err := sqlite.Backup(ctx, src, bak)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if info.SchemaVersion < 1 || info.Bytes == 0 {
		t.Errorf("BackupInfo = %+v", info)
	}
	if st, err := os.Stat(bak); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("backup file mode: %v %v, want 0600", st.Mode(), err)
	}
	if _, err := sqlite.Backup(ctx, src, bak); err == nil {
		t.Error("Backup over an existing file succeeded")
	}

	dst := filepath.Join(t.TempDir(), "restored", "ward.db")
	if _, err := sqlite.Restore(ctx, bak, dst, false); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if _, err := sqlite.Restore(ctx, bak, dst, false); err == nil {
		t.Error("Restore over an existing database without force succeeded")
	}
	r, err := sqlite.Open(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	n := 0
	for ; n < written; n++ {
		if _, err := r.GetUser(ctx, fmt.Sprintf("u%06d", n)); errors.Is(err, store.ErrNotFound) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if n < 50 {
		t.Fatalf("restored %d users, want at least the 50 written before the backup", n)
	}
	for i := n; i < written; i++ {
		if _, err := r.GetUser(ctx, fmt.Sprintf("u%06d", i)); err == nil {
			t.Fatalf("user %d restored but user %d missing: not a consistent snapshot", i, n)
		}
	}
	t.Logf("written %d users, the backup holds the first %d", written, n)
}

// TestRestoreRefusesDamage checks that a damaged or foreign file is not
// put in place, and that the existing database stays as it was.
func TestRestoreRefusesDamage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "ward.db")
	s, err := sqlite.Open(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if err := s.CreateUser(ctx, &model.User{ID: fmt.Sprintf("u%d", i), Username: fmt.Sprintf("user%d-%s", i, strings.Repeat("x", 200))}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	bak := filepath.Join(dir, "bak.db")
	if _, err := sqlite.Backup(ctx, src, bak); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bak)
	if err != nil {
		t.Fatal(err)
	}
	// Overwrite a page in the middle of the file.
	mid := len(b) / 2 / 4096 * 4096
	for i := mid; i < mid+4096 && i < len(b); i++ {
		b[i] = 0xA5
	}
	damaged := filepath.Join(dir, "damaged.db")
	if err := os.WriteFile(damaged, b, 0o600); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "foreign.db")
	if err := os.WriteFile(foreign, []byte("not a database at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "target.db")
	if _, err := sqlite.Restore(ctx, bak, dst, false); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(dst)
	for _, bad := range []string{damaged, foreign, filepath.Join(dir, "missing.db")} {
		if _, err := sqlite.Restore(ctx, bad, dst, true); err == nil {
			t.Errorf("Restore(%s) succeeded", filepath.Base(bad))
		}
	}
	after, _ := os.ReadFile(dst)
	if string(before) != string(after) {
		t.Error("a refused restore changed the existing database")
	}
}
