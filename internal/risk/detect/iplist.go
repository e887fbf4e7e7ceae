package detect

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// IPList is a set of addresses and networks read from an operator's file
// (Tor exit nodes, a deny list, a threat feed). A nil *IPList contains
// nothing. It is immutable once loaded, so safe for concurrent use.
type IPList struct {
	// Name is where it was read from (for detections' details).
	Name string
	// prefixes sorted by address; lookups try each distinct length.
	v4, v6   map[netip.Prefix]struct{}
	lens4    []int
	lens6    []int
	prefixes int
}

// Limits of a list file: a hostile or mistaken file cannot make Ward hold
// more than this.
const (
	maxListEntries = 5_000_000
	maxListLine    = 256
)

// LoadIPList reads one IP address or CIDR prefix per line; blank lines and
// text after '#' are ignored. An error names the file and the line.
func LoadIPList(path string) (*IPList, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("ip list: %w", err)
	}
	defer f.Close()
	l, err := ParseIPList(f)
	if err != nil {
		return nil, fmt.Errorf("ip list %s: %w", path, err)
	}
	l.Name = path
	return l, nil
}

// ParseIPList reads a list in LoadIPList's format from r.
func ParseIPList(r io.Reader) (*IPList, error) {
	l := &IPList{v4: map[netip.Prefix]struct{}{}, v6: map[netip.Prefix]struct{}{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxListLine+1)
	n := 0
	for sc.Scan() {
		n++
		s := sc.Text()
		if i := strings.IndexByte(s, '#'); i >= 0 {
			s = s[:i]
		}
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := parseEntry(s)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if l.prefixes >= maxListEntries {
			return nil, fmt.Errorf("line %d: more than %d entries", n, maxListEntries)
		}
		l.add(p)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d: longer than %d bytes", n+1, maxListLine)
		}
		return nil, err
	}
	return l, nil
}

// parseEntry reads an address (a /32 or /128) or a prefix in canonical
// or host form (10.1.2.3/8 is 10.0.0.0/8).
func parseEntry(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", clip(s, 64))
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return netip.Prefix{}, fmt.Errorf("%q: an IPv4-mapped prefix shorter than /96", clip(s, 64))
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR prefix", clip(s, 64))
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (l *IPList) add(p netip.Prefix) {
	m, lens := l.v4, &l.lens4
	if p.Addr().Is6() {
		m, lens = l.v6, &l.lens6
	}
	if _, ok := m[p]; ok {
		return
	}
	m[p] = struct{}{}
	l.prefixes++
	if !slices.Contains(*lens, p.Bits()) {
		*lens = append(*lens, p.Bits())
		slices.Sort(*lens)
	}
}

// Len is the number of distinct entries.
func (l *IPList) Len() int {
	if l == nil {
		return 0
	}
	return l.prefixes
}

// Contains reports whether ip is in the list.
func (l *IPList) Contains(ip netip.Addr) bool {
	if l == nil || !ip.IsValid() {
		return false
	}
	ip = ip.Unmap().WithZone("")
	m, lens := l.v4, l.lens4
	if ip.Is6() {
		m, lens = l.v6, l.lens6
	}
	for _, b := range lens {
		p, err := ip.Prefix(b)
		if err != nil {
			continue
		}
		if _, ok := m[p]; ok {
			return true
		}
	}
	return false
}

// ContainsString is Contains for an address in text ("" and invalid
// addresses are in no list).
func (l *IPList) ContainsString(ip string) bool {
	if l == nil || ip == "" {
		return false
	}
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	return l.Contains(a)
}

// clip bounds a value quoted in an error or a detail.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
