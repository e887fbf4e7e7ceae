package identity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-webauthn/webauthn/metadata"
	"github.com/go-webauthn/webauthn/metadata/providers/memory"
	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/google/uuid"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/ratelimit"
	"github.com/ward-idp/ward/internal/store"
)

// WebAuthn (passkeys and security keys).
//
// Security properties:
//   - User verification is required in every ceremony (a PIN or a
//     biometric on the authenticator), so a passkey alone is two factors
//     (possession and knowledge or inherence: amr hwk/swk + user or pin).
//   - The browser signs the origin and the authenticator signs the rp id
//     hash; both are checked, so an assertion a phishing proxy relays from
//     another origin is refused.
//   - Challenges live in the store, not in the page or one process: a
//     ceremony's answer is accepted once (store.TakeWebAuthnChallenge
//     deletes it in the statement that reads it), before it expires, on
//     any instance and across restarts.
//   - A signature counter that does not grow is refused, checked and
//     updated under the credential's row lock, and recorded as
//     passkey.clone_suspected with a risk detection.
//   - A credential id is registered to one account only.

// Default WebAuthn settings.
const (
	DefaultWebAuthnTimeout = 5 * time.Minute
	// MaxPasskeyNameLen bounds a credential's name (characters).
	MaxPasskeyNameLen = 64
	// MaxPasskeysPerUser bounds a user's credentials.
	MaxPasskeysPerUser = 20
	// MaxWebAuthnResponse bounds a browser's answer (bytes).
	MaxWebAuthnResponse = 32 << 10
	// DefaultPasskeyLoginsPerMinute bounds the usernameless ceremonies
	// one network may begin per minute on one instance: each is a row in
	// the database until it is used or expires, and anyone can ask for
	// the login page.
	DefaultPasskeyLoginsPerMinute = 60
)

// ErrPasskeyBusy: too many passkey sign-ins begun from this network; the
// page is shown without the passkey button (the password still works).
var ErrPasskeyBusy = errors.New("too many passkey sign-ins begun from this network; try again in a minute")

// Attestation policies.
const (
	// AttestationNone asks for no attestation and accepts any
	// authenticator (the default: passkeys in password managers do not
	// attest).
	AttestationNone = "none"
	// AttestationAllowList asks for direct attestation and accepts only
	// authenticators whose AAGUID is in the allow list and whose
	// attestation verifies against the operator's metadata file.
	AttestationAllowList = "allow_list"
)

// WebAuthnOptions configure passkeys. RPID and Origins are required to
// enable them.
type WebAuthnOptions struct {
	// RPID is the relying party id: the issuer's host name.
	RPID string
	// RPName is shown by the authenticator ("Ward" when empty).
	RPName string
	// Origins are the web origins the sign-in pages are served from.
	Origins []string
	// Timeout bounds a ceremony (DefaultWebAuthnTimeout when 0).
	Timeout time.Duration
	// Attestation is AttestationNone (default) or AttestationAllowList.
	Attestation string
	// AllowedAAGUIDs are the authenticator models accepted under
	// AttestationAllowList.
	AllowedAAGUIDs []uuid.UUID
	// Metadata verifies attestation statements under
	// AttestationAllowList (built from the operator's metadata file).
	Metadata metadata.Provider
}

// WebAuthn errors, safe to show.
var (
	// ErrPasskeysDisabled: WebAuthn is not configured.
	ErrPasskeysDisabled = errors.New("passkeys are not enabled on this server")
	// ErrInvalidPasskey: the browser's answer did not verify (wrong
	// origin or rp id, bad signature, no user verification, unknown
	// credential, malformed). Reason tells which.
	ErrInvalidPasskey = errors.New("the passkey could not be verified")
	// ErrPasskeyExpired: the ceremony is unknown, was answered already or
	// expired: start again.
	ErrPasskeyExpired = errors.New("this passkey request expired or was already used; try again")
	// ErrPasskeyNotAllowed: the authenticator is not one the attestation
	// policy accepts.
	ErrPasskeyNotAllowed = errors.New("this kind of security key is not allowed by your organisation")
	// ErrPasskeyTaken: the credential is already registered.
	ErrPasskeyTaken = errors.New("this passkey is already registered")
	// ErrTooManyPasskeys: the user has MaxPasskeysPerUser credentials.
	ErrTooManyPasskeys = fmt.Errorf("an account can have at most %d passkeys", MaxPasskeysPerUser)
)

// Reason codes of WebAuthn failures.
const (
	ReasonPasskeyMalformed      = "passkey_malformed"
	ReasonPasskeyChallenge      = "passkey_challenge"    // unknown, used or expired ceremony
	ReasonPasskeyWrongOrigin    = "passkey_wrong_origin" // clientDataJSON.origin is not ours
	ReasonPasskeyWrongRP        = "passkey_wrong_rp_id"  // rpIdHash is not ours
	ReasonPasskeyNoUV           = "passkey_no_user_verification"
	ReasonPasskeyUnknown        = "passkey_unknown_credential"
	ReasonPasskeyOtherUser      = "passkey_other_user" // a credential of another account
	ReasonPasskeySignature      = "passkey_bad_signature"
	ReasonPasskeyCounter        = "passkey_counter_regression"
	ReasonPasskeyNotAllowed     = "attestation_not_allowed"
	ReasonPasskeyInvalid        = "passkey_invalid"
	ReasonPasskeyTaken          = "passkey_taken"
	ReasonPasskeyLimit          = "passkey_limit"
	ceremonyRegisterPasskey     = "register"
	ceremonyRegisterSecurityKey = "register_key"
	ceremonyLogin               = "login"
	ceremonyMFA                 = "mfa"
)

