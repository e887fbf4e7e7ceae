// Package webauthntest is a software WebAuthn authenticator for tests: it
// answers navigator.credentials.create and get options (as the server's
// JSON) the way a browser and a real authenticator would, with a real
// ECDSA P-256 key, real CBOR authenticator data and attestation objects,
// real signatures and a signature counter. Every part of what it sends
// can be altered to play an attacker (another origin, another rp id, no
// user verification, a counter that goes back, a replayed answer).
package webauthntest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"time"
)

var b64 = base64.RawURLEncoding

// Authenticator is one software authenticator holding credentials.
type Authenticator struct {
	// Origin is what the "browser" writes into clientDataJSON.
	Origin string
	// RPID, when set, replaces the rp id the options name in the
	// authenticator data's hash (an authenticator fooled about the site).
	RPID string
	// NoUV leaves the user-verified flag unset.
	NoUV bool
	// BackupEligible and BackupState set the BE and BS flags (a synced
	// passkey).
	BackupEligible, BackupState bool
	// AAGUID of the authenticator model (zero by default).
	AAGUID [16]byte
	// Attachment reported (platform by default).
	Attachment string
	// Reuse, when set, makes Create present this existing credential's
	// id and key again (a client claiming someone else's credential).
	Reuse *Credential
	// SelfAttest makes Create send a "packed" self attestation (signed
	// with the credential's own key) instead of "none".
	SelfAttest bool
	// Attestation, when set, makes Create send a "packed" full
	// attestation signed by this certificate's key, the certificate in
	// x5c (a model's attestation certificate, see NewAttestation).
	Attestation *Attestation

	creds []*Credential
}

// Credential is one key pair the authenticator created.
type Credential struct {
	ID         []byte
	Key        *ecdsa.PrivateKey
	RPID       string
	UserHandle []byte
	// Counter is the signature counter; Get adds one before signing
	// unless FixedCounter is set (then it sends Counter as it is).
	Counter      uint32
	FixedCounter bool
}

// New returns an authenticator whose browser is at origin.
func New(origin string) *Authenticator {
	return &Authenticator{Origin: origin, Attachment: "platform"}
}

// Credentials returns the credentials created so far.
func (a *Authenticator) Credentials() []*Credential { return a.creds }

type creationOptions struct {
	PublicKey struct {
		Challenge string `json:"challenge"`
		RP        struct {
			ID string `json:"id"`
		} `json:"rp"`
		User struct {
			ID string `json:"id"`
		} `json:"user"`
		ExcludeCredentials []struct {
			ID string `json:"id"`
		} `json:"excludeCredentials"`
	} `json:"publicKey"`
}

type requestOptions struct {
	PublicKey struct {
		Challenge        string `json:"challenge"`
		RPID             string `json:"rpId"`
		AllowCredentials []struct {
			ID string `json:"id"`
		} `json:"allowCredentials"`
	} `json:"publicKey"`
}

