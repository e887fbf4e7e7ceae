package sqlite

import (
	"database/sql/driver"
	"errors"
	"sync"

	msqlite "modernc.org/sqlite"

	"github.com/ward-idp/ward/internal/store"
)

// The SQL functions the audit chain reads the events table through
// (sqlstore.Dialect.EventBodyFunc, EventLeafFunc). Reading a column
// through the driver costs several calls into SQLite, each taking the
// connection's mutex; nineteen columns per event made the database
// driver, not hashing, the cost of `ward logs verify`. These functions
// encode the row inside SQLite's statement and hand one value to Go.
// They run the same Go encoding the PostgreSQL store applies to the
// columns it reads (store.AppendEventBody, store.RecordLeaf), so both
// backends hash identically.
const (
	eventBodyFunc = "ward_event_body"
	eventLeafFunc = "ward_event_leaf"
)

// leafBufs holds the buffers the leaf function encodes bodies into (the
// body itself never leaves the call).
var leafBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

var errArgs = errors.New("sqlite: wrong number of arguments")

func init() {
	nBody := int32(len(store.EventBodyColumns))
	// Arguments are read as views into SQLite's memory (VolatileArgs):
	// the encoders copy what they need and keep nothing.
	msqlite.MustRegisterFunction(eventBodyFunc, &msqlite.FunctionImpl{
		NArgs: nBody, Deterministic: true, VolatileArgs: true,
		Scalar: func(_ *msqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
			if len(args) != int(nBody) {
				return nil, errArgs
			}
			var a [32]any
			return store.AppendEventBody(make([]byte, 0, 384), anys(a[:0], args)...), nil
		},
	})
	// ward_event_leaf(seq, body columns…, mac)
	msqlite.MustRegisterFunction(eventLeafFunc, &msqlite.FunctionImpl{
		NArgs: nBody + 2, Deterministic: true, VolatileArgs: true,
		Scalar: func(_ *msqlite.FunctionContext, args []driver.Value) (driver.Value, error) {
			if len(args) != int(nBody)+2 {
				return nil, errArgs
			}
			seq, ok := args[0].(int64)
			if !ok {
				return nil, errors.New("sqlite: an event's seq is not an integer")
			}
			var a [32]any
			bp := leafBufs.Get().(*[]byte)
			body := store.AppendEventBody((*bp)[:0], anys(a[:0], args[1:len(args)-1])...)
			leaf := store.RecordLeaf(seq, body, args[len(args)-1])
			*bp = body
			leafBufs.Put(bp)
			return leaf[:], nil
		},
	})
}

// anys appends driver values to dst as the values of store's encoders
// (the same dynamic types: nil, int64, float64, string, []byte).
func anys(dst []any, vs []driver.Value) []any {
	for _, v := range vs {
		dst = append(dst, v)
	}
	return dst
}