// Credential kinds (mfa.enrolled's data.method).
const (
	MethodPasskey     = "passkey"      // discoverable: signs in without a username
	MethodSecurityKey = "security_key" // a second factor after the password
)

// Ceremony is a WebAuthn ceremony the server began: its handle (what
// the page posts back) and the options for navigator.credentials
// (create or get), as JSON.
type Ceremony struct {
	ID        string
	Options   json.RawMessage
	ExpiresAt time.Time
}

// PasskeyUse is a verified assertion.
type PasskeyUse struct {
	User       *model.User
	Credential *model.WebAuthnCredential
	// AMR are the RFC 8176 methods it proves: hwk (a hardware-bound key)
	// or swk (a synced passkey), user (the authenticator verified the
	// user), and mfa (two factors in one).
	AMR []string
}

type webAuthnState struct {
	rp      *webauthn.WebAuthn
	opts    WebAuthnOptions
	allowed []uuid.UUID
	begun   *ratelimit.Limiter // usernameless ceremonies per network
}

func newWebAuthn(o *WebAuthnOptions) (*webAuthnState, error) {
	if o == nil || o.RPID == "" || len(o.Origins) == 0 {
		return nil, nil
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultWebAuthnTimeout
	}
	if o.RPName == "" {
		o.RPName = "Ward"
	}
	cfg := &webauthn.Config{
		RPID: o.RPID, RPDisplayName: o.RPName, RPOrigins: o.Origins,
		AttestationPreference: protocol.PreferNoAttestation,
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			UserVerification: protocol.VerificationRequired,
		},
		Timeouts: webauthn.TimeoutsConfig{
			Login:        webauthn.TimeoutConfig{Timeout: o.Timeout, TimeoutUVD: o.Timeout},
			Registration: webauthn.TimeoutConfig{Timeout: o.Timeout, TimeoutUVD: o.Timeout},
		},
	}
	switch o.Attestation {
	case "", AttestationNone:
	case AttestationAllowList:
		if len(o.AllowedAAGUIDs) == 0 {
			return nil, errors.New("identity: attestation allow_list needs at least one AAGUID")
		}
		cfg.AttestationPreference = protocol.PreferDirectAttestation
		cfg.MDS = o.Metadata
	default:
		return nil, fmt.Errorf("identity: unknown attestation policy %q", o.Attestation)
	}
	rp, err := webauthn.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("identity: webauthn: %w", err)
	}
	return &webAuthnState{rp: rp, opts: *o, allowed: o.AllowedAAGUIDs, begun: ratelimit.PerMinute(DefaultPasskeyLoginsPerMinute, defaultMaxIPTracked)}, nil
}

// PasskeysEnabled reports whether WebAuthn is configured.
func (s *Service) PasskeysEnabled() bool { return s.wa != nil }

// waUser adapts a user and its credentials to the library.
type waUser struct {
	u     *model.User
	creds []webauthn.Credential
}

func (w *waUser) WebAuthnID() []byte { return []byte(w.u.ID) }
func (w *waUser) WebAuthnName() string {
	return w.u.Username
}
func (w *waUser) WebAuthnDisplayName() string {
	if w.u.DisplayName != "" {
		return w.u.DisplayName
	}
	return w.u.Username
}
func (w *waUser) WebAuthnCredentials() []webauthn.Credential { return w.creds }

func toLibCredential(c *model.WebAuthnCredential) webauthn.Credential {
	var tr []protocol.AuthenticatorTransport
	for _, t := range c.Transports {
		tr = append(tr, protocol.AuthenticatorTransport(t))
	}
	return webauthn.Credential{
		ID: c.CredentialID, PublicKey: c.PublicKey, AttestationType: c.AttestationType, AttestationFormat: c.AttestationFormat,
		Transport: tr,
		Flags:     webauthn.CredentialFlags{UserPresent: true, UserVerified: true, BackupEligible: c.BackupEligible, BackupState: c.BackupState},
		Authenticator: webauthn.Authenticator{
			AAGUID: c.AAGUID, SignCount: c.SignCount, Attachment: protocol.AuthenticatorAttachment(c.Attachment),
		},
	}
}

func (s *Service) waUserOf(ctx context.Context, u *model.User) (*waUser, []*model.WebAuthnCredential, error) {
	creds, err := s.store.ListWebAuthnCredentials(ctx, u.ID)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: list passkeys: %w", err)
	}
	w := &waUser{u: u}
	for _, c := range creds {
		w.creds = append(w.creds, toLibCredential(c))
	}
	return w, creds, nil
}

