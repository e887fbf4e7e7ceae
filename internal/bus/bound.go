package bus

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ward-idp/ward/internal/model"
)

// Limits of what an event records. Many fields can carry what a caller
// typed or sent (a client_id at the token endpoint, a user agent, a
// username, an error parameter): without bounds one unauthenticated
// request could write kilobytes to the audit log, the outbox and the
// event stream, and a log viewer could be fed control characters.
const (
	// MaxEventField bounds an id-like field (actor, client, user, session,
	// device and token ids, reason, binding reason, correlation id).
	MaxEventField = 200
	// MaxEventUserAgent bounds the user agent.
	MaxEventUserAgent = 256
	// MaxEventDataKey and MaxEventDataValue bound one entry of Data, and
	// MaxEventData their number (entries beyond it are dropped, in key
	// order, and Data["truncated"] says so).
	MaxEventDataKey   = 64
	MaxEventDataValue = 1024
	MaxEventData      = 32
)

// truncatedMark ends a value that was cut.
const truncatedMark = "…"

// Bound makes e safe to record: every string is valid UTF-8 without
// control characters and within its limit, and Data has at most
// MaxEventData entries. It reports whether anything was changed, and
// records that in Data["truncated"].
func Bound(e *model.Event) bool {
	changed := false
	for _, f := range []struct {
		p   *string
		max int
	}{
		{&e.Actor, MaxEventField}, {&e.UserID, MaxEventField}, {&e.SessionID, MaxEventField},
		{&e.ClientID, MaxEventField}, {&e.DeviceID, MaxEventField}, {&e.TokenID, MaxEventField},
		{&e.IP, MaxEventField}, {&e.Outcome, MaxEventField}, {&e.Reason, MaxEventField},
		{&e.Binding, MaxEventField}, {&e.BindingReason, MaxEventField}, {&e.CorrelationID, MaxEventField},
		{&e.UserAgent, MaxEventUserAgent},
	} {
		if v, ok := boundString(*f.p, f.max); ok {
			*f.p, changed = v, true
		}
	}
	if len(e.Data) > 0 {
		keys := make([]string, 0, len(e.Data))
		for k := range e.Data {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		out := make(map[string]string, min(len(keys), MaxEventData))
		for i, k := range keys {
			if i >= MaxEventData {
				changed = true
				break
			}
			bk, kc := boundString(k, MaxEventDataKey)
			bv, vc := boundString(e.Data[k], MaxEventDataValue)
			if kc {
				k = bk
			}
			if vc {
				changed = true
				out[k] = bv
			} else {
				out[k] = e.Data[k]
			}
			changed = changed || kc
		}
		if changed {
			e.Data = out
		}
	}
	if changed {
		if e.Data == nil {
			e.Data = map[string]string{}
		}
		e.Data["truncated"] = "true"
	}
	return changed
}

// boundString returns s made printable and cut to at most max bytes (on a
// rune boundary, with truncatedMark), and whether it had to change.
func boundString(s string, max int) (string, bool) {
	if len(s) <= max && printable(s) {
		return s, false
	}
	var b strings.Builder
	limit := max - len(truncatedMark)
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			r = '?'
		}
		if b.Len()+utf8.RuneLen(r) > limit {
			b.WriteString(truncatedMark)
			return b.String(), true
		}
		b.WriteRune(r)
	}
	return b.String(), true
}

// printable reports whether s is valid UTF-8 made of printable runes
// (spaces included; no control characters, no invalid bytes).
func printable(s string) bool {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return false
		}
		i += n
	}
	return true
}
