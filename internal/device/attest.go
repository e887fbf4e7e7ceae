package device

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/internal/tpmattest"
	"github.com/ward-idp/ward/jws"
)

// Key attestation: a device proves that its key lives in a TPM (TPM 2.0),
// in two requests. At registration it sends the evidence (Attestation):
// Ward verifies it (internal/tpmattest) and registers the device with the
// key not attested yet, answering with a Challenge: a secret encrypted to
// the TPM's endorsement key and bound to the attestation key's name. The
// device's TPM recovers the secret only if the attestation key is in the
// TPM holding the endorsement key; the device sends it back
// (ActivateAttestation) and the key becomes attested.
//
// The challenge's server side travels with it, sealed (AES-256-GCM under a
// key derived from the KEK, bound to the device id): the device id, its
// key, the expiry, a hash of the secret and what the verification
// established. Every instance sharing the KEK accepts it, and nothing is
// stored until the device answers. It is one-time: the answer commits the
// attestation in the same row update that refuses a device already
// attested, and a device gets one challenge, at registration.

// KeyMethodTPM2 is the key attestation method of TPM 2.0 devices.
const KeyMethodTPM2 = "tpm2"

// KeyStorageTPM is the key storage the agent reports for a TPM key.
const KeyStorageTPM = "tpm"

// DefaultAttestationTTL is how long a device has to answer its challenge.
const DefaultAttestationTTL = 5 * time.Minute

// Reasons an attestation is refused (AttestationError.Reason, the Reason
// of device.key_attestation_rejected events): those of tpmattest and
// these. Never rename one, only add.
const (
	ReasonAttestationMalformed = tpmattest.ReasonMalformed
	// ReasonInvalidChallenge: the challenge state was not issued for this
	// device (or was altered).
	ReasonInvalidChallenge = "invalid_challenge"
	// ReasonChallengeExpired: the challenge is older than the
	// attestation TTL, or the nonce of the evidence is.
	ReasonChallengeExpired = "stale"
	// ReasonWrongSecret: the answer is not the challenge's secret.
	ReasonWrongSecret = "wrong_secret"
	// ReasonAlreadyAttested: the challenge was answered before (a
	// replay), or the device is attested already.
	ReasonAlreadyAttested = "replayed"
	// ReasonNotTPM: evidence sent for a key the agent does not report as
	// a TPM key.
	ReasonNotTPM = "not_tpm"
)

// AttestationError is a refused attestation. Message is safe to show to
// the device; Reason is stable.
type AttestationError struct {
	Reason  string
	Message string
	Err     error // cause, for logs
}

func (e *AttestationError) Error() string {
	return "key attestation refused (" + e.Reason + "): " + e.Message
}
func (e *AttestationError) Unwrap() error { return e.Err }

// Attestation is the TPM 2.0 key attestation evidence a device sends with
// its registration.
type Attestation struct {
	// Nonce is a nonce from Nonce(); the certification's qualifying data
	// is its SHA-256 digest.
	Nonce string
	tpmattest.Params
}

// Challenge is what the device's TPM must answer (TPM2_ActivateCredential).
type Challenge struct {
	CredentialBlob  []byte // contents of a TPM2B_ID_OBJECT
	EncryptedSecret []byte // contents of a TPM2B_ENCRYPTED_SECRET
	// State is Ward's side of the challenge, sealed; the device sends it
	// back unchanged.
	State     string
	ExpiresAt time.Time
}

// KeyAttestation is what Ward verified about where a device key lives
// (model.Device.KeyAttestation).
type KeyAttestation struct {
	Method     string    `json:"method"`
	AttestedAt time.Time `json:"attested_at"`
	// EKSHA256 is the hex SHA-256 of the TPM's endorsement key
	// (SubjectPublicKeyInfo): it identifies the TPM.
	EKSHA256 string `json:"ek_sha256"`
	// EKCertified: the endorsement key's certificate chains to a TPM
	// vendor CA configured in devices.tpm_ek_ca_file. Without it, any
	// TPM, a software one included, could have answered.
	EKCertified bool   `json:"ek_certified"`
	EKIssuer    string `json:"ek_issuer,omitempty"`
}

// DecodeKeyAttestation returns the verified facts of an attested device's
// key, or nil when the key is not attested.
func DecodeKeyAttestation(d *model.Device) *KeyAttestation {
	if !d.KeyAttested {
		return nil
	}
	var a KeyAttestation
	if err := json.Unmarshal(d.KeyAttestation, &a); err != nil {
		return &KeyAttestation{Method: "unreadable"}
	}
	return &a
}

// DescribeKey says in words where a device's key lives and what Ward
// verified of it.
func DescribeKey(d *model.Device) string {
	storage := d.KeyStorage
	if storage == "" {
		storage = "unknown storage"
	}
	a := DecodeKeyAttestation(d)
	switch {
	case a == nil:
		return storage + " (not attested: the agent's claim)"
	case a.EKCertified:
		return storage + " (attested: TPM 2.0, endorsement key certified by " + a.EKIssuer + ")"
	default:
		return storage + " (attested: TPM 2.0; the endorsement key is not chained to a trusted TPM vendor)"
	}
}