// ceremony stores the library's session data and returns the ceremony.
func (s *Service) ceremony(ctx context.Context, purpose, userID string, sd *webauthn.SessionData, options any) (*Ceremony, error) {
	// Expiry is the store's, under Ward's clock.
	sd.Expires = time.Time{}
	blob, err := json.Marshal(sd)
	if err != nil {
		return nil, fmt.Errorf("identity: encode webauthn session: %w", err)
	}
	opts, err := json.Marshal(options)
	if err != nil {
		return nil, fmt.Errorf("identity: encode webauthn options: %w", err)
	}
	now := s.now()
	c := &model.WebAuthnChallenge{ID: newID(), Purpose: purpose, UserID: userID, Session: blob, CreatedAt: now, ExpiresAt: now.Add(s.wa.opts.Timeout)}
	if err := s.store.PutWebAuthnChallenge(ctx, c); err != nil {
		return nil, fmt.Errorf("identity: store webauthn challenge: %w", err)
	}
	return &Ceremony{ID: c.ID, Options: opts, ExpiresAt: c.ExpiresAt}, nil
}

// take takes a ceremony of purpose (and user) from the store: once.
func (s *Service) take(ctx context.Context, id string, purposes []string, userID string) (*model.WebAuthnChallenge, *webauthn.SessionData, error) {
	if id == "" || len(id) > 64 {
		return nil, nil, authErr(ErrPasskeyExpired, ReasonPasskeyChallenge, userID)
	}
	ch, err := s.store.TakeWebAuthnChallenge(ctx, id, s.now())
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, authErr(ErrPasskeyExpired, ReasonPasskeyChallenge, userID)
	} else if err != nil {
		return nil, nil, fmt.Errorf("identity: take webauthn challenge: %w", err)
	}
	if !slices.Contains(purposes, ch.Purpose) || ch.UserID != userID {
		// A ceremony begun for something else (or someone else): spent.
		return nil, nil, authErr(ErrPasskeyExpired, ReasonPasskeyChallenge, userID)
	}
	var sd webauthn.SessionData
	if err := json.Unmarshal(ch.Session, &sd); err != nil {
		return nil, nil, fmt.Errorf("identity: decode webauthn session: %w", err)
	}
	return ch, &sd, nil
}

// BeginPasskeyRegistration starts registering a passkey (kind
// MethodPasskey: a discoverable credential) or a security key
// (MethodSecurityKey) for u. The user's existing credentials are
// excluded, so one authenticator is not registered twice.
func (s *Service) BeginPasskeyRegistration(ctx context.Context, u *model.User, kind string) (*Ceremony, error) {
	if s.wa == nil {
		return nil, ErrPasskeysDisabled
	}
	w, creds, err := s.waUserOf(ctx, u)
	if err != nil {
		return nil, err
	}
	if len(creds) >= MaxPasskeysPerUser {
		return nil, ErrTooManyPasskeys
	}
	rk, purpose := protocol.ResidentKeyRequirementRequired, ceremonyRegisterPasskey
	if kind == MethodSecurityKey {
		rk, purpose = protocol.ResidentKeyRequirementDiscouraged, ceremonyRegisterSecurityKey
	}
	sel := protocol.AuthenticatorSelection{ResidentKey: rk, UserVerification: protocol.VerificationRequired}
	if rk == protocol.ResidentKeyRequirementRequired {
		t := true
		sel.RequireResidentKey = &t
	}
	var exclude []protocol.CredentialDescriptor
	for _, c := range w.creds {
		exclude = append(exclude, c.Descriptor())
	}
	opts := []webauthn.RegistrationOption{webauthn.WithAuthenticatorSelection(sel), webauthn.WithExclusions(exclude)}
	creation, sd, err := s.wa.rp.BeginRegistration(w, opts...)
	if err != nil {
		return nil, fmt.Errorf("identity: begin webauthn registration: %w", err)
	}
	return s.ceremony(ctx, purpose, u.ID, sd, creation)
}

// FinishPasskeyRegistration verifies the browser's answer to ceremony id
// (begun for u) and stores the credential under name. It publishes
// mfa.enrolled (method passkey or security_key) with the change, which
// also reaches receivers as a CAEP credential-change; a refusal
// publishes passkey.rejected and changes nothing.
func (s *Service) FinishPasskeyRegistration(ctx context.Context, actor string, u *model.User, id, name string, response []byte) (*model.WebAuthnCredential, error) {
	if s.wa == nil {
		return nil, ErrPasskeysDisabled
	}
	name = strings.TrimSpace(name)
	if name != "" && !ValidPasskeyName(name) {
		return nil, fmt.Errorf("%w: a passkey name is at most %d printable characters", ErrInvalidInput, MaxPasskeyNameLen)
	}
	c, err := s.finishRegistration(ctx, actor, u, id, name, response)
	if err != nil {
		if r := Reason(err); r != ReasonInternal && r != ReasonCanceled && r != ReasonInvalidInput {
			ev := &model.Event{Type: model.EventPasskeyRejected, Actor: actor, UserID: u.ID, Outcome: model.OutcomeFailure, Reason: r}
			if ae, ok := errors.AsType[*passkeyRejection](err); ok && ae.aaguid != "" {
				ev.Data = map[string]string{"aaguid": ae.aaguid}
			}
			if perr := s.events.Emit(ctx, ev); perr != nil {
				s.log.ErrorContext(ctx, "publishing passkey.rejected", "user_id", u.ID, "err", perr)
			}
		}
		return nil, err
	}
	return c, nil
}

