package identity

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/clock"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/store"
)

// fakeStore is an in-memory store.Store with the user, group and JTI
// methods the identity service uses. The embedded interface is nil: any
// other method panics. Records are deep-copied in and out, as a database
// would, so aliasing bugs show up.
type fakeStore struct {
	store.Store
	now func() time.Time

	mu         sync.Mutex
	users      map[string]*model.User
	groups     map[string]*model.Group
	jtis       map[string]time.Time
	failedAt   map[string]time.Time     // users' last counted sign-in attempt
	unknown    map[string]*fakeFailures // sign-in failures of unknown names
	writes     int                      // UpdateUser calls that saved
	hashWrites int                      // ... that changed the password hash
}

// fakeFailures is a failure record: an account's or an unknown name's.
type fakeFailures struct {
	failures    int
	lockedUntil time.Time
	failedAt    time.Time
}

func newFakeStore(now func() time.Time) *fakeStore {
	return &fakeStore{now: now, users: map[string]*model.User{}, groups: map[string]*model.Group{}, jtis: map[string]time.Time{},
		failedAt: map[string]time.Time{}, unknown: map[string]*fakeFailures{}}
}

// reserve applies store.Store's reservation rule to f.
func (f *fakeFailures) reserve(now time.Time, r store.Lockout) (*store.SignInReservation, error) {
	if now.Before(f.lockedUntil) {
		return &store.SignInReservation{LockedUntil: f.lockedUntil}, store.ErrLocked
	}
	if !f.lockedUntil.IsZero() || r.Window > 0 && !f.failedAt.After(now.Add(-r.Window)) {
		f.failures = 0
	}
	f.failures++
	f.lockedUntil, f.failedAt = time.Time{}, now
	if f.failures >= r.MaxFailures {
		f.lockedUntil = now.Add(r.LockFor)
	}
	return &store.SignInReservation{Failures: f.failures, LockedUntil: f.lockedUntil, LockedNow: !f.lockedUntil.IsZero()}, nil
}

func (f *fakeFailures) release(r *store.SignInReservation) {
	f.failures = max(f.failures-1, 0)
	if r.LockedNow && f.lockedUntil.Equal(r.LockedUntil) {
		f.lockedUntil = time.Time{}
	}
}

func (f *fakeStore) ReserveSignIn(_ context.Context, id string, now time.Time, r store.Lockout) (*store.SignInReservation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.users[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	rec := &fakeFailures{u.FailedLogins, u.LockedUntil, f.failedAt[id]}
	res, err := rec.reserve(now, r)
	if err == nil {
		u.FailedLogins, u.LockedUntil, f.failedAt[id], u.UpdatedAt = rec.failures, rec.lockedUntil, rec.failedAt, now
	}
	return res, err
}

func (f *fakeStore) ReleaseSignIn(_ context.Context, id string, r *store.SignInReservation) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if u, ok := f.users[id]; ok {
		rec := &fakeFailures{u.FailedLogins, u.LockedUntil, f.failedAt[id]}
		rec.release(r)
		u.FailedLogins, u.LockedUntil = rec.failures, rec.lockedUntil
	}
	return nil
}

func (f *fakeStore) ReserveUnknownSignIn(_ context.Context, key []byte, now time.Time, r store.Lockout) (*store.SignInReservation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rec := f.unknown[string(key)]
	if rec == nil {
		rec = &fakeFailures{}
		f.unknown[string(key)] = rec
	}
	return rec.reserve(now, r)
}

func (f *fakeStore) ReleaseUnknownSignIn(_ context.Context, key []byte, r *store.SignInReservation) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if rec := f.unknown[string(key)]; rec != nil {
		rec.release(r)
	}
	return nil
}

func cloneUser(u *model.User) *model.User {
	c := *u
	c.TOTPSecret = slices.Clone(u.TOTPSecret)
	c.Roles = slices.Clone(u.Roles)
	return &c
}

func cloneGroup(g *model.Group) *model.Group {
	c := *g
	c.Members = slices.Clone(g.Members)
	return &c
}

func (f *fakeStore) CreateUser(_ context.Context, u *model.User) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.users[u.ID]; ok {
		return fmt.Errorf("user id %s: %w", u.ID, store.ErrAlreadyExists)
	}
	for _, x := range f.users {
		if x.Username == u.Username {
			return fmt.Errorf("username %s: %w", u.Username, store.ErrAlreadyExists)
		}
	}
	f.users[u.ID] = cloneUser(u)
	return nil
}

