package store

import (
	"context"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// SSFReceivers is the part of the store Ward's SSF receiver uses (Ward
// receiving Security Event Tokens from other transmitters): its streams
// at those transmitters, and the SETs it recorded, so that a replay is
// refused after a restart and by every instance.
type SSFReceivers interface {
	// PutSSFReceiverStream creates or replaces the stream of receiver
	// s.Name (CreatedAt is kept from the stored row).
	PutSSFReceiverStream(ctx context.Context, s *model.SSFReceiverStream) error
	// GetSSFReceiverStream is ErrNotFound when the receiver has none.
	GetSSFReceiverStream(ctx context.Context, name string) (*model.SSFReceiverStream, error)
	// ListSSFReceiverStreams returns every receiver's stream by name.
	ListSSFReceiverStreams(ctx context.Context) ([]*model.SSFReceiverStream, error)
	// DeleteSSFReceiverStream forgets a receiver's stream (ErrNotFound).
	DeleteSSFReceiverStream(ctx context.Context, name string) error
	// RecordSSFSignal records that receiver accepted the SET jti, until
	// exp (after which its iat window refuses it anyway), in one
	// transaction with ctx's pending events (WithEvent): the signal and
	// its record commit together, or neither does. ErrReplay when the
	// jti is recorded and unexpired; then nothing is written.
	RecordSSFSignal(ctx context.Context, receiver, jti string, exp time.Time) error
	// PurgeSSFSignals forgets recorded SETs whose expiry is at or before
	// now and returns how many.
	PurgeSSFSignals(ctx context.Context, now time.Time) (int64, error)
	// UsersByEmail returns up to limit users whose email equals email,
	// compared case-insensitively (emails are not unique: a caller that
	// needs one user asks for two and refuses an ambiguous answer).
	UsersByEmail(ctx context.Context, email string, limit int) ([]*model.User, error)
}