// chainedAttestation are the attestation types (as the library names
// them, after the FIDO metadata's vocabulary) whose statement is signed
// by a certificate chain: full basic attestation, an attestation CA, an
// anonymisation CA.
var chainedAttestation = []string{"basic_full", "attca", "anonca"}

// passkeyRejection carries the AAGUID of a refused authenticator.
type passkeyRejection struct {
	error
	aaguid string
}

func (e *passkeyRejection) Unwrap() error { return e.error }

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }

// isBidiControl: the Unicode bidirectional formatting characters, which
// would let a name display as another (an "evil" right-to-left override)
// on the pages and in the logs that show it.
func isBidiControl(r rune) bool {
	return r == 0x061c || r == 0x200e || r == 0x200f || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}

// ValidPasskeyName reports whether name (already trimmed) may name a
// passkey: valid UTF-8, 1 to MaxPasskeyNameLen characters, no control
// and no bidirectional formatting characters, and no U+FFFD (what a JSON
// or form decoder makes of bytes that were not UTF-8, or of a lone
// surrogate: refused rather than stored as a name nobody typed).
func ValidPasskeyName(name string) bool {
	return name != "" && utf8.ValidString(name) && utf8.RuneCountInString(name) <= MaxPasskeyNameLen &&
		!strings.ContainsFunc(name, func(r rune) bool { return isControl(r) || isBidiControl(r) || r == utf8.RuneError })
}

func (s *Service) finishRegistration(ctx context.Context, actor string, u *model.User, id, name string, response []byte) (*model.WebAuthnCredential, error) {
	ch, sd, err := s.take(ctx, id, []string{ceremonyRegisterPasskey, ceremonyRegisterSecurityKey}, u.ID)
	if err != nil {
		return nil, err
	}
	if len(response) > MaxWebAuthnResponse {
		return nil, authErr(ErrInvalidPasskey, ReasonPasskeyMalformed, u.ID)
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(response)
	if err != nil {
		return nil, authErr(ErrInvalidPasskey, ReasonPasskeyMalformed, u.ID)
	}
	w, creds, err := s.waUserOf(ctx, u)
	if err != nil {
		return nil, err
	}
	if len(creds) >= MaxPasskeysPerUser {
		return nil, authErr(ErrTooManyPasskeys, ReasonPasskeyLimit, u.ID)
	}
	lc, err := s.wa.rp.CreateCredential(w, *sd, parsed)
	if metadataRefused(err) {
		// The attestation policy's metadata refused it: an unknown model,
		// a chain to no trust anchor, a compromised model.
		s.log.InfoContext(ctx, "passkey refused by the attestation metadata", "user_id", u.ID, "detail", protocolDetail(err))
		return nil, &passkeyRejection{authErr(ErrPasskeyNotAllowed, ReasonPasskeyNotAllowed, u.ID), hex.EncodeToString(parsed.Response.AttestationObject.AuthData.AttData.AAGUID)}
	}
	if err != nil {
		reason := protocolReason(err)
		s.log.InfoContext(ctx, "passkey registration refused", "user_id", u.ID, "reason", reason, "detail", protocolDetail(err))
		return nil, authErr(ErrInvalidPasskey, reason, u.ID)
	}
	aaguid := hex.EncodeToString(lc.Authenticator.AAGUID)
	if s.wa.opts.Attestation == AttestationAllowList {
		a, _ := uuid.FromBytes(lc.Authenticator.AAGUID)
		// Only an attestation that chains to a certificate (the metadata's
		// roots, checked by the library) vouches for the model: not
		// "none", nor self attestation (basic_surrogate: signed by the new
		// key itself).
		if a == uuid.Nil || !slices.Contains(s.wa.allowed, a) || !slices.Contains(chainedAttestation, lc.AttestationType) {
			return nil, &passkeyRejection{authErr(ErrPasskeyNotAllowed, ReasonPasskeyNotAllowed, u.ID), aaguid}
		}
	}
	kind := MethodSecurityKey
	if ch.Purpose == ceremonyRegisterPasskey {
		kind = MethodPasskey
	}
	if name == "" {
		name = defaultPasskeyName(kind, len(creds)+1)
	}
	now := s.now()
	c := &model.WebAuthnCredential{
		ID: newID(), UserID: u.ID, CredentialID: lc.ID, Name: name, PublicKey: lc.PublicKey, AAGUID: lc.Authenticator.AAGUID,
		SignCount: lc.Authenticator.SignCount, Attachment: string(lc.Authenticator.Attachment),
		AttestationFormat: lc.AttestationFormat, AttestationType: lc.AttestationType, Discoverable: kind == MethodPasskey,
		BackupEligible: lc.Flags.BackupEligible, BackupState: lc.Flags.BackupState, CreatedAt: now,
	}
	for _, t := range lc.Transport {
		c.Transports = append(c.Transports, string(t))
	}
	ev := &model.Event{Type: model.EventMFAEnrolled, Actor: actor, UserID: u.ID, Data: map[string]string{
		"method": kind, "credential": c.ID, "name": c.Name, "aaguid": aaguid,
		"backup_eligible": strconv.FormatBool(c.BackupEligible), "attestation": orNone(c.AttestationType),
	}}
	ectx := s.events.Pending(ctx, ev, nil)
	if err := s.store.CreateWebAuthnCredential(ectx, c); err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return nil, authErr(ErrPasskeyTaken, ReasonPasskeyTaken, u.ID)
		}
		return nil, fmt.Errorf("identity: store passkey: %w", notFound(err))
	}
	s.log.InfoContext(ctx, "passkey registered", "user_id", u.ID, "credential", c.ID, "method", kind)
	return c, s.events.Emit(ectx, ev)
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func defaultPasskeyName(kind string, n int) string {
	if kind == MethodSecurityKey {
		return "Security key " + strconv.Itoa(n)
	}
	return "Passkey " + strconv.Itoa(n)
}

