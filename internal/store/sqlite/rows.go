package sqlite

import (
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/ward-idp/ward/internal/store/internal/sqlstore"
)

// bufferedRows is the result of a Query on the write querier: the
// statement ran as one operation of the group-commit writer, which read
// every row before the operation ended (its transaction may commit, or
// be shared with other operations, only once the statement is done), so
// the rows are kept in memory and scanned from there.
type bufferedRows struct {
	rows [][]any
	cur  []any
	err  error
}

// readAll reads rs to the end and closes it. Values are copied by
// database/sql (scanning into *any copies []byte).
func readAll(rs sqlstore.Rows) (*bufferedRows, error) {
	defer rs.Close()
	cr, ok := rs.(interface{ Columns() ([]string, error) })
	if !ok {
		return nil, fmt.Errorf("sqlite: rows of type %T do not report their columns", rs)
	}
	cols, err := cr.Columns()
	if err != nil {
		return nil, err
	}
	b := &bufferedRows{}
	for rs.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			return nil, err
		}
		b.rows = append(b.rows, vals)
	}
	if err := rs.Err(); err != nil {
		return nil, err
	}
	if err := rs.Close(); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *bufferedRows) Next() bool {
	if b.err != nil || len(b.rows) == 0 {
		b.cur = nil
		return false
	}
	b.cur, b.rows = b.rows[0], b.rows[1:]
	return true
}

func (b *bufferedRows) Scan(dest ...any) error {
	if b.cur == nil {
		return errors.New("sqlite: Scan called without calling Next")
	}
	if len(dest) != len(b.cur) {
		return fmt.Errorf("sqlite: expected %d destination arguments in Scan, not %d", len(b.cur), len(dest))
	}
	for i, d := range dest {
		if err := assign(d, b.cur[i]); err != nil {
			return fmt.Errorf("sqlite: Scan error on column index %d: %w", i, err)
		}
	}
	return nil
}

func (b *bufferedRows) Err() error { return b.err }

func (b *bufferedRows) Close() error {
	b.rows, b.cur = nil, nil
	return nil
}

// assign stores a driver value (nil, int64, float64, bool, []byte,
// string, time.Time) in dest, converting as database/sql's Scan does for
// the destination types the store uses (and their named variants).
func assign(dest, src any) error {
	switch d := dest.(type) {
	case *any:
		*d = src
		return nil
	case sql.Scanner:
		return d.Scan(src)
	case *[]byte:
		switch s := src.(type) {
		case nil:
			*d = nil
			return nil
		case []byte:
			*d = append([]byte(nil), s...)
			return nil
		case string:
			*d = []byte(s)
			return nil
		}
	case *string:
		switch s := src.(type) {
		case string:
			*d = s
			return nil
		case []byte:
			*d = string(s)
			return nil
		case int64:
			*d = strconv.FormatInt(s, 10)
			return nil
		case float64:
			*d = strconv.FormatFloat(s, 'g', -1, 64)
			return nil
		case bool:
			*d = strconv.FormatBool(s)
			return nil
		case time.Time:
			*d = s.Format(time.RFC3339Nano)
			return nil
		}
	case *time.Time:
		if s, ok := src.(time.Time); ok {
			*d = s
			return nil
		}
	}
	dv := reflect.ValueOf(dest)
	if dv.Kind() != reflect.Pointer || dv.IsNil() {
		return fmt.Errorf("destination not a pointer: %T", dest)
	}
	if src == nil {
		return fmt.Errorf("converting NULL to %s is unsupported", dv.Elem().Kind())
	}
	dv = dv.Elem()
	sv := reflect.ValueOf(src)
	if sv.Type().AssignableTo(dv.Type()) {
		dv.Set(sv)
		return nil
	}
	str := func() (string, bool) {
		switch s := src.(type) {
		case string:
			return s, true
		case []byte:
			return string(s), true
		}
		return "", false
	}
	switch dv.Kind() {
	case reflect.String:
		if s, ok := str(); ok {
			dv.SetString(s)
			return nil
		}
		if i, ok := src.(int64); ok {
			dv.SetString(strconv.FormatInt(i, 10))
			return nil
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		var i int64
		switch s := src.(type) {
		case int64:
			i = s
		case bool:
			if s {
				i = 1
			}
		default:
			v, ok := str()
			if !ok {
				return fmt.Errorf("unsupported Scan, storing driver.Value type %T into type %T", src, dest)
			}
			n, err := strconv.ParseInt(v, 10, dv.Type().Bits())
			if err != nil {
				return fmt.Errorf("converting %q to %s: %w", v, dv.Kind(), err)
			}
			i = n
		}
		if dv.OverflowInt(i) {
			return fmt.Errorf("value %d overflows %s", i, dv.Kind())
		}
		dv.SetInt(i)
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if i, ok := src.(int64); ok && i >= 0 && !dv.OverflowUint(uint64(i)) {
			dv.SetUint(uint64(i))
			return nil
		}
	case reflect.Float32, reflect.Float64:
		switch s := src.(type) {
		case float64:
			dv.SetFloat(s)
			return nil
		case int64:
			dv.SetFloat(float64(s))
			return nil
		}
	case reflect.Bool:
		switch s := src.(type) {
		case bool:
			dv.SetBool(s)
			return nil
		case int64:
			dv.SetBool(s != 0)
			return nil
		}
	}
	return fmt.Errorf("unsupported Scan, storing driver.Value type %T into type %T", src, dest)
}
