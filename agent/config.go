package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// DefaultClientID is the OAuth client the agent signs in as: a public
// client allowed the device-code and refresh-token grants, with DPoP-bound
// access tokens.
const DefaultClientID = "ward-agent"

// ErrNotEnrolled: there is no agent configuration (the device was never
// enrolled, or the file was removed).
var ErrNotEnrolled = errors.New("agent: this device is not enrolled (run `ward device enroll --server URL`)")

// Secret is a string that never prints: fmt, slog, encoding/json and
// encoding/text all see "[REDACTED]". Reveal returns the value. The agent
// keeps its tokens in Secrets so that a Config can be logged or printed
// without leaking them; only Config.Save writes them, to a 0600 file.
type Secret string

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[REDACTED]"
}

// GoString implements fmt.GoStringer (%#v).
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// Format makes every verb (%s, %v, %q, %x, …) print the redacted form.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", s.String())
		return
	}
	_, _ = f.Write([]byte(s.String()))
}

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText implements encoding.TextMarshaler (and so JSON): redacted.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Config is the agent's state after enrolment. Save writes it as JSON to a
// 0600 file in a 0700 directory; it is the only place the refresh token is
// kept. The refresh token is bound to the device key (DPoP), so the file
// alone is of no use to a thief who lacks the key.
type Config struct {
	// Server is the issuer URL of the Ward instance.
	Server string
	// ClientID is the OAuth client of the agent (DefaultClientID).
	ClientID string
	// Scope is what the agent asked for at enrolment, and asks for again
	// when it signs in again ("" means DefaultScope).
	Scope string
	// DeviceID is the id the server gave the registered device.
	DeviceID string
	// JKT is the RFC 7638 thumbprint of the device key.
	JKT string
	// KeyName is the device key's name in the key store.
	KeyName string
	// KeyStorage is the key store kind: "file" or "tpm".
	KeyStorage string
	// KeyDir is the key store directory ("" for its default).
	KeyDir string
	// RefreshToken is the session token; it is rotated on every use.
	RefreshToken Secret
	// AccessToken is the latest access token (DPoP-bound), reused until
	// TokenExpiry.
	AccessToken Secret
	// TokenExpiry is when AccessToken expires.
	TokenExpiry time.Time
	// EnrolledAt is when the device was enrolled.
	EnrolledAt time.Time
	// Incomplete marks an enrolment whose device is registered but whose
	// session is not yet bound to it (the first posture report or the
	// binding refresh failed): `ward device enroll` finishes it
	// (Client.FinishEnrollment) instead of starting over.
	Incomplete bool

	path string
}

// configFile is the on-disk form: the only place tokens are written in
// clear.
type configFile struct {
	Server       string    `json:"server"`
	ClientID     string    `json:"client_id"`
	Scope        string    `json:"scope,omitempty"`
	DeviceID     string    `json:"device_id"`
	JKT          string    `json:"jkt,omitempty"`
	KeyName      string    `json:"key_name"`
	KeyStorage   string    `json:"key_storage"`
	KeyDir       string    `json:"key_dir,omitempty"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	AccessToken  string    `json:"access_token,omitempty"`
	TokenExpiry  time.Time `json:"token_expiry,omitzero"`
	Incomplete   bool      `json:"incomplete,omitempty"`
	EnrolledAt   time.Time `json:"enrolled_at,omitzero"`
}

// DefaultConfigPath returns os.UserConfigDir()/ward/agent.json.
func DefaultConfigPath() (string, error) {
	base, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("agent: no user configuration directory: %w", err)
	}
	return filepath.Join(base, "ward", "agent.json"), nil
}

// Path returns the file the configuration is saved to.
func (c *Config) Path() string { return c.path }

// SetPath sets the file Save writes to ("" for DefaultConfigPath).
func (c *Config) SetPath(path string) { c.path = path }

// LoadConfig reads the configuration at path ("" for DefaultConfigPath).
// A missing file is ErrNotEnrolled; a file that group or others can read
// is refused, since it holds the refresh token.
func LoadConfig(path string) (*Config, error) {
	if path == "" {
		var err error
		if path, err = DefaultConfigPath(); err != nil {
			return nil, err
		}
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist", ErrNotEnrolled, path)
	}
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("agent: %s has permissions %#o and holds the refresh token; refusing to use it: run `chmod 600 %s`", path, uint32(perm), path)
	}
	var cf configFile
	dec := json.NewDecoder(f)
	if err := dec.Decode(&cf); err != nil {
		return nil, fmt.Errorf("agent: %s: malformed configuration: %v", path, err)
	}
	c := &Config{
		Server: cf.Server, ClientID: cf.ClientID, Scope: cf.Scope, DeviceID: cf.DeviceID, JKT: cf.JKT,
		KeyName: cf.KeyName, KeyStorage: cf.KeyStorage, KeyDir: cf.KeyDir,
		RefreshToken: Secret(cf.RefreshToken), AccessToken: Secret(cf.AccessToken),
		TokenExpiry: cf.TokenExpiry, EnrolledAt: cf.EnrolledAt, Incomplete: cf.Incomplete, path: path,
	}
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.Server == "" || c.KeyName == "" {
		return nil, fmt.Errorf("agent: %s: incomplete configuration (server and key_name are required)", path)
	}
	return c, nil
}

// Save writes the configuration atomically (temporary file, fsync, rename,
// directory fsync) with mode 0600, creating the directory with mode 0700.
// After Save returns nil the file holds exactly this configuration, even
// if the machine crashes right afterwards; if it fails, the previous file
// is unchanged.
func (c *Config) Save() error {
	if c.path == "" {
		p, err := DefaultConfigPath()
		if err != nil {
			return err
		}
		c.path = p
	}
	cf := configFile{
		Server: c.Server, ClientID: c.ClientID, Scope: c.Scope, DeviceID: c.DeviceID, JKT: c.JKT,
		KeyName: c.KeyName, KeyStorage: c.KeyStorage, KeyDir: c.KeyDir,
		RefreshToken: c.RefreshToken.Reveal(), AccessToken: c.AccessToken.Reveal(),
		TokenExpiry: c.TokenExpiry.UTC(), EnrolledAt: c.EnrolledAt.UTC(), Incomplete: c.Incomplete,
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(cf); err != nil {
		return err
	}
	return writeFileAtomic(c.path, buf.Bytes())
}

// clone returns a copy sharing nothing mutable.
func (c *Config) clone() *Config {
	cp := *c
	return &cp
}

// writeFileAtomic replaces path with data, mode 0600, in a 0700 directory.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("agent: create %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, ".agent-*.tmp")
	if err != nil {
		return fmt.Errorf("agent: save configuration: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("agent: save configuration: %w", err)
	}
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("agent: save configuration: %w", err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("agent: save configuration: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("agent: save configuration: %w", err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("agent: save configuration: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