// BeginPasskeyLogin starts a usernameless sign-in for a browser at ip:
// any passkey of this site the browser holds may answer. ErrPasskeyBusy
// when the network began DefaultPasskeyLoginsPerMinute already.
func (s *Service) BeginPasskeyLogin(ctx context.Context, ip string) (*Ceremony, error) {
	if s.wa == nil {
		return nil, ErrPasskeysDisabled
	}
	if !s.wa.begun.Take(s.throttleKey(ip), s.now()) {
		return nil, ErrPasskeyBusy
	}
	assertion, sd, err := s.wa.rp.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return nil, fmt.Errorf("identity: begin webauthn login: %w", err)
	}
	return s.ceremony(ctx, ceremonyLogin, "", sd, assertion)
}

// BeginWebAuthnMFA starts a step-up for u, who has signed in with a
// password or an SSO session: one of u's credentials must answer.
// ErrNoPasskey when u has none.
func (s *Service) BeginWebAuthnMFA(ctx context.Context, u *model.User) (*Ceremony, error) {
	if s.wa == nil {
		return nil, ErrPasskeysDisabled
	}
	w, _, err := s.waUserOf(ctx, u)
	if err != nil {
		return nil, err
	}
	if len(w.creds) == 0 {
		return nil, ErrNoPasskey
	}
	assertion, sd, err := s.wa.rp.BeginLogin(w, webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return nil, fmt.Errorf("identity: begin webauthn login: %w", err)
	}
	return s.ceremony(ctx, ceremonyMFA, u.ID, sd, assertion)
}

// ErrNoPasskey: the user has no passkey or security key.
var ErrNoPasskey = errors.New("the user has no passkey")

// HasPasskey reports whether the user has a WebAuthn credential, also
// when passkeys are turned off: a user whose second factor is a security
// key must not be signed in with the password alone because the server's
// configuration changed (fail closed; an administrator can reset the
// passkeys). A failed read counts as having one, for the same reason.
func (s *Service) HasPasskey(ctx context.Context, userID string) bool {
	l, err := s.store.ListWebAuthnCredentials(ctx, userID)
	if err != nil {
		s.log.ErrorContext(ctx, "list passkeys", "user_id", userID, "err", err)
		return true
	}
	return len(l) > 0
}

// FinishPasskeyLogin verifies the answer to a usernameless sign-in
// (BeginPasskeyLogin) and returns the user whose passkey signed. Like a
// password, a failure counts against the network's budget; a user who is
// disabled or locked is refused.
func (s *Service) FinishPasskeyLogin(ctx context.Context, id string, response []byte, ip string) (*PasskeyUse, error) {
	return s.finishAssertion(ctx, nil, id, response, ip)
}

// FinishWebAuthnMFA verifies the answer to BeginWebAuthnMFA for u.
func (s *Service) FinishWebAuthnMFA(ctx context.Context, u *model.User, id string, response []byte, ip string) (*PasskeyUse, error) {
	if u == nil {
		return nil, authErr(ErrInvalidPasskey, ReasonUnknownUser, "")
	}
	return s.finishAssertion(ctx, u, id, response, ip)
}