// Create answers creation options (navigator.credentials.create): a new
// P-256 key, "none" attestation. It returns the JSON a browser posts.
func (a *Authenticator) Create(options []byte) ([]byte, *Credential, error) {
	var o creationOptions
	if err := json.Unmarshal(options, &o); err != nil {
		return nil, nil, fmt.Errorf("webauthntest: creation options: %w", err)
	}
	user, err := b64.DecodeString(o.PublicKey.User.ID)
	if err != nil || o.PublicKey.Challenge == "" || o.PublicKey.RP.ID == "" {
		return nil, nil, errors.New("webauthntest: creation options without challenge, rp id or user id")
	}
	for _, ex := range o.PublicKey.ExcludeCredentials {
		for _, c := range a.creds {
			if ex.ID == b64.EncodeToString(c.ID) {
				return nil, nil, errors.New("webauthntest: InvalidStateError: the authenticator already holds an excluded credential")
			}
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	id := make([]byte, 32)
	rand.Read(id)
	if a.Reuse != nil {
		id, key = a.Reuse.ID, a.Reuse.Key
	}
	c := &Credential{ID: id, Key: key, RPID: o.PublicKey.RP.ID, UserHandle: user}
	clientData := a.clientData("webauthn.create", o.PublicKey.Challenge)
	authData := a.authData(c.RPID, 0x01|0x40, 0)
	var att bytes.Buffer
	att.Write(a.AAGUID[:])
	binary.Write(&att, binary.BigEndian, uint16(len(id)))
	att.Write(id)
	att.Write(COSEKey(&key.PublicKey))
	authData = append(authData, att.Bytes()...)
	format, stmt := "none", map[any]any{}
	if at := a.Attestation; at != nil {
		sig, err := Sign(at.Key, authData, clientData)
		if err != nil {
			return nil, nil, err
		}
		format, stmt = "packed", map[any]any{"alg": -7, "sig": sig, "x5c": []any{at.Cert}}
	} else if a.SelfAttest {
		sig, err := Sign(key, authData, clientData)
		if err != nil {
			return nil, nil, err
		}
		format, stmt = "packed", map[any]any{"alg": -7, "sig": sig}
	}
	attObj := EncodeCBOR(map[any]any{"fmt": format, "attStmt": stmt, "authData": authData})
	resp := map[string]any{
		"id": b64.EncodeToString(id), "rawId": b64.EncodeToString(id), "type": "public-key",
		"authenticatorAttachment": a.Attachment,
		"response": map[string]any{
			"clientDataJSON": b64.EncodeToString(clientData), "attestationObject": b64.EncodeToString(attObj),
			"transports": []string{"internal"},
		},
		"clientExtensionResults": map[string]any{},
	}
	out, err := json.Marshal(resp)
	if err != nil {
		return nil, nil, err
	}
	a.creds = append(a.creds, c)
	return out, c, nil
}

// Get answers request options (navigator.credentials.get) with c, or
// with the first credential for the options' rp id (allowed, if the
// options list some) when c is nil.
func (a *Authenticator) Get(options []byte, c *Credential) ([]byte, error) {
	var o requestOptions
	if err := json.Unmarshal(options, &o); err != nil {
		return nil, fmt.Errorf("webauthntest: request options: %w", err)
	}
	if c == nil {
		for _, x := range a.creds {
			if x.RPID != o.PublicKey.RPID {
				continue
			}
			if len(o.PublicKey.AllowCredentials) > 0 && !allowed(o, x) {
				continue
			}
			c = x
			break
		}
	}
	if c == nil {
		return nil, errors.New("webauthntest: NotAllowedError: no credential for these options")
	}
	if !c.FixedCounter {
		c.Counter++
	}
	clientData := a.clientData("webauthn.get", o.PublicKey.Challenge)
	rpID := o.PublicKey.RPID
	if rpID == "" {
		rpID = c.RPID
	}
	authData := a.authData(rpID, 0x01, c.Counter)
	sig, err := Sign(c.Key, authData, clientData)
	if err != nil {
		return nil, err
	}
	resp := map[string]any{
		"id": b64.EncodeToString(c.ID), "rawId": b64.EncodeToString(c.ID), "type": "public-key",
		"authenticatorAttachment": a.Attachment,
		"response": map[string]any{
			"clientDataJSON": b64.EncodeToString(clientData), "authenticatorData": b64.EncodeToString(authData),
			"signature": b64.EncodeToString(sig), "userHandle": b64.EncodeToString(c.UserHandle),
		},
		"clientExtensionResults": map[string]any{},
	}
	return json.Marshal(resp)
}

func allowed(o requestOptions, c *Credential) bool {
	for _, x := range o.PublicKey.AllowCredentials {
		if x.ID == b64.EncodeToString(c.ID) {
			return true
		}
	}
	return false
}

// Attestation is an authenticator model's attestation key and
// certificate, issued by Root (the trust anchor an operator's metadata
// names).
type Attestation struct {
	Root    *x509.Certificate
	RootDER []byte
	Cert    []byte // DER
	Key     *ecdsa.PrivateKey
}

// NewAttestation makes a root CA and an attestation certificate for the
// model aaguid as WebAuthn §8.2.1 wants them for "packed": version 3,
// subject C, O, OU "Authenticator Attestation", CN, not a CA, and the
// id-fido-gen-ce-aaguid extension (1.3.6.1.4.1.45724.1.1.4) holding the
// AAGUID.
func NewAttestation(aaguid [16]byte) (*Attestation, error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	root := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Attestation Root", Organization: []string{"Ward tests"}, Country: []string{"SE"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, root, root, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	rootCert, err := x509.ParseCertificate(rootDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ext, err := asn1.Marshal(aaguid[:])
	if err != nil {
		return nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: "Test Authenticator", Organization: []string{"Ward tests"}, Country: []string{"SE"},
			OrganizationalUnit: []string{"Authenticator Attestation"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), BasicConstraintsValid: true, IsCA: false,
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 45724, 1, 1, 4}, Value: ext}},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, rootCert, &key.PublicKey, rootKey)
	if err != nil {
		return nil, err
	}
	return &Attestation{Root: rootCert, RootDER: rootDER, Cert: der, Key: key}, nil
}

