package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/store/sqlite"
)

const kekReminder = `The key-encryption key is not in the backup (signing keys, TOTP seeds and other
secrets are in it only encrypted under it): keep a copy of %s apart from the backup;
without it the restored data cannot sign a token (docs/deploy.md, "Backups").
`

func newBackupCmd(e *cliEnv) *cobra.Command {
	return &cobra.Command{
		Use:   "backup FILE",
		Short: "write a consistent backup of the database to FILE (online: the server may keep running)",
		Long: `Writes a consistent copy of Ward's database to FILE, which must not exist.

SQLite: an online backup (VACUUM INTO): one snapshot of the database as of one
instant while the server keeps serving; the file (mode 0600) is checked with
PRAGMA integrity_check.

PostgreSQL: runs pg_dump --format=custom (the PostgreSQL client tools must be
installed, of the server's major version or newer); the password of the DSN is
passed to pg_dump through its environment, not its command line.

The key-encryption key is never in the backup: back it up separately.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := e.loadConfig()
			if err != nil {
				return err
			}
			out := args[0]
			switch cfg.Storage.Driver {
			case config.DriverSQLite:
				info, err := sqlite.Backup(cmd.Context(), cfg.Storage.SQLite.Path, out)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "backup written: %s (%d bytes, schema version %d, integrity check ok)\n", out, info.Bytes, info.SchemaVersion)
			case config.DriverPostgres:
				if _, err := os.Lstat(out); err == nil {
					return fmt.Errorf("%s exists", out)
				}
				conn, env, err := pgToolConn(cfg.Storage.Postgres.DSN.Reveal())
				if err != nil {
					return err
				}
				if err := runPGTool(e, env, "pg_dump", "--format=custom", "--no-owner", "--no-privileges", "--file", out, "--dbname", conn); err != nil {
					os.Remove(out)
					return err
				}
				if err := os.Chmod(out, 0o600); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "backup written: %s (pg_dump custom format)\n", out)
			}
			fmt.Fprintf(e.stdout, kekReminder, kekSource(e, cfg))
			return nil
		},
	}
}

func newRestoreCmd(e *cliEnv) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "put a backup written by ward backup in place of the database (the server stopped)",
		Long: `Restores a backup written by ward backup.

SQLite: checks FILE (PRAGMA integrity_check, a Ward schema) and puts a copy of
it in place of the configured database file, atomically; the database's old
-wal and -shm files are removed. An existing database is replaced only with
--force. With the embedded NATS server, restore refuses while a ward serve runs
on the data directory; otherwise stop every instance first.

PostgreSQL: runs pg_restore --clean --if-exists --single-transaction into the
configured database (always needs --force: it replaces Ward's tables).

Start ward serve afterwards with the same key-encryption key as when the backup
was written; it migrates an older schema forward. Check the audit log with
ward logs verify.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := e.loadConfig()
			if err != nil {
				return err
			}
			in := args[0]
			isSQLite, err := sqliteFile(in)
			if err != nil {
				return err
			}
			switch cfg.Storage.Driver {
			case config.DriverSQLite:
				if !isSQLite {
					return &exitError{code: exitUsage, err: fmt.Errorf("%s is not an SQLite database (a pg_dump file? storage.driver is sqlite)", in)}
				}
				if cfg.Bus.Driver == config.BusNATS && cfg.Bus.NATS.URL == "" {
					release, err := lockServerStore(cfg.Bus.NATS.Embedded.StoreDir)
					if err != nil {
						return err
					}
					defer release()
				}
				info, err := sqlite.Restore(cmd.Context(), in, cfg.Storage.SQLite.Path, force)
				if err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "restored %s to %s (schema version %d)\n", in, cfg.Storage.SQLite.Path, info.SchemaVersion)
			case config.DriverPostgres:
				if isSQLite {
					return &exitError{code: exitUsage, err: fmt.Errorf("%s is an SQLite database; storage.driver is postgres", in)}
				}
				if !force {
					return &exitError{code: exitUsage, err: errors.New("restoring into PostgreSQL replaces Ward's tables: add --force")}
				}
				conn, env, err := pgToolConn(cfg.Storage.Postgres.DSN.Reveal())
				if err != nil {
					return err
				}
				if err := runPGTool(e, env, "pg_restore", "--clean", "--if-exists", "--no-owner", "--no-privileges",
					"--single-transaction", "--exit-on-error", "--dbname", conn, in); err != nil {
					return err
				}
				fmt.Fprintf(e.stdout, "restored %s into the configured PostgreSQL database\n", in)
			}
			fmt.Fprintln(e.stdout, "start ward serve with the key-encryption key in use when the backup was written, then run ward logs verify")
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing database")
	return cmd
}

// kekSource names where the configured key-encryption key comes from.
func kekSource(e *cliEnv, cfg *config.Config) string {
	if cfg.KEK.Env != "" {
		if _, ok := e.lookupEnv(cfg.KEK.Env); ok {
			return "$" + cfg.KEK.Env
		}
	}
	return cfg.KEK.File
}

// sqliteFile reports whether path starts with SQLite's file header.
func sqliteFile(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	head := make([]byte, 16)
	n, _ := f.Read(head)
	return bytes.Equal(head[:n], []byte("SQLite format 3\x00")), nil
}

var kvPassword = regexp.MustCompile(`(?i)(^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)

// pgToolConn splits a DSN into a connection string without the password,
// for the command line of pg_dump and pg_restore (visible to other local
// users), and the environment that carries the password (PGPASSWORD).
func pgToolConn(dsn string) (string, []string, error) {
	var password string
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", nil, errors.New("storage.postgres.dsn is not a valid URL")
		}
		if u.User != nil {
			if p, ok := u.User.Password(); ok {
				password = p
				u.User = url.User(u.User.Username())
			}
		}
		q := u.Query()
		if p := q.Get("password"); p != "" {
			password = p
			q.Del("password")
			u.RawQuery = q.Encode()
		}
		dsn = u.String()
	} else if m := kvPassword.FindStringSubmatch(dsn); m != nil {
		password = strings.Trim(m[2], "'")
		dsn = strings.TrimSpace(kvPassword.ReplaceAllString(dsn, "$1"))
	}
	env := os.Environ()
	if password != "" {
		env = append(env, "PGPASSWORD="+password)
	}
	return dsn, env, nil
}

func runPGTool(e *cliEnv, env []string, name string, args ...string) error {
	path, err := exec.LookPath(name)
	if err != nil {
		return fmt.Errorf("%s not found: install the PostgreSQL client tools (the server's major version or newer), or see docs/deploy.md for doing it by hand", name)
	}
	c := exec.Command(path, args...)
	c.Env = env
	c.Stdout = e.stderr
	var stderr bytes.Buffer
	c.Stderr = &stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