func (s *Service) finishAssertion(ctx context.Context, u *model.User, id string, response []byte, ip string) (*PasskeyUse, error) {
	if s.wa == nil {
		return nil, ErrPasskeysDisabled
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	key, err := s.admit(ip)
	if err != nil {
		uid := ""
		if u != nil {
			uid = u.ID
		}
		return nil, authErr(ErrThrottled, Reason(err), uid)
	}
	use, err := s.verifyAssertion(ctx, u, id, response, ip)
	s.settle(key, err)
	return use, err
}

func (s *Service) verifyAssertion(ctx context.Context, want *model.User, id string, response []byte, ip string) (*PasskeyUse, error) {
	wantID, purpose := "", ceremonyLogin
	if want != nil {
		wantID, purpose = want.ID, ceremonyMFA
	}
	_, sd, err := s.take(ctx, id, []string{purpose}, wantID)
	if err != nil {
		return nil, err
	}
	if len(response) > MaxWebAuthnResponse {
		return nil, authErr(ErrInvalidPasskey, ReasonPasskeyMalformed, wantID)
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(response)
	if err != nil {
		return nil, authErr(ErrInvalidPasskey, ReasonPasskeyMalformed, wantID)
	}
	// The credential names its account; for a step-up it must be the
	// signed-in user's.
	stored, err := s.store.GetWebAuthnCredential(ctx, parsed.RawID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, authErr(ErrInvalidPasskey, ReasonPasskeyUnknown, wantID)
	} else if err != nil {
		return nil, fmt.Errorf("identity: look up passkey: %w", err)
	}
	if want != nil && stored.UserID != want.ID {
		s.log.WarnContext(ctx, "passkey of another account presented", "user_id", want.ID, "credential_owner", stored.UserID, "ip", ip)
		return nil, authErr(ErrInvalidPasskey, ReasonPasskeyOtherUser, want.ID)
	}
	u, err := s.store.GetUser(ctx, stored.UserID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, authErr(ErrInvalidPasskey, ReasonPasskeyUnknown, wantID)
	} else if err != nil {
		return nil, fmt.Errorf("identity: look up user: %w", err)
	}
	w, _, err := s.waUserOf(ctx, u)
	if err != nil {
		return nil, err
	}
	// The library verifies the assertion (origin, rp id hash, challenge,
	// UP and UV flags, signature, backup-eligible flag unchanged); its
	// counter bookkeeping is redone below under the row lock.
	if want != nil {
		_, err = s.wa.rp.ValidateLogin(w, *sd, parsed)
	} else {
		_, _, err = s.wa.rp.ValidatePasskeyLogin(func(rawID, userHandle []byte) (webauthn.User, error) {
			if !bytes.Equal(userHandle, []byte(u.ID)) {
				return nil, errors.New("user handle does not name the credential's owner")
			}
			return w, nil
		}, *sd, parsed)
	}
	if err != nil {
		reason := protocolReason(err)
		s.log.InfoContext(ctx, "passkey assertion refused", "user_id", u.ID, "ip", ip, "reason", reason, "detail", protocolDetail(err))
		return nil, authErr(ErrInvalidPasskey, reason, u.ID)
	}
	if u.Disabled {
		return nil, authErr(ErrInvalidPasskey, ReasonDisabled, u.ID)
	}
	if locked(u, s.now()) {
		return nil, authErr(ErrLocked, ReasonLocked, u.ID)
	}
	// The counter, checked and advanced under the credential's lock: of
	// two assertions carrying one counter value, one passes.
	presented := parsed.Response.AuthenticatorData.Counter
	flags := parsed.Response.AuthenticatorData.Flags
	var storedCount uint32
	errClone := errors.New("counter regression")
	used, err := s.store.UseWebAuthnCredential(ctx, stored.CredentialID, func(c *model.WebAuthnCredential) error {
		storedCount = c.SignCount
		if (presented != 0 || c.SignCount != 0) && presented <= c.SignCount {
			return errClone
		}
		c.SignCount = presented
		c.BackupState = flags.HasBackupState()
		c.LastUsedAt = s.now()
		return nil
	})
	if errors.Is(err, errClone) {
		s.cloneSuspected(ctx, stored, storedCount, presented, ip)
		return nil, authErr(ErrInvalidPasskey, ReasonPasskeyCounter, u.ID)
	} else if errors.Is(err, store.ErrNotFound) {
		return nil, authErr(ErrInvalidPasskey, ReasonPasskeyUnknown, wantID)
	} else if err != nil {
		return nil, fmt.Errorf("identity: record passkey use: %w", err)
	}
	amr := []string{"hwk", "user", "mfa"}
	if used.BackupEligible {
		// A synced passkey's key leaves the device (RFC 8176 swk).
		amr = []string{"swk", "user", "mfa"}
	}
	return &PasskeyUse{User: u, Credential: used, AMR: amr}, nil
}

// cloneSuspected records a signature counter that did not grow.
func (s *Service) cloneSuspected(ctx context.Context, c *model.WebAuthnCredential, stored, presented uint32, ip string) {
	ctx = context.WithoutCancel(ctx)
	s.log.WarnContext(ctx, "passkey counter went back: possible cloned authenticator", "user_id", c.UserID, "credential", c.ID, "ip", ip)
	ev := &model.Event{Type: model.EventPasskeyCloneSuspected, Actor: "system", UserID: c.UserID, IP: ip,
		Outcome: model.OutcomeFailure, Reason: ReasonPasskeyCounter,
		Data: map[string]string{"credential": c.ID, "stored_count": strconv.FormatUint(uint64(stored), 10), "presented_count": strconv.FormatUint(uint64(presented), 10)}}
	if err := s.events.Emit(ctx, ev); err != nil {
		s.log.ErrorContext(ctx, "publishing passkey.clone_suspected", "err", err)
	}
	h := sha256.Sum256([]byte(c.ID + "\x00" + strconv.FormatUint(uint64(presented), 10)))
	s.detect(ctx, c.UserID, ip, "passkey_clone_suspected", "passkey:"+hex.EncodeToString(h[:16]), model.RiskHigh, "0.80", model.DetectionSourceSignIn,
		"the signature counter of passkey "+c.Name+" went back: two copies of its key may be in use", ev.ID)
}

// detect publishes a risk detection about a user.
func (s *Service) detect(ctx context.Context, userID, ip, typ, id, severity, confidence, source, detail, evidence string) {
	ev := &model.Event{Type: model.EventRiskDetected, Actor: "system", UserID: userID, IP: ip, Reason: typ,
		Data: map[string]string{
			model.DataDetectionID: id, model.DataDetectionSeverity: severity, model.DataDetectionConfidence: confidence,
			model.DataDetectionDetail: detail, model.DataDetectionSource: source, model.DataDetectionEvidence: evidence,
		}}
	if err := s.events.Emit(ctx, ev); err != nil {
		s.log.ErrorContext(ctx, "publishing risk.detected", "type", typ, "err", err)
	}
}

// metadataRefused reports a library error that is (or wraps) a refusal
// by the attestation metadata.
func metadataRefused(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if pe, ok := e.(*protocol.Error); ok && pe.Type == protocol.ErrMetadata.Type {
			return true
		}
	}
	return false
}

// protocolReason maps a library verification error to a reason code.
func protocolReason(err error) string {
	d := strings.ToLower(protocolDetail(err))
	switch {
	case strings.Contains(d, "origin"):
		return ReasonPasskeyWrongOrigin
	case strings.Contains(d, "rp hash"), strings.Contains(d, "rpid"):
		return ReasonPasskeyWrongRP
	case strings.Contains(d, "user verification"):
		return ReasonPasskeyNoUV
	case strings.Contains(d, "challenge"):
		return ReasonPasskeyChallenge
	case strings.Contains(d, "signature"):
		return ReasonPasskeySignature
	case strings.Contains(d, "parse"), strings.Contains(d, "decod"), strings.Contains(d, "unmarshal"), strings.Contains(d, "cbor"):
		return ReasonPasskeyMalformed
	case strings.Contains(d, "credential"):
		return ReasonPasskeyUnknown
	}
	return ReasonPasskeyInvalid
}

// protocolDetail is the library error's text for logs (it names checks,
// never key material).
func protocolDetail(err error) string {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe.Details + ": " + pe.DevInfo
	}
	return err.Error()
}

