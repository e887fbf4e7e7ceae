package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// NewUser describes an account to create.
type NewUser struct {
	Username    string // lower-cased; 1..64 of a-z 0-9 . _ @ -
	Email       string // optional
	DisplayName string // optional
	Password    string
	Roles       []string
	// TOTPSecret is an optional base32 TOTP seed (static configuration).
	TOTPSecret string
}

// LogValue keeps the password and TOTP seed out of logs.
func (nu NewUser) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("username", nu.Username),
		slog.String("email", nu.Email),
		slog.Any("roles", nu.Roles),
		slog.Bool("totp", nu.TOTPSecret != ""),
	)
}

const (
	maxUsernameLen    = 64
	maxDisplayNameLen = 256
	maxEmailLen       = 254
	maxRoleLen        = 64
)

// NormalizeUsername lower-cases and trims a username as typed.
func NormalizeUsername(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// ValidUsername reports whether a normalised username is acceptable.
func ValidUsername(s string) bool {
	if len(s) < 1 || len(s) > maxUsernameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '_', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}

func validateEmail(e string) error {
	if e == "" {
		return nil
	}
	if len(e) > maxEmailLen {
		return fmt.Errorf("%w: email too long", ErrInvalidInput)
	}
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || a.Name != "" {
		return fmt.Errorf("%w: email is not a plain address", ErrInvalidInput)
	}
	return nil
}

func validateText(field, v string, max int) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidInput, field)
	}
	if utf8.RuneCountInString(v) > max {
		return fmt.Errorf("%w: %s longer than %d characters", ErrInvalidInput, field, max)
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: %s contains control characters", ErrInvalidInput, field)
		}
	}
	return nil
}

// CheckRoles applies the rule for role names (SetRoles, CreateUser) without
// changing anything, for callers that validate a whole request first.
func CheckRoles(roles []string) error {
	_, err := normalizeRoles(roles)
	return err
}

// normalizeRoles trims, drops empties and duplicates, keeping order.
func normalizeRoles(in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, r := range in {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		if len(r) > maxRoleLen || !ValidUsername(strings.ToLower(r)) {
			return nil, fmt.Errorf("%w: role %q", ErrInvalidInput, r)
		}
		if !model.KnownRole(r) {
			return nil, fmt.Errorf("%w: unknown role %q (known roles: %s)", ErrInvalidInput, r, strings.Join(model.KnownRoles, ", "))
		}
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

// CreateUser validates nu and creates the account. The username is
// lower-cased. It publishes user.created (and mfa.enrolled when a TOTP
// secret is given).
func (s *Service) CreateUser(ctx context.Context, actor string, nu NewUser) (*model.User, error) {
	name := NormalizeUsername(nu.Username)
	if !ValidUsername(name) {
		return nil, ErrInvalidUsername
	}
	if err := validateEmail(nu.Email); err != nil {
		return nil, err
	}
	if err := validateText("display name", nu.DisplayName, maxDisplayNameLen); err != nil {
		return nil, err
	}
	roles, err := normalizeRoles(nu.Roles)
	if err != nil {
		return nil, err
	}
	if err := checkPasswordPolicy(nu.Password, s.minPwLen, name, nu.Email); err != nil {
		return nil, err
	}
	var seed []byte
	if nu.TOTPSecret != "" {
		if seed, err = decodeTOTPSecret(nu.TOTPSecret); err != nil {
			return nil, err
		}
	}
	// Fail fast on a taken name before spending a hash.
	if _, err := s.store.GetUserByUsername(ctx, name); err == nil {
		return nil, fmt.Errorf("user %q: %w", name, ErrExists)
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("identity: look up user: %w", err)
	}
	hash, err := s.hash(ctx, nu.Password)
	if err != nil {
		return nil, fmt.Errorf("identity: hash password: %w", err)
	}
	now := s.now()
	u := &model.User{
		ID:           newID(),
		Username:     name,
		Email:        nu.Email,
		DisplayName:  nu.DisplayName,
		PasswordHash: hash,
		Roles:        roles,
		CreatedAt:    now,
		UpdatedAt:    now,
	}
	if seed != nil {
		if u.TOTPSecret, err = s.sealTOTP(u.ID, seed); err != nil {
			return nil, err
		}
	}
	// The user and its records commit together.
	evs := []*model.Event{{Type: model.EventUserCreated, Actor: actor, UserID: u.ID,
		Data: map[string]string{"username": u.Username}}}
	if seed != nil {
		evs = append(evs, &model.Event{Type: model.EventMFAEnrolled, Actor: actor, UserID: u.ID,
			Data: map[string]string{"method": "totp"}})
	}
	ctx = s.events.PendingEvents(ctx, func([]string) []*model.Event { return evs })
	if err := s.store.CreateUser(ctx, u); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return nil, fmt.Errorf("user %q: %w", name, ErrExists)
		}
		return nil, fmt.Errorf("identity: create user: %w", err)
	}
	s.log.InfoContext(ctx, "user created", "actor", actor, "user_id", u.ID, "username", u.Username)
	for _, e := range evs {
		err = errors.Join(err, s.events.Emit(ctx, e))
	}
	return u, err
}

