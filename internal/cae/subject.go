package cae

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Subject is a subject identifier (RFC 9493) or an SSF complex subject
// (SSF 1.0 §3.2) as Ward emits them: users as iss_sub, sessions and
// devices as opaque ids, the tenant as an opaque id.
type Subject struct {
	Format string `json:"format"`
	ID     string `json:"id,omitempty"`  // opaque
	Iss    string `json:"iss,omitempty"` // iss_sub
	Sub    string `json:"sub,omitempty"` // iss_sub
	JTI    string `json:"jti,omitempty"` // jwt_id (with Iss)
	Email  string `json:"email,omitempty"`
	// Identifiers are the members of an aliases subject (RFC 9493 §3.2.8).
	Identifiers []*Subject `json:"identifiers,omitempty"`
	User        *Subject   `json:"user,omitempty"`
	Session     *Subject   `json:"session,omitempty"`
	Device      *Subject   `json:"device,omitempty"`
	Tenant      *Subject   `json:"tenant,omitempty"`
}

// Subject formats.
const (
	FormatOpaque  = "opaque"
	FormatIssSub  = "iss_sub"
	FormatComplex = "complex"
	FormatJWTID   = "jwt_id"
)

func userSubject(iss, id string) *Subject { return &Subject{Format: FormatIssSub, Iss: iss, Sub: id} }

// FormatAliases is RFC 9493's list of identifiers of one subject.
const FormatAliases = "aliases"

// userAliases names a user by iss_sub and, when the user has one, email
// (Options.UserEmailAlias). A user that is gone (account-purged) keeps
// iss_sub alone.
func (s *Service) userAliases(ctx context.Context, id string) *Subject {
	sub := userSubject(s.issuer, id)
	u, err := s.o.Store.GetUser(ctx, id)
	if err != nil || u.Email == "" {
		return sub
	}
	return &Subject{Format: FormatAliases, Identifiers: []*Subject{sub, {Format: "email", Email: u.Email}}}
}

// withoutAliases replaces aliases subjects (also complex members) by
// their first identifier, the user's iss_sub: which SETs a stream
// excludes does not depend on UserEmailAlias.
func withoutAliases(s *Subject) *Subject {
	if s == nil {
		return nil
	}
	if s.Format == FormatAliases && len(s.Identifiers) > 0 {
		return s.Identifiers[0]
	}
	if s.Format != FormatComplex || s.User == nil || s.User.Format != FormatAliases {
		return s
	}
	c := *s
	c.User = withoutAliases(s.User)
	return &c
}
func opaqueSubject(id string) *Subject { return &Subject{Format: FormatOpaque, ID: id} }

// maxSubjectSize bounds a subject a receiver adds or removes, and
// maxExcluded the subjects one stream may exclude.
const (
	maxSubjectSize = 4 << 10
	maxExcluded    = 1000
)

// subjectMatcher is a subject in canonical form: a simple subject's
// canonical JSON, or a complex subject's members' canonical JSON.
type subjectMatcher struct {
	simple  string
	members map[string]string
}

// simpleFormats lists the RFC 9493 and SSF formats a receiver may name,
// with their required string members.
var simpleFormats = map[string][]string{
	"opaque":            {"id"},
	"iss_sub":           {"iss", "sub"},
	"email":             {"email"},
	"phone_number":      {"phone_number"},
	"account":           {"uri"},
	"uri":               {"uri"},
	"did":               {"url"},
	"jwt_id":            {"iss", "jti"},
	"saml_assertion_id": {"issuer", "assertion_id"},
	"ip-addresses":      nil,
	"aliases":           nil,
}

var errSubject = errors.New("invalid subject")