// ListPasskeys returns a user's WebAuthn credentials, oldest first.
func (s *Service) ListPasskeys(ctx context.Context, userID string) ([]*model.WebAuthnCredential, error) {
	if _, err := s.store.GetUser(ctx, userID); err != nil {
		return nil, fmt.Errorf("identity: user %s: %w", userID, notFound(err))
	}
	return s.store.ListWebAuthnCredentials(ctx, userID)
}

// RemovePasskey removes one of a user's credentials (Ward's id). The
// actor is the user (self-service) or an administrator. It publishes
// mfa.removed (method, credential, name) with the change: a CAEP
// credential-change. ErrNotFound when the user has no such credential.
func (s *Service) RemovePasskey(ctx context.Context, actor, userID, id string) error {
	l, err := s.store.ListWebAuthnCredentials(ctx, userID)
	if err != nil {
		return fmt.Errorf("identity: list passkeys: %w", err)
	}
	i := slices.IndexFunc(l, func(c *model.WebAuthnCredential) bool { return c.ID == id })
	if i < 0 {
		return fmt.Errorf("identity: remove passkey: %w", notFound(fmt.Errorf("%w: passkey %q of user %s", store.ErrNotFound, id, userID)))
	}
	c := l[i]
	ev := &model.Event{Type: model.EventMFARemoved, Actor: actor, UserID: userID,
		Data: map[string]string{"method": methodOf(c), "credential": c.ID, "name": c.Name}}
	ectx := s.events.Pending(ctx, ev, nil)
	if _, err := s.store.DeleteWebAuthnCredential(ectx, userID, id); err != nil {
		return fmt.Errorf("identity: remove passkey: %w", notFound(err))
	}
	s.log.InfoContext(ctx, "passkey removed", "actor", actor, "user_id", userID, "credential", id)
	return s.events.Emit(ectx, ev)
}

func methodOf(c *model.WebAuthnCredential) string {
	if c.Discoverable {
		return MethodPasskey
	}
	return MethodSecurityKey
}

// PasskeyCounts counts the WebAuthn credentials of every user that has
// some, in one read.
func (s *Service) PasskeyCounts(ctx context.Context) (map[string]int, error) {
	return s.store.WebAuthnCredentialCounts(ctx)
}

// RenamePasskey names one of a user's credentials (Ward's id) on behalf
// of actor (the user, self-service, or an administrator). The name is
// trimmed and must be ValidPasskeyName (ErrInvalidInput otherwise). It
// publishes passkey.renamed (credential, name, previous) committed with
// the change. ErrNotFound when the user has no such credential: another
// user's credential is not found either, and keeps its name.
func (s *Service) RenamePasskey(ctx context.Context, actor, userID, id, name string) (*model.WebAuthnCredential, error) {
	name = strings.TrimSpace(name)
	if !ValidPasskeyName(name) {
		return nil, fmt.Errorf("%w: a passkey name is 1 to %d characters, valid UTF-8, without control or bidirectional formatting characters", ErrInvalidInput, MaxPasskeyNameLen)
	}
	l, err := s.store.ListWebAuthnCredentials(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("identity: list passkeys: %w", err)
	}
	i := slices.IndexFunc(l, func(c *model.WebAuthnCredential) bool { return c.ID == id })
	if i < 0 {
		return nil, fmt.Errorf("identity: rename passkey: %w", notFound(fmt.Errorf("%w: passkey %q of user %s", store.ErrNotFound, id, userID)))
	}
	c := l[i]
	ev := &model.Event{Type: model.EventPasskeyRenamed, Actor: actor, UserID: userID,
		Data: map[string]string{"credential": c.ID, "name": name, "previous": c.Name}}
	ectx := s.events.Pending(ctx, ev, nil)
	// The statement names the owner too: a credential removed or moved
	// meanwhile is not found rather than renamed.
	if err := s.store.RenameWebAuthnCredential(ectx, userID, id, name); err != nil {
		return nil, fmt.Errorf("identity: rename passkey: %w", notFound(err))
	}
	s.log.InfoContext(ctx, "passkey renamed", "actor", actor, "user_id", userID, "credential", id)
	c.Name = name
	return c, s.events.Emit(ectx, ev)
}