// update wraps Store.UpdateUser with UpdatedAt and error wrapping.
func (s *Service) update(ctx context.Context, userID string, fn func(*model.User) error) (*model.User, error) {
	u, err := s.store.UpdateUser(ctx, userID, func(u *model.User) error {
		if err := fn(u); err != nil {
			return err
		}
		u.UpdatedAt = s.now()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("identity: update user %s: %w", userID, notFound(err))
	}
	return u, nil
}

// SetPassword replaces a user's password after checking the policy. It
// publishes user.password_changed. Lock state is left as it is (see
// Unlock).
func (s *Service) SetPassword(ctx context.Context, actor, userID, password string) error {
	u, err := s.store.GetUser(ctx, userID)
	if err != nil {
		return fmt.Errorf("identity: user %s: %w", userID, notFound(err))
	}
	if err := checkPasswordPolicy(password, s.minPwLen, u.Username, u.Email); err != nil {
		return err
	}
	hash, err := s.hash(ctx, password)
	if err != nil {
		return fmt.Errorf("identity: hash password: %w", err)
	}
	ev := &model.Event{Type: model.EventPasswordChanged, Actor: actor, UserID: userID}
	ctx = s.events.Pending(ctx, ev, nil)
	if _, err := s.update(ctx, userID, func(u *model.User) error {
		u.PasswordHash = hash
		u.PasswordChangedAt = s.now()
		return nil
	}); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "password changed", "actor", actor, "user_id", userID)
	return s.events.Emit(ctx, ev)
}

// Risk levels a user can have ("" reads as RiskNone).
const (
	RiskNone   = "none"
	RiskLow    = "low"
	RiskMedium = "medium"
	RiskHigh   = "high"
)

// ErrInvalidRisk: a risk level other than none, low, medium or high.
var ErrInvalidRisk = errors.New("identity: risk level must be none, low, medium or high")

// SetRisk sets a user's risk level (Conditional Access user risk) and
// publishes user.risk_changed with the level, the previous level and the
// reason. Setting the level it already has changes nothing. It writes the
// level alone: administrators (ward user risk, the admin API) and
// remediation go through internal/risk, which keeps the detections behind
// the level and recomputes it from them.
func (s *Service) SetRisk(ctx context.Context, actor, userID, level, reason string) error {
	switch level {
	case RiskNone, RiskLow, RiskMedium, RiskHigh:
	default:
		return ErrInvalidRisk
	}
	var prev string
	changed := false
	// The event commits with the change, and only when the level changed.
	ev := &model.Event{Type: model.EventUserRiskChanged, Actor: actor, UserID: userID, Reason: reason}
	ctx = s.events.Pending(ctx, ev, func([]string) bool { return changed })
	if _, err := s.update(ctx, userID, func(u *model.User) error {
		prev, changed = RiskNone, false // fn may run again: start afresh
		if u.RiskLevel != "" {
			prev = u.RiskLevel
		}
		if prev == level {
			return nil
		}
		changed = true
		u.RiskLevel, u.RiskUpdatedAt = level, s.now()
		if level == RiskNone {
			u.RiskLevel = ""
		}
		ev.Data = map[string]string{"level": level, "previous": prev}
		return nil
	}); err != nil {
		return err
	}
	if !changed {
		return nil
	}
	s.log.InfoContext(ctx, "user risk set", "actor", actor, "user_id", userID, "level", level, "previous", prev)
	return s.events.Emit(ctx, ev)
}