func (f *fakeStore) GetUser(_ context.Context, id string) (*model.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.users[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	return cloneUser(u), nil
}

func (f *fakeStore) GetUserByUsername(_ context.Context, name string) (*model.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, u := range f.users {
		if u.Username == name {
			return cloneUser(u), nil
		}
	}
	return nil, store.ErrNotFound
}

func (f *fakeStore) UpdateUser(_ context.Context, id string, fn func(*model.User) error) (*model.User, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	u, ok := f.users[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	c := cloneUser(u)
	if err := fn(c); err != nil {
		return nil, err
	}
	if c.PasswordHash != u.PasswordHash {
		f.hashWrites++
	}
	f.users[id] = cloneUser(c)
	f.writes++
	return c, nil
}

func (f *fakeStore) DeleteUser(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.users[id]; !ok {
		return store.ErrNotFound
	}
	delete(f.users, id)
	return nil
}

func (f *fakeStore) CreateGroup(_ context.Context, g *model.Group) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, x := range f.groups {
		if x.Name == g.Name || x.ID == g.ID {
			return store.ErrAlreadyExists
		}
	}
	f.groups[g.ID] = cloneGroup(g)
	return nil
}

func (f *fakeStore) GetGroup(_ context.Context, id string) (*model.Group, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g, ok := f.groups[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	return cloneGroup(g), nil
}

func (f *fakeStore) UpdateGroup(_ context.Context, id string, fn func(*model.Group) error) (*model.Group, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	g, ok := f.groups[id]
	if !ok {
		return nil, store.ErrNotFound
	}
	c := cloneGroup(g)
	if err := fn(c); err != nil {
		return nil, err
	}
	f.groups[id] = cloneGroup(c)
	return c, nil
}

func (f *fakeStore) DeleteGroup(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.groups[id]; !ok {
		return store.ErrNotFound
	}
	delete(f.groups, id)
	return nil
}

func (f *fakeStore) GroupsOfUser(_ context.Context, userID string) ([]*model.Group, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*model.Group
	for _, g := range f.groups {
		if slices.Contains(g.Members, userID) {
			out = append(out, cloneGroup(g))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (f *fakeStore) RecordJTI(_ context.Context, key string, exp time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e, ok := f.jtis[key]; ok && f.now().Before(e) {
		return store.ErrReplay
	}
	f.jtis[key] = exp
	return nil
}

// rawUser returns the stored record as is.
func (f *fakeStore) rawUser(id string) *model.User {
	f.mu.Lock()
	defer f.mu.Unlock()
	return cloneUser(f.users[id])
}

func newFakeClock() *clock.Fake {
	// 10 s into a 30 s TOTP step, away from step boundaries.
	return clock.NewFake(time.Date(2026, 3, 1, 12, 0, 10, 0, time.UTC))
}

// lockedBuffer is a goroutine-safe log sink.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testParams are cheap argon2 parameters so tests stay fast.
var testParams = Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}

// env is a Service wired to fakes.
type env struct {
	svc   *Service
	store *fakeStore
	clock *clock.Fake
	rec   *bus.Recorder
	kek   *secret.KEK
	logs  *lockedBuffer
}

func newEnv(t testing.TB, mod func(*Options)) *env {
	t.Helper()
	clk := newFakeClock()
	st := newFakeStore(clk.Now)
	b := bus.NewLocal()
	rec := &bus.Recorder{}
	b.Subscribe("recorder", rec.Handle)
	kek, err := secret.NewKEK(bytes.Repeat([]byte{7}, secret.KEKSize))
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	o := Options{
		Store:  st,
		Bus:    b,
		KEK:    kek,
		Now:    clk.Now,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Argon2: testParams,
	}
	if mod != nil {
		mod(&o)
	}
	return &env{svc: New(o), store: st, clock: clk, rec: rec, kek: kek, logs: logs}
}

const goodPassword = "correct horse battery"

func (e *env) mustCreate(t testing.TB, username string) *model.User {
	t.Helper()
	u, err := e.svc.CreateUser(context.Background(), "admin", NewUser{Username: username, Password: goodPassword})
	if err != nil {
		t.Fatalf("CreateUser(%q): %v", username, err)
	}
	return u
}
