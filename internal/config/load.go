package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

// LoadOptions says where configuration comes from. Later sources win:
// defaults, then File, then the environment, then Overrides.
type LoadOptions struct {
	// File is a YAML file; empty means none.
	File string
	// Environ supplies the environment as KEY=VALUE strings; nil means
	// os.Environ. Only WARD_-prefixed, known keys are used.
	Environ []string
	// Overrides are dotted keys applied last (command-line flags), for
	// example {"dev": true}.
	Overrides map[string]any
}

// Load reads the defaults, the YAML file at path (if not empty) and the
// process environment. It does not validate; call Validate.
func Load(path string) (*Config, error) {
	return LoadWith(LoadOptions{File: path})
}

// LoadWith loads configuration from the given sources. Errors here are
// about reading and decoding (unknown keys, wrong types); semantic checks
// are Validate's job.
func LoadWith(o LoadOptions) (*Config, error) {
	k := koanf.New(".")
	if o.File != "" {
		if _, err := os.Stat(o.File); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := k.Load(file.Provider(o.File), yaml.Parser()); err != nil {
			return nil, fmt.Errorf("config: %s: %w", o.File, err)
		}
	}
	environ := o.Environ
	if environ == nil {
		environ = os.Environ()
	}
	known := envKeys()
	envp := env.Provider(".", env.Opt{
		Prefix:        EnvPrefix,
		EnvironFunc:   func() []string { return environ },
		TransformFunc: func(name, v string) (string, any) { return EnvKey(name, known), v },
	})
	if err := k.Load(envp, nil); err != nil {
		return nil, fmt.Errorf("config: environment: %w", err)
	}
	if len(o.Overrides) > 0 {
		if err := k.Load(confmap.Provider(o.Overrides, "."), nil); err != nil {
			return nil, fmt.Errorf("config: overrides: %w", err)
		}
	}

	cfg := Default()
	dc := &mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			rejectNumericDuration,
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		),
		WeaklyTypedInput: true,
		ErrorUnused:      true,
		TagName:          "koanf",
		Result:           cfg,
	}
	d, err := mapstructure.NewDecoder(dc)
	if err != nil {
		return nil, err
	}
	if err := d.Decode(k.Raw()); err != nil {
		where := "configuration"
		if o.File != "" {
			where = o.File
		}
		return nil, fmt.Errorf("config: %s: %w", where, decodeErrors(err))
	}
	cfg.explicitIssuer = k.Exists("issuer")
	cfg.explicitListen = k.Exists("listen")
	if cfg.Dev && !k.Exists("data_dir") {
		cfg.DataDir = DevDataDir(environ)
	}
	if cfg.Dev && cfg.explicitListen && !cfg.explicitIssuer {
		// In development the issuer follows the listen address, so that
		// discovery advertises where Ward actually is.
		cfg.Issuer = devIssuer(cfg.Listen)
	}
	cfg.ResolvePaths()
	return cfg, nil
}

// DevDataDir is where --dev keeps its data unless data_dir is set:
// $XDG_DATA_HOME/ward/dev, or ~/.local/share/ward/dev, so that every
// command run with --dev, from any directory, finds the same database,
// key-encryption key and demo accounts. Without a home directory it is
// ./ward-data.
func DevDataDir(environ []string) string {
	get := func(k string) string {
		for _, kv := range environ {
			if name, v, ok := strings.Cut(kv, "="); ok && name == k {
				return v
			}
		}
		return ""
	}
	if x := get("XDG_DATA_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "ward", "dev")
	}
	if h := get("HOME"); filepath.IsAbs(h) {
		return filepath.Join(h, ".local", "share", "ward", "dev")
	}
	return "./ward-data"
}

// FollowListener sets the issuer to the address the server actually
// listens on (listen with port 0) when the issuer follows the listen
// address (--dev without an explicit issuer).
func (c *Config) FollowListener(addr string) {
	if c.Dev && !c.explicitIssuer && c.explicitListen {
		c.Issuer = devIssuer(addr)
	}
}

// devIssuer is the http:// URL of a listen address: an unspecified host
// (0.0.0.0, ::, empty) becomes 127.0.0.1, the address a local client uses.
func devIssuer(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://" + listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

var durationType = reflect.TypeFor[time.Duration]()

// rejectNumericDuration refuses bare numbers for durations: "600" would
// otherwise silently mean 600ns. Durations are Go duration strings.
func rejectNumericDuration(from, to reflect.Type, v any) (any, error) {
	if to != durationType {
		return v, nil
	}
	switch from.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return nil, fmt.Errorf("duration %v has no unit; write a Go duration such as \"10m\" or \"90s\"", v)
	}
	if s, ok := v.(string); ok {
		if _, err := time.ParseDuration(strings.TrimSpace(s)); err != nil {
			return nil, errors.New("invalid duration " + fmt.Sprintf("%q", s) + ": write a Go duration such as \"10m\" or \"90s\"")
		}
		return strings.TrimSpace(s), nil
	}
	return v, nil
}

