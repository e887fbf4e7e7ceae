package store

import (
	"context"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// WebAuthnStore keeps users' WebAuthn credentials (passkeys, security
// keys) and the server's side of WebAuthn ceremonies.
type WebAuthnStore interface {
	// CreateWebAuthnCredential stores a new credential. ErrAlreadyExists
	// when its CredentialID (or ID) is taken, by this user or another;
	// ErrNotFound when the user does not exist. It commits ctx's pending
	// events (WithEvent).
	CreateWebAuthnCredential(ctx context.Context, c *model.WebAuthnCredential) error
	// GetWebAuthnCredential finds a credential by the authenticator's
	// credential id (ErrNotFound when none).
	GetWebAuthnCredential(ctx context.Context, credentialID []byte) (*model.WebAuthnCredential, error)
	// ListWebAuthnCredentials returns a user's credentials, oldest first.
	ListWebAuthnCredentials(ctx context.Context, userID string) ([]*model.WebAuthnCredential, error)
	// UseWebAuthnCredential loads the credential with this credential id
	// under a lock, applies fn and saves what fn changed of SignCount,
	// BackupState, LastUsedAt and Name, atomically: of concurrent calls,
	// each fn sees the previous one's result (so a signature counter
	// check in fn cannot be passed twice with one value). An error from
	// fn saves nothing and is returned. ErrNotFound when none.
	UseWebAuthnCredential(ctx context.Context, credentialID []byte, fn func(*model.WebAuthnCredential) error) (*model.WebAuthnCredential, error)
	// RenameWebAuthnCredential sets the name of the user's credential id
	// (Ward's id); ctx's pending event commits with it. ErrNotFound when
	// the user has no such credential.
	RenameWebAuthnCredential(ctx context.Context, userID, id, name string) error
	// DeleteWebAuthnCredential deletes the user's credential id (Ward's
	// id) and returns it. ErrNotFound when the user has no such
	// credential. It commits ctx's pending events.
	DeleteWebAuthnCredential(ctx context.Context, userID, id string) (*model.WebAuthnCredential, error)
	// DeleteWebAuthnCredentials deletes every credential of the user and
	// returns how many there were. It commits ctx's pending events (also
	// when there were none); a builder (WithEvents) gets the deleted ids.
	DeleteWebAuthnCredentials(ctx context.Context, userID string) (int, error)
	// WebAuthnCredentialCounts counts the credentials of every user that
	// has some.
	WebAuthnCredentialCounts(ctx context.Context) (map[string]int, error)

	// PutWebAuthnChallenge stores a ceremony begun by the server
	// (ErrAlreadyExists when its ID is taken).
	PutWebAuthnChallenge(ctx context.Context, c *model.WebAuthnChallenge) error
	// TakeWebAuthnChallenge deletes the ceremony id and returns it, if it
	// had not expired at now: of concurrent calls with one id, on any
	// number of instances, exactly one gets it; the others, and every
	// later call, get ErrNotFound. An expired ceremony is deleted too and
	// gives ErrNotFound. PurgeExpired removes expired ceremonies.
	TakeWebAuthnChallenge(ctx context.Context, id string, now time.Time) (*model.WebAuthnChallenge, error)
}