// parseSubject checks a receiver-supplied subject and returns its
// canonical JSON (members sorted, whitespace removed) and its matcher.
// Unknown simple formats are accepted as proprietary (SSF 1.0 §3.5) when
// they are objects of strings.
func parseSubject(raw json.RawMessage) (string, subjectMatcher, error) {
	if len(raw) == 0 || len(raw) > maxSubjectSize {
		return "", subjectMatcher{}, fmt.Errorf("%w: missing or larger than %d bytes", errSubject, maxSubjectSize)
	}
	var obj map[string]json.RawMessage
	if err := strictObject(raw, &obj); err != nil {
		return "", subjectMatcher{}, fmt.Errorf("%w: %v", errSubject, err)
	}
	format, err := stringMember(obj, "format")
	if err != nil || format == "" {
		return "", subjectMatcher{}, fmt.Errorf("%w: format must be a non-empty string", errSubject)
	}
	if format != FormatComplex {
		c, err := canonicalSimple(obj, format)
		if err != nil {
			return "", subjectMatcher{}, err
		}
		return c, subjectMatcher{simple: c}, nil
	}
	m := subjectMatcher{members: map[string]string{}}
	for name, v := range obj {
		if name == "format" {
			continue
		}
		var mo map[string]json.RawMessage
		if err := strictObject(v, &mo); err != nil {
			return "", subjectMatcher{}, fmt.Errorf("%w: complex member %q is not an object", errSubject, name)
		}
		mf, err := stringMember(mo, "format")
		if err != nil || mf == "" || mf == FormatComplex {
			return "", subjectMatcher{}, fmt.Errorf("%w: complex member %q needs a simple format", errSubject, name)
		}
		c, err := canonicalSimple(mo, mf)
		if err != nil {
			return "", subjectMatcher{}, err
		}
		m.members[name] = c
	}
	if len(m.members) == 0 {
		return "", subjectMatcher{}, fmt.Errorf("%w: a complex subject needs at least one member", errSubject)
	}
	names := make([]string, 0, len(m.members))
	for n := range m.members {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	b.WriteString(`{"format":"complex"`)
	for _, n := range names {
		k, _ := json.Marshal(n)
		b.WriteString("," + string(k) + ":" + m.members[n])
	}
	b.WriteString("}")
	return b.String(), m, nil
}

// canonicalSimple validates a simple subject and marshals it with sorted
// members.
func canonicalSimple(obj map[string]json.RawMessage, format string) (string, error) {
	required, known := simpleFormats[format]
	switch format {
	case "ip-addresses":
		var l []string
		if json.Unmarshal(obj["ip-addresses"], &l) != nil || len(l) == 0 {
			return "", fmt.Errorf("%w: ip-addresses needs a non-empty array of strings", errSubject)
		}
	case "aliases":
		var l []json.RawMessage
		if json.Unmarshal(obj["identifiers"], &l) != nil || len(l) == 0 {
			return "", fmt.Errorf("%w: aliases needs a non-empty identifiers array", errSubject)
		}
		for _, id := range l {
			var o map[string]json.RawMessage
			if strictObject(id, &o) != nil {
				return "", fmt.Errorf("%w: an alias is not an object", errSubject)
			}
			f, err := stringMember(o, "format")
			if err != nil || f == "" || f == "aliases" || f == FormatComplex {
				return "", fmt.Errorf("%w: an alias needs a simple format other than aliases", errSubject)
			}
			if _, err := canonicalSimple(o, f); err != nil {
				return "", err
			}
		}
	default:
		if !known {
			for name, v := range obj {
				var s string
				if json.Unmarshal(v, &s) != nil {
					return "", fmt.Errorf("%w: member %q of proprietary format %q must be a string", errSubject, name, format)
				}
			}
		}
		for _, name := range required {
			if v, err := stringMember(obj, name); err != nil || v == "" {
				return "", fmt.Errorf("%w: format %s needs a non-empty string %s", errSubject, format, name)
			}
		}
		if format == "account" {
			if v, _ := stringMember(obj, "uri"); !strings.HasPrefix(v, "acct:") {
				return "", fmt.Errorf("%w: an account subject needs an acct: URI", errSubject)
			}
		}
	}
	// Re-marshal through a map: encoding/json sorts map keys and compacts.
	var generic map[string]any
	raw, _ := json.Marshal(obj)
	if err := json.Unmarshal(raw, &generic); err != nil {
		return "", fmt.Errorf("%w: %v", errSubject, err)
	}
	out, err := json.Marshal(generic)
	if err != nil {
		return "", fmt.Errorf("%w: %v", errSubject, err)
	}
	return string(out), nil
}

// strictObject decodes a JSON object, refusing trailing data.
func strictObject(raw []byte, out *map[string]json.RawMessage) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(out); err != nil {
		return err
	}
	if *out == nil {
		return errors.New("not a JSON object")
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

func stringMember(obj map[string]json.RawMessage, name string) (string, error) {
	raw, ok := obj[name]
	if !ok {
		return "", fmt.Errorf("%s missing", name)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%s is not a string", name)
	}
	return s, nil
}

// matcherOf returns the canonical form of a subject Ward emits.
func matcherOf(s *Subject) subjectMatcher {
	raw, _ := json.Marshal(withoutAliases(s))
	_, m, err := parseSubject(raw)
	if err != nil {
		return subjectMatcher{}
	}
	return m
}

// matches reports whether an event about subject ev falls under the
// receiver-supplied subject x. It follows SSF 1.0 §8.1.3.1 (simple
// subjects match when identical; complex subjects when every member
// they share is identical) with two choices of Ward's: complex subjects
// must share at least one member (so a subject about a user never
// matches an event about the tenant), and a simple subject also matches
// a complex event that has it as a member (removing a user removes the
// events about that user's sessions and devices).
func (x subjectMatcher) matches(ev subjectMatcher) bool {
	switch {
	case x.simple != "" && ev.simple != "":
		return x.simple == ev.simple
	case x.simple != "":
		for _, m := range ev.members {
			if m == x.simple {
				return true
			}
		}
		return false
	case ev.simple != "":
		return false
	}
	shared := 0
	for name, v := range x.members {
		if w, ok := ev.members[name]; ok {
			if w != v {
				return false
			}
			shared++
		}
	}
	return shared > 0
}
