package sqlstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/store"
)

// Limits of list methods.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

func limit(n int) int {
	switch {
	case n <= 0:
		return defaultLimit
	case n > maxLimit:
		return maxLimit
	}
	return n
}

// micros encodes t as unix microseconds; the zero time is 0.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// fromMicros decodes micros; 0 is the zero time. Times come back in UTC.
func fromMicros(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

// blob encodes b; empty is NULL.
func blob(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// unblob normalises an empty blob to nil.
func unblob(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// The lists and maps on the token path (AMR values, roles, event data)
// are short and almost always plain ASCII, so they are encoded and
// decoded without reflection when every string is "plain": printable
// ASCII that encoding/json writes verbatim (no quote, backslash or the
// HTML characters < > & it escapes). The output is byte for byte what
// json.Marshal writes, and anything else goes through encoding/json.

func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// jsonList encodes a string slice; empty is ”.
func jsonList(v []string) string {
	if len(v) == 0 {
		return ""
	}
	n := 1
	for _, s := range v {
		if !plain(s) {
			b, _ := json.Marshal(v) // a []string always marshals
			return string(b)
		}
		n += len(s) + 3
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, s := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(append(append(b, '"'), s...), '"')
	}
	return string(append(b, ']'))
}

func unjsonList(s, what string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	v, ok := decodePlainList(s)
	if !ok {
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return nil, fmt.Errorf("store: decode %s: %w", what, err)
		}
	}
	if len(v) == 0 {
		return nil, nil
	}
	return v, nil
}

// decodePlainList decodes a JSON array of plain strings as jsonList
// writes it (no whitespace); ok is false for any other input.
func decodePlainList(s string) (v []string, ok bool) {
	if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
		return nil, false
	}
	body := s[1 : len(s)-1]
	if body == "" {
		return []string{}, true
	}
	v = make([]string, 0, strings.Count(body, ",")+1)
	for {
		if len(body) < 2 || body[0] != '"' {
			return nil, false
		}
		end := strings.IndexByte(body[1:], '"') + 1
		if end == 0 || !plain(body[1:end]) {
			return nil, false
		}
		v = append(v, body[1:end])
		body = body[end+1:]
		if body == "" {
			return v, true
		}
		if body[0] != ',' {
			return nil, false
		}
		body = body[1:]
	}
}

// jsonMap encodes a string map; empty is ”. Keys are sorted, as
// json.Marshal sorts them.
func jsonMap(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	n := 1
	for k, v := range m {
		if !plain(k) || !plain(v) {
			b, _ := json.Marshal(m) // a map[string]string always marshals
			return string(b)
		}
		keys = append(keys, k)
		n += len(k) + len(v) + 6
	}
	slices.Sort(keys)
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(append(append(b, '"'), k...), '"', ':', '"')
		b = append(append(b, m[k]...), '"')
	}
	return string(append(b, '}'))
}

func unjsonMap(s, what string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	m, ok := decodePlainMap(s)
	if !ok {
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			return nil, fmt.Errorf("store: decode %s: %w", what, err)
		}
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

// decodePlainMap decodes a JSON object of plain strings as jsonMap writes
// it (no whitespace); ok is false for any other input. Every event's data
// is such an object, and the bus relay and the audit-log followers read
// each event back, so this is on the path of every token.
func decodePlainMap(s string) (m map[string]string, ok bool) {
	if len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return nil, false
	}
	body := s[1 : len(s)-1]
	m = make(map[string]string, strings.Count(body, `":"`))
	if body == "" {
		return m, true
	}
	str := func() (string, bool) {
		if len(body) < 2 || body[0] != '"' {
			return "", false
		}
		end := strings.IndexByte(body[1:], '"') + 1
		if end == 0 || !plain(body[1:end]) {
			return "", false
		}
		v := body[1:end]
		body = body[end+1:]
		return v, true
	}
	for {
		k, ok := str()
		if !ok || body == "" || body[0] != ':' {
			return nil, false
		}
		body = body[1:]
		v, ok := str()
		if !ok {
			return nil, false
		}
		m[k] = v // a repeated key: the last wins, as in encoding/json
		if body == "" {
			return m, true
		}
		if body[0] != ',' {
			return nil, false
		}
		body = body[1:]
	}
}

// rawJSON encodes raw JSON verbatim; empty is ”.
func rawJSON(r json.RawMessage) string { return string(r) }

func unrawJSON(s string) json.RawMessage {
	if s == "" {
		return nil
	}
	return json.RawMessage(s)
}

// dedupe drops empty and repeated ids, keeping the first occurrence.
func dedupe(ids []string) []string {
	out := make([]string, 0, len(ids))
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if id == "" || seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, id)
	}
	return out
}

// placeholders returns "$from, $from+1, ..." for n parameters.
func placeholders(from, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(from + i))
	}
	return b.String()
}

func notFound(what string) error { return fmt.Errorf("%w: %s", store.ErrNotFound, what) }

func alreadyExists(what string) error {
	return fmt.Errorf("%w: %s", store.ErrAlreadyExists, what)
}

// qualify prefixes every column of a column list with a table alias.
func qualify(alias, cols string) string {
	fields := strings.Split(cols, ",")
	for i, f := range fields {
		fields[i] = alias + "." + strings.TrimSpace(f)
	}
	return strings.Join(fields, ", ")
}

// errRollback aborts a transaction whose outcome the caller reports itself.
var errRollback = errors.New("sqlstore: rollback")

// wrap adds the operation to a database error. Driver messages name
// constraints and columns, never bound values, so no secret leaks here.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

// createErr maps a unique violation on insert to ErrAlreadyExists.
func (s *Store) createErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if s.d.IsUniqueViolation(err) {
		return alreadyExists(what)
	}
	return wrap("create "+what, err)
}

// getErr maps an empty result to ErrNotFound.
func (s *Store) getErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if s.d.IsNoRows(err) {
		return notFound(what)
	}
	return wrap("get "+what, err)
}

// deleted maps zero affected rows to ErrNotFound.
func deleted(what string, n int64, err error) error {
	if err != nil {
		return wrap("delete "+what, err)
	}
	if n == 0 {
		return notFound(what)
	}
	return nil
}

// collect scans every row of rs with scan.
func collect[T any](rs Rows, err error, op string, scan func(Row) (T, error)) ([]T, error) {
	if err != nil {
		return nil, wrap(op, err)
	}
	defer rs.Close()
	var out []T
	for rs.Next() {
		v, err := scan(rs)
		if err != nil {
			return nil, wrap(op, err)
		}
		out = append(out, v)
	}
	if err := rs.Err(); err != nil {
		return nil, wrap(op, err)
	}
	if err := rs.Close(); err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}