// ResetPasskeys is the recovery of a user who lost every passkey: an
// administrator removes all of the user's WebAuthn credentials so that
// the user can sign in another way (password, TOTP, a recovery code)
// and enrol new ones. It publishes passkey.recovery (reason admin_reset)
// and mfa.removed (a CAEP credential-change) with the change, and raises
// the user's risk with a risk.detected (source admin, medium): a
// recovery is what an attacker who talked a help desk into it would ask
// for too. It returns how many credentials were removed.
func (s *Service) ResetPasskeys(ctx context.Context, actor, userID, reason string) (int, error) {
	if _, err := s.store.GetUser(ctx, userID); err != nil {
		return 0, fmt.Errorf("identity: user %s: %w", userID, notFound(err))
	}
	rec := &model.Event{Type: model.EventPasskeyRecovery, Actor: actor, UserID: userID, Reason: "admin_reset",
		Data: map[string]string{"fallback": "admin"}}
	if reason != "" {
		rec.Data["note"] = truncate(reason, 200)
	}
	rm := &model.Event{Type: model.EventMFARemoved, Actor: actor, UserID: userID, Data: map[string]string{"method": MethodPasskey, "reason": "recovery"}}
	// The store reports the ids it deleted: the events say how many.
	ectx := s.events.PendingEvents(ctx, func(ids []string) []*model.Event {
		rec.Data["removed"] = strconv.Itoa(len(ids))
		rm.Data["count"] = strconv.Itoa(len(ids))
		return []*model.Event{rec, rm}
	})
	n, err := s.store.DeleteWebAuthnCredentials(ectx, userID)
	if err != nil {
		return 0, fmt.Errorf("identity: reset passkeys: %w", notFound(err))
	}
	s.log.WarnContext(ctx, "passkeys reset for recovery", "actor", actor, "user_id", userID, "removed", n)
	err = errors.Join(s.events.Emit(ectx, rec), s.events.Emit(ectx, rm))
	s.detect(ctx, userID, "", "passkey_recovery", "passkey-recovery:"+rec.ID, model.RiskMedium, "1.00", model.DetectionSourceAdmin,
		"an administrator reset the user's passkeys (account recovery)", rec.ID)
	return n, err
}

// PasskeyFallbackUsed records that a user who could not use a passkey
// where one was required signed in with the configured fallback (a
// recovery code) to add a new one: passkey.recovery (reason fallback) and
// a risk detection (source signin, medium) about the user.
func (s *Service) PasskeyFallbackUsed(ctx context.Context, userID, fallback, ip string) error {
	ctx = context.WithoutCancel(ctx)
	ev := &model.Event{Type: model.EventPasskeyRecovery, Actor: userID, UserID: userID, IP: ip, Reason: "fallback",
		Data: map[string]string{"fallback": fallback}}
	err := s.events.Emit(ctx, ev)
	s.log.WarnContext(ctx, "passkey recovery fallback used", "user_id", userID, "fallback", fallback, "ip", ip)
	s.detect(ctx, userID, ip, "passkey_recovery", "passkey-recovery:"+ev.ID, model.RiskMedium, "0.70", model.DetectionSourceSignIn,
		"the user signed in with "+fallback+" instead of a passkey to add a new one", ev.ID)
	return err
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}

// ParseMetadataBLOB verifies a FIDO Metadata Service BLOB (the signed
// JWT the operator downloads from mds3.fidoalliance.org) against the FIDO
// Alliance's root certificate and returns the provider that checks
// attestation statements under AttestationAllowList: the attestation
// must chain to the metadata's trust anchors for the authenticator's
// AAGUID, and an authenticator the metadata marks compromised is refused.
func ParseMetadataBLOB(blob []byte) (metadata.Provider, error) {
	d, err := metadata.NewDecoder(metadata.WithIgnoreEntryParsingErrors())
	if err != nil {
		return nil, err
	}
	p, err := d.DecodeBytes(blob)
	if err != nil {
		return nil, fmt.Errorf("identity: FIDO metadata BLOB: %w", err)
	}
	m, err := d.Parse(p)
	if err != nil {
		return nil, fmt.Errorf("identity: FIDO metadata BLOB: %w", err)
	}
	return memory.New(memory.WithMetadata(m.ToMap()), memory.WithValidateEntry(true), memory.WithValidateTrustAnchor(true), memory.WithValidateStatus(true))
}