// EnvKey maps an environment variable name to a dotted config key, or ""
// when the name is not an override of a known key. WARD_STORAGE__POSTGRES__DSN
// becomes storage.postgres.dsn. A nil known set accepts every name.
func EnvKey(name string, known map[string]bool) string {
	if !strings.HasPrefix(name, EnvPrefix) {
		return ""
	}
	key := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, EnvPrefix), EnvDelim, "."))
	if known != nil && !known[key] {
		return ""
	}
	return key
}

// EnvName returns the environment variable that overrides a dotted key:
// storage.postgres.dsn -> WARD_STORAGE__POSTGRES__DSN.
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", EnvDelim))
}

// envKeys lists every key that an environment variable may set: scalar
// fields and string lists, not lists of structs.
func envKeys() map[string]bool {
	out := map[string]bool{}
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("koanf")
			if tag == "" || tag == "-" {
				continue
			}
			key := prefix + tag
			switch {
			case f.Type.Kind() == reflect.Struct:
				walk(f.Type, key+".")
			case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
				// lists of objects: file only
			default:
				out[key] = true
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return out
}

// EnvKeys returns, sorted by nothing in particular, every dotted key that
// can be overridden from the environment.
func EnvKeys() []string {
	m := envKeys()
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// The decoder's messages name its own notions ("” has invalid keys:
// bogus", "'tokens' expected a map or struct, got \"int\"") or Go's
// ("strconv.ParseBool: invalid syntax"); decodeErrors says the same in the
// file's terms, one problem per line, each with its dotted key.
var (
	reInvalidKeys = regexp.MustCompile(`^'([^']*)' has invalid keys: (.+)$`)
	reExpected    = regexp.MustCompile(`^'([^']*)' expected (?:a |an )?(.+?), got (?:unconvertible type )?'?"?([^'"]+)'?"?(?:, value: .*)?$`)
	reCannotParse = regexp.MustCompile(`^'([^']*)' cannot parse value as '([^']+)'`)
)

func decodeErrors(err error) error {
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		l = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(l), "* "))
		if l == "" || strings.HasPrefix(l, "decoding failed due to") {
			continue
		}
		lines = append(lines, friendlyDecode(l))
	}
	if len(lines) == 0 {
		return err
	}
	if len(lines) == 1 {
		return errors.New(lines[0])
	}
	return errors.New(fmt.Sprintf("%d problems:\n  - ", len(lines)) + strings.Join(lines, "\n  - "))
}

func friendlyDecode(l string) string {
	key := func(k string) string {
		// mapstructure names the root "" (v2.4) or by its type (v2.5).
		if k == "" || k == "config.Config" {
			return "top level"
		}
		return k
	}
	if m := reInvalidKeys.FindStringSubmatch(l); m != nil {
		var quoted []string
		for _, k := range strings.Split(m[2], ",") {
			quoted = append(quoted, fmt.Sprintf("%q", strings.TrimSpace(k)))
		}
		noun := "key"
		if len(quoted) > 1 {
			noun = "keys"
		}
		return fmt.Sprintf("%s: unknown %s %s (docs/configuration.md lists every key)", key(m[1]), noun, strings.Join(quoted, ", "))
	}
	if m := reCannotParse.FindStringSubmatch(l); m != nil {
		return fmt.Sprintf("%s: expected %s", key(m[1]), goKind(m[2]))
	}
	if m := reExpected.FindStringSubmatch(l); m != nil {
		want := m[2]
		if want == "map or struct" || strings.HasPrefix(want, "map") {
			want = "a mapping"
		} else {
			want = goKind(want)
		}
		return fmt.Sprintf("%s: expected %s, got %s", key(m[1]), want, goKind(m[3]))
	}
	return l
}

// goKind describes a Go kind name in configuration terms.
func goKind(k string) string {
	switch {
	case k == "bool":
		return "true or false"
	case k == "string":
		return "a string"
	case strings.HasPrefix(k, "int") || strings.HasPrefix(k, "uint") || strings.HasPrefix(k, "float"):
		return "a number"
	case k == "slice" || strings.HasPrefix(k, "[]"):
		return "a list"
	case k == "map" || strings.HasPrefix(k, "map"):
		return "a mapping"
	}
	return k
}
