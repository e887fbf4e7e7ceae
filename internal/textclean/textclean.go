// Package textclean makes free text from events and operators safe to
// store and show: no control characters, no invalid UTF-8, a bounded
// length cut at a character boundary. The risk and incident services
// share it for the details and reasons they record; the admin API and the
// console check request parameters with ValidParam before any lookup;
// the incident and graph services check ids with PrintableID.
package textclean

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Clean replaces control characters and invalid UTF-8 by spaces, trims
// the result and cuts it to n bytes at a character boundary.
func Clean(v string, n int) string {
	v = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) {
			return ' '
		}
		return r
	}, v)
	return Clip(strings.TrimSpace(v), n)
}

// Clip cuts v to at most n bytes without splitting a character.
func Clip(v string, n int) string {
	if n < 0 {
		n = 0
	}
	if len(v) <= n {
		return v
	}
	for n > 0 && !utf8.RuneStart(v[n]) {
		n--
	}
	return v[:n]
}