// SetDisabled disables or re-enables a user. Disabling publishes
// user.disabled (consumers revoke sessions); enabling publishes
// user.updated with Data["change"]="enabled".
func (s *Service) SetDisabled(ctx context.Context, actor, userID string, disabled bool) error {
	ev := &model.Event{Type: model.EventUserDisabled, Actor: actor, UserID: userID}
	if !disabled {
		ev = &model.Event{Type: model.EventUserUpdated, Actor: actor, UserID: userID,
			Data: map[string]string{"change": "enabled"}}
	}
	ctx = s.events.Pending(ctx, ev, nil)
	if _, err := s.update(ctx, userID, func(u *model.User) error {
		u.Disabled = disabled
		return nil
	}); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "user disabled state set", "actor", actor, "user_id", userID, "disabled", disabled)
	return s.events.Emit(ctx, ev)
}

// SetRoles replaces a user's roles. It publishes user.updated with
// Data["change"]="roles" and Data["roles"] (comma-separated).
func (s *Service) SetRoles(ctx context.Context, actor, userID string, roles []string) error {
	roles, err := normalizeRoles(roles)
	if err != nil {
		return err
	}
	// The roles and their record commit together.
	ev := &model.Event{Type: model.EventUserUpdated, Actor: actor, UserID: userID,
		Data: map[string]string{"change": "roles", "roles": strings.Join(roles, ",")}}
	ctx = s.events.Pending(ctx, ev, nil)
	if _, err := s.update(ctx, userID, func(u *model.User) error {
		u.Roles = slices.Clone(roles)
		return nil
	}); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "roles set", "actor", actor, "user_id", userID, "roles", roles)
	return s.events.Emit(ctx, ev)
}

// Unlock clears a user's failure count and lock. It publishes
// user.updated with Data["change"]="unlocked".
func (s *Service) Unlock(ctx context.Context, actor, userID string) error {
	ev := &model.Event{Type: model.EventUserUpdated, Actor: actor, UserID: userID, Data: map[string]string{"change": "unlocked"}}
	ctx = s.events.Pending(ctx, ev, nil)
	if _, err := s.update(ctx, userID, func(u *model.User) error {
		u.FailedLogins = 0
		u.LockedUntil = time.Time{}
		return nil
	}); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "user unlocked", "actor", actor, "user_id", userID)
	return s.events.Emit(ctx, ev)
}

// DeleteUser removes the user from its groups and deletes it. It publishes
// user.deleted.
func (s *Service) DeleteUser(ctx context.Context, actor, userID string) error {
	if _, err := s.store.GetUser(ctx, userID); err != nil {
		return fmt.Errorf("identity: user %s: %w", userID, notFound(err))
	}
	groups, err := s.store.GroupsOfUser(ctx, userID)
	if err != nil {
		return fmt.Errorf("identity: groups of user %s: %w", userID, err)
	}
	for _, g := range groups {
		if _, err := s.store.UpdateGroup(ctx, g.ID, func(g *model.Group) error {
			g.Members = slices.DeleteFunc(g.Members, func(m string) bool { return m == userID })
			return nil
		}); err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("identity: remove user from group %s: %w", g.ID, err)
		}
	}
	ev := &model.Event{Type: model.EventUserDeleted, Actor: actor, UserID: userID}
	ctx = s.events.Pending(ctx, ev, nil)
	if err := s.store.DeleteUser(ctx, userID); err != nil {
		return fmt.Errorf("identity: delete user %s: %w", userID, notFound(err))
	}
	s.log.InfoContext(ctx, "user deleted", "actor", actor, "user_id", userID)
	return s.events.Emit(ctx, ev)
}