// attestationAAD binds a sealed challenge to its device.
func attestationAAD(deviceID string) []byte {
	return []byte("ward-device-attestation\x00" + deviceID)
}

// challengeState is the sealed server side of a challenge.
type challengeState struct {
	DeviceID   string `json:"d"`
	JKT        string `json:"k"`
	Expires    int64  `json:"e"` // Unix seconds
	SecretHash []byte `json:"h"`
	EK         string `json:"ek"`
	Certified  bool   `json:"c,omitempty"`
	Issuer     string `json:"i,omitempty"`
}

// maxState bounds the sealed state a device sends back.
const maxState = 2048

func (s *Service) aead() (cipher.AEAD, error) {
	b, err := aes.NewCipher(s.attestKey)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func (s *Service) seal(st *challengeState) (string, error) {
	a, err := s.aead()
	if err != nil {
		return "", err
	}
	pt, err := json.Marshal(st)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, a.NonceSize(), a.NonceSize()+len(pt)+a.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(a.Seal(nonce, nonce, pt, attestationAAD(st.DeviceID))), nil
}

func (s *Service) open(deviceID, state string) (*challengeState, error) {
	bad := &AttestationError{Reason: ReasonInvalidChallenge, Message: "the challenge state was not issued for this device"}
	if state == "" || len(state) > maxState {
		return nil, bad
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(state)
	if err != nil {
		return nil, bad
	}
	a, err := s.aead()
	if err != nil {
		return nil, err
	}
	if len(raw) < a.NonceSize()+a.Overhead() {
		return nil, bad
	}
	pt, err := a.Open(nil, raw[:a.NonceSize()], raw[a.NonceSize():], attestationAAD(deviceID))
	if err != nil {
		return nil, bad
	}
	var st challengeState
	if err := json.Unmarshal(pt, &st); err != nil || st.DeviceID != deviceID {
		return nil, bad
	}
	return &st, nil
}

// attestationQualifyingData is what the certification must carry for a
// nonce: its SHA-256 digest (a TPM2B_DATA holds at most a digest).
func attestationQualifyingData(nonce string) []byte {
	h := sha256.Sum256([]byte(nonce))
	return h[:]
}

// verifyAttestation checks the evidence of a registration for the device
// key jwk (canonical form), before anything is stored.
func (s *Service) verifyAttestation(a *Attestation, keyStorage string, jwk json.RawMessage) (*tpmattest.Result, error) {
	if keyStorage != KeyStorageTPM {
		return nil, &AttestationError{Reason: ReasonNotTPM, Message: `TPM key attestation needs key_storage "tpm"`}
	}
	if a.Nonce == "" || len(a.Nonce) > 256 || !s.nonces.Check(a.Nonce) {
		return nil, &AttestationError{Reason: ReasonChallengeExpired,
			Message: "the attestation's nonce is invalid or expired; fetch a fresh nonce (GET /devices/nonce) and certify the key again"}
	}
	k, err := jws.ParseJWK(jwk, jws.ES256)
	if err != nil {
		return nil, fmt.Errorf("device: parse a checked key: %w", err)
	}
	pub, ok := k.Key.(*ecdsa.PublicKey)
	if !ok {
		return nil, errors.New("device: a checked key is not ECDSA")
	}
	res, err := s.verifier.Verify(&a.Params, pub, attestationQualifyingData(a.Nonce))
	if err != nil {
		if te, ok := errors.AsType[*tpmattest.Error](err); ok {
			return nil, &AttestationError{Reason: te.Reason, Message: te.Message, Err: err}
		}
		return nil, fmt.Errorf("device: verify attestation: %w", err)
	}
	return res, nil
}

// challenge makes the credential challenge for a registered device d.
func (s *Service) challenge(d *model.Device, res *tpmattest.Result) (*Challenge, error) {
	secret := make([]byte, tpmattest.SecretSize)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	blob, enc, err := res.MakeCredential(secret)
	if err != nil {
		return nil, fmt.Errorf("device: make credential: %w", err)
	}
	exp := s.now().Add(s.attestTTL).Truncate(time.Second)
	h := sha256.Sum256(secret)
	state, err := s.seal(&challengeState{DeviceID: d.ID, JKT: d.JKT, Expires: exp.Unix(), SecretHash: h[:],
		EK: res.EKFingerprint, Certified: res.EKCertified, Issuer: res.EKIssuer})
	if err != nil {
		return nil, fmt.Errorf("device: seal challenge: %w", err)
	}
	return &Challenge{CredentialBlob: blob, EncryptedSecret: enc, State: state, ExpiresAt: exp}, nil
}

// ActivateAttestation completes a device's key attestation with the
// secret its TPM recovered from the registration's challenge (state as
// issued). The key becomes attested and compliance is re-evaluated. It
// publishes device.key_attested (and device.compliance_changed when the
// state changed); a refusal publishes device.key_attestation_rejected,
// changes nothing and returns an *AttestationError.
func (s *Service) ActivateAttestation(ctx context.Context, deviceID, state string, secret []byte) (*model.Device, error) {
	d, err := s.activate(ctx, deviceID, state, secret)
	if ae, ok := errors.AsType[*AttestationError](err); ok {
		s.attestationRejected(ctx, deviceID, d, ae)
		return nil, err
	}
	return d, err
}

func (s *Service) attestationRejected(ctx context.Context, deviceID string, d *model.Device, ae *AttestationError) {
	ev := &model.Event{Type: model.EventDeviceKeyAttestationRejected, Actor: deviceActor(d), DeviceID: truncate(deviceID, 64),
		Outcome: model.OutcomeFailure, Reason: ae.Reason}
	if d != nil {
		ev.UserID = d.UserID
	}
	s.log.WarnContext(ctx, "key attestation refused", "device_id", ev.DeviceID, "reason", ae.Reason, "err", ae.Err)
	// The refusal stands whatever the event store says; the emitter logs
	// a failure to record it.
	_ = s.events.Emit(ctx, ev)
}

func (s *Service) activate(ctx context.Context, deviceID, state string, secret []byte) (*model.Device, error) {
	d, err := s.store.GetDevice(ctx, deviceID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, wrapNotFound(err, "device "+deviceID)
	} else if err != nil {
		return nil, fmt.Errorf("device: get %s: %w", deviceID, err)
	}
	st, err := s.open(deviceID, state)
	if err != nil {
		return d, err
	}
	now := s.now()
	if st.JKT != d.JKT {
		return d, &AttestationError{Reason: ReasonInvalidChallenge, Message: "the challenge was issued for another key"}
	}
	if !now.Before(time.Unix(st.Expires, 0)) {
		return d, &AttestationError{Reason: ReasonChallengeExpired,
			Message: "the challenge expired; enrol the device again to attest its key"}
	}
	if d.Status != model.DeviceActive {
		return d, &AttestationError{Reason: ReasonDeviceInactive, Message: "the device is " + d.Status}
	}
	h := sha256.Sum256(secret)
	if len(secret) != tpmattest.SecretSize || subtle.ConstantTimeCompare(h[:], st.SecretHash) != 1 {
		return d, &AttestationError{Reason: ReasonWrongSecret,
			Message: "the answer is not the challenge's secret: the attestation key is not in the TPM of the endorsement key"}
	}
	att, err := json.Marshal(KeyAttestation{Method: KeyMethodTPM2, AttestedAt: now.UTC(), EKSHA256: st.EK,
		EKCertified: st.Certified, EKIssuer: st.Issuer})
	if err != nil {
		return d, err
	}
	rules, havePolicy, err := s.rulesFor(ctx, d.Platform)
	if err != nil {
		return d, err
	}
	var prev, after string
	var fs []Failure
	// device.key_attested, and device.compliance_changed when the
	// attestation changes the compliance state, commit with the update.
	kev := &model.Event{Type: model.EventDeviceKeyAttested, Actor: d.UserID, UserID: d.UserID, DeviceID: d.ID,
		Data: map[string]string{"method": KeyMethodTPM2, "ek_sha256": st.EK, "ek_certified": strconv.FormatBool(st.Certified), "ek_issuer": st.Issuer}}
	cev := &model.Event{Type: model.EventDeviceComplianceChanged, Actor: d.UserID}
	ectx := s.events.PendingEvents(ctx, func([]string) []*model.Event {
		if prev != after {
			return []*model.Event{kev, cev}
		}
		return []*model.Event{kev}
	})
	nd, err := s.store.UpdateDevice(ectx, d.ID, func(cur *model.Device) error {
		switch {
		case cur.KeyAttested:
			// One challenge per device, answered once: the row lock makes
			// a concurrent second answer find the first.
			return &AttestationError{Reason: ReasonAlreadyAttested, Message: "the device's key is attested already; a challenge is answered once"}
		case cur.JKT != st.JKT:
			return &AttestationError{Reason: ReasonInvalidChallenge, Message: "the challenge was issued for another key"}
		case cur.Status != model.DeviceActive:
			return &AttestationError{Reason: ReasonDeviceInactive, Message: "the device is " + cur.Status}
		}
		prev = cur.Compliance
		cur.KeyAttested, cur.KeyAttestation, cur.UpdatedAt = true, att, now
		var stt string
		stt, fs = s.evaluate(cur, storedPosture(cur), rules, havePolicy, now)
		cur.Compliance, cur.ComplianceFailures, cur.ComplianceAt = stt, encodeFailures(fs), now
		after = cur.Compliance
		fillComplianceChanged(cev, cur, prev, fs)
		return nil
	})
	if err != nil {
		if ae, ok := errors.AsType[*AttestationError](err); ok {
			return d, ae
		}
		return d, wrapNotFound(err, "device "+deviceID)
	}
	s.log.InfoContext(ctx, "device key attested", "device_id", nd.ID, "ek_certified", st.Certified)
	errs := []error{s.events.Emit(ectx, kev)}
	if prev != nd.Compliance {
		errs = append(errs, s.publishComplianceChanged(ectx, cev, nd, prev))
	}
	return nd, errors.Join(errs...)
}