// Sign is the assertion signature: ECDSA P-256 with SHA-256 over
// authenticatorData || SHA-256(clientDataJSON), ASN.1 DER.
func Sign(key *ecdsa.PrivateKey, authData, clientData []byte) ([]byte, error) {
	ch := sha256.Sum256(clientData)
	h := sha256.Sum256(append(append([]byte{}, authData...), ch[:]...))
	return ecdsa.SignASN1(rand.Reader, key, h[:])
}

func (a *Authenticator) clientData(typ, challenge string) []byte {
	b, _ := json.Marshal(map[string]any{"type": typ, "challenge": challenge, "origin": a.Origin, "crossOrigin": false})
	return b
}

// authData is rpIdHash || flags || signCount (attested data appended by
// the caller); UV, BE and BS follow the authenticator's settings.
func (a *Authenticator) authData(rpID string, flags byte, counter uint32) []byte {
	if a.RPID != "" {
		rpID = a.RPID
	}
	if !a.NoUV {
		flags |= 0x04
	}
	if a.BackupEligible {
		flags |= 0x08
	}
	if a.BackupState {
		flags |= 0x10
	}
	h := sha256.Sum256([]byte(rpID))
	out := append([]byte{}, h[:]...)
	out = append(out, flags)
	return binary.BigEndian.AppendUint32(out, counter)
}

// COSEKey encodes a P-256 public key as a COSE_Key (RFC 9053: kty EC2,
// alg ES256, crv P-256, x, y).
func COSEKey(pub *ecdsa.PublicKey) []byte {
	x := pad32(pub.X)
	y := pad32(pub.Y)
	return EncodeCBOR(map[any]any{1: 2, 3: -7, -1: 1, -2: x, -3: y})
}

func pad32(n *big.Int) []byte {
	b := n.Bytes()
	out := make([]byte, 32)
	copy(out[32-len(b):], b)
	return out
}

// EncodeCBOR encodes the subset of CBOR (RFC 8949) WebAuthn uses: ints,
// byte and text strings, arrays and maps (keys in canonical order: length
// first, then bytes, as CTAP2 requires).
func EncodeCBOR(v any) []byte {
	var b bytes.Buffer
	encode(&b, v)
	return b.Bytes()
}

func head(b *bytes.Buffer, major byte, n uint64) {
	switch {
	case n < 24:
		b.WriteByte(major<<5 | byte(n))
	case n <= 0xff:
		b.WriteByte(major<<5 | 24)
		b.WriteByte(byte(n))
	case n <= 0xffff:
		b.WriteByte(major<<5 | 25)
		binary.Write(b, binary.BigEndian, uint16(n))
	case n <= 0xffffffff:
		b.WriteByte(major<<5 | 26)
		binary.Write(b, binary.BigEndian, uint32(n))
	default:
		b.WriteByte(major<<5 | 27)
		binary.Write(b, binary.BigEndian, n)
	}
}

func encode(b *bytes.Buffer, v any) {
	switch x := v.(type) {
	case int:
		if x >= 0 {
			head(b, 0, uint64(x))
		} else {
			head(b, 1, uint64(-1-x))
		}
	case []byte:
		head(b, 2, uint64(len(x)))
		b.Write(x)
	case string:
		head(b, 3, uint64(len(x)))
		b.WriteString(x)
	case []any:
		head(b, 4, uint64(len(x)))
		for _, e := range x {
			encode(b, e)
		}
	case map[any]any:
		type kv struct{ k, v []byte }
		var kvs []kv
		for k, e := range x {
			kvs = append(kvs, kv{EncodeCBOR(k), EncodeCBOR(e)})
		}
		sort.Slice(kvs, func(i, j int) bool {
			if len(kvs[i].k) != len(kvs[j].k) {
				return len(kvs[i].k) < len(kvs[j].k)
			}
			return bytes.Compare(kvs[i].k, kvs[j].k) < 0
		})
		head(b, 5, uint64(len(kvs)))
		for _, e := range kvs {
			b.Write(e.k)
			b.Write(e.v)
		}
	default:
		panic(fmt.Sprintf("webauthntest: cannot encode %T", v))
	}
}
