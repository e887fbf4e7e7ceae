package textclean

import (
	"net/url"
	"unicode"
	"unicode/utf8"
)

// Bounds of request parameters: an id in a path, and any value of a
// query.
const (
	MaxPathID     = 256
	MaxQueryValue = 4096
)

// ValidParam reports whether v can be an identifier or a filter value: at
// most max bytes of valid UTF-8 with no control character (NUL, which
// PostgreSQL refuses in text, included). What fails could name nothing
// stored, so it is refused before any lookup.
func ValidParam(v string, max int) bool {
	if len(v) > max || !utf8.ValidString(v) {
		return false
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// BadQuery returns the name of the first query parameter of q whose name
// fails ValidParam or whose value fails ValidText (both bounded by
// MaxQueryValue), or "" and false when all pass.
func BadQuery(q url.Values) (string, bool) {
	for k, vs := range q {
		if !ValidParam(k, MaxQueryValue) {
			return "(a parameter name)", true
		}
		for _, v := range vs {
			if !ValidText(v, MaxQueryValue) {
				return k, true
			}
		}
	}
	return "", false
}

// ValidText is ValidParam for free text (a comment, a search): line
// breaks and tabs are allowed, no other control character.
func ValidText(v string, max int) bool {
	if len(v) > max || !utf8.ValidString(v) {
		return false
	}
	for _, r := range v {
		if unicode.IsControl(r) && r != '\n' && r != '\r' && r != '\t' {
			return false
		}
	}
	return true
}

// MaxID bounds an id the services take from events and operators (a
// user, session, device, detection or event id).
const MaxID = 128

// PrintableID reports whether v is a non-empty id of printable ASCII
// without spaces, at most MaxID bytes.
func PrintableID(v string) bool {
	if v == "" || len(v) > MaxID {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] > '~' {
			return false
		}
	}
	return true
}
