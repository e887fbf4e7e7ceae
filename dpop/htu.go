package dpop

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
)

var errURL = errors.New("dpop: invalid http(s) URL")

// NormalizeHTU returns the form of an http or https URL that DPoP compares
// (RFC 9449 §4.3 point 9): query and fragment removed, then RFC 3986
// §6.2.2 syntax-based normalisation (lower-case scheme and host, upper-case
// percent-encoding hex digits, unreserved characters decoded, dot segments
// removed) and §6.2.3 scheme-based normalisation (default port and empty
// port removed, empty path becomes "/"). Bytes that may not appear in a URI
// path (space, non-ASCII, ...) are percent-encoded, as a browser would.
// URLs with userinfo, control characters, a host with characters outside
// RFC 3986 reg-name / IP-literal syntax (percent-encoding in a host is
// accepted only for unreserved characters), a non-numeric or out-of-range
// port, or a scheme other than http/https are rejected.
//
// Two URLs identify the same DPoP target exactly when their normalised
// forms are equal.
func NormalizeHTU(raw string) (string, error) {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	sep := strings.Index(raw, "://")
	if sep <= 0 {
		return "", errURL
	}
	scheme := strings.ToLower(raw[:sep])
	var defPort string
	switch scheme {
	case "http":
		defPort = "80"
	case "https":
		defPort = "443"
	default:
		return "", errURL
	}
	rest := raw[sep+3:]
	authority, path := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		authority, path = rest[:i], rest[i:]
	}
	if strings.IndexByte(authority, '@') >= 0 {
		return "", errURL
	}
	host, port := authority, ""
	if strings.HasPrefix(authority, "[") {
		end := strings.IndexByte(authority, ']')
		if end < 0 {
			return "", errURL
		}
		host, port = authority[:end+1], authority[end+1:]
		if port != "" {
			if port[0] != ':' {
				return "", errURL
			}
			port = port[1:]
		}
	} else if i := strings.LastIndexByte(authority, ':'); i >= 0 {
		host, port = authority[:i], authority[i+1:]
	}

	var b strings.Builder
	b.Grow(len(raw) + 8)
	b.WriteString(scheme)
	b.WriteString("://")
	if err := writeHost(&b, host); err != nil {
		return "", err
	}
	if port != "" {
		for i := 0; i < len(port); i++ {
			if port[i] < '0' || port[i] > '9' {
				return "", errURL
			}
		}
		p := strings.TrimLeft(port, "0")
		if p == "" {
			p = "0"
		}
		if n, err := strconv.Atoi(p); err != nil || n > 65535 {
			return "", errURL
		}
		if p != defPort {
			b.WriteByte(':')
			b.WriteString(p)
		}
	}
	if path == "" {
		b.WriteByte('/')
		return b.String(), nil
	}
	np, err := normalizePath(path)
	if err != nil {
		return "", err
	}
	b.WriteString(removeDotSegments(np))
	return b.String(), nil
}

func writeHost(b *strings.Builder, host string) error {
	if host == "" {
		return errURL
	}
	if host[0] == '[' {
		// IP-literal: only IPv6 (no IPvFuture, no zone), written in the
		// RFC 5952 canonical form so equal addresses compare equal.
		a, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return errURL
		}
		b.WriteByte('[')
		b.WriteString(a.String())
		b.WriteByte(']')
		return nil
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case c == '%':
			if i+2 >= len(host) || !isHex(host[i+1]) || !isHex(host[i+2]) {
				return errURL
			}
			// Only encoded unreserved characters are accepted in a host;
			// anything else (%00, %2F, %40, raw UTF-8) is no valid DNS
			// name or address and only serves to confuse parsers.
			v := unhex(host[i+1])<<4 | unhex(host[i+2])
			if !isUnreserved(v) {
				return errURL
			}
			b.WriteByte(lower(v))
			i += 2
		case isUnreserved(c) || isSubDelim(c):
			b.WriteByte(lower(c))
		default:
			return errURL
		}
	}
	return nil
}

// normalizePath normalises percent-encodings in an absolute path: triplets
// of unreserved characters are decoded, other triplets get upper-case hex,
// and bytes not allowed in a path are encoded. Control characters and
// malformed triplets are errors.
func normalizePath(p string) (string, error) {
	var b strings.Builder
	b.Grow(len(p) + 8)
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return "", errURL
			}
			v := unhex(p[i+1])<<4 | unhex(p[i+2])
			if isUnreserved(v) {
				b.WriteByte(v)
			} else {
				b.WriteByte('%')
				b.WriteByte(upperHex[v>>4])
				b.WriteByte(upperHex[v&15])
			}
			i += 2
		case c < 0x20 || c == 0x7f:
			return "", errURL
		case isUnreserved(c) || isSubDelim(c) || c == ':' || c == '@' || c == '/':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(upperHex[c>>4])
			b.WriteByte(upperHex[c&15])
		}
	}
	return b.String(), nil
}

// removeDotSegments implements RFC 3986 §5.2.4 for an absolute path.
func removeDotSegments(in string) string {
	if !strings.Contains(in, "/.") {
		return in
	}
	out := make([]string, 0, 8)
	segs := strings.Split(in[1:], "/")
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

const upperHex = "0123456789ABCDEF"

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func isSubDelim(c byte) bool {
	switch c {
	case '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=':
		return true
	}
	return false
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}
