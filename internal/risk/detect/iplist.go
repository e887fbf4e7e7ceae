package detect

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// IPList is a set of addresses and networks read from an operator's file
// (Tor exit nodes, a deny list, a threat feed). A nil *IPList contains
// nothing. Lookups read an immutable set; Reload replaces the set as a
// whole when the file changed, so it is safe for concurrent use.
type IPList struct {
	// Name is where it was read from (for detections' details).
	Name string
	set  atomic.Pointer[ipSet]

	mu   sync.Mutex // serialises Reload
	seen fileStamp  // the file as last read (or last refused)
}

// ipSet is one version of a list.
type ipSet struct {
	// prefixes by family; lookups try each distinct length.
	v4, v6   map[netip.Prefix]struct{}
	lens4    []int
	lens6    []int
	prefixes int
}

// fileStamp tells a changed file from the one read: its modification
// time and size.
type fileStamp struct {
	mod  time.Time
	size int64
}

// Limits of a list file: a hostile or mistaken file cannot make Ward hold
// more than this.
const (
	maxListEntries = 5_000_000
	maxListLine    = 256
)

// LoadIPList reads one IP address or CIDR prefix per line; blank lines and
// text after '#' are ignored. An error names the file and the line.
// Errors name the line, never its content: the file may hold what an
// operator would not want in a log.
func LoadIPList(path string) (*IPList, error) {
	set, st, err := readIPFile(path)
	if err != nil {
		return nil, err
	}
	l := &IPList{Name: path, seen: st}
	l.set.Store(set)
	return l, nil
}

// readIPFile reads and parses the list at path, with the stamp of what
// was read.
func readIPFile(path string) (*ipSet, fileStamp, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("ip list: %w", err)
	}
	defer f.Close()
	var st fileStamp
	if fi, err := f.Stat(); err == nil {
		st = fileStamp{fi.ModTime(), fi.Size()}
	}
	set, err := parseIPSet(f)
	if err != nil {
		return nil, st, fmt.Errorf("ip list %s: %w", path, err)
	}
	return set, st, nil
}

// Reload reads the list's file again when its modification time or size
// changed since it was last read, and replaces the list with it. A file
// that cannot be read or parsed leaves the list as it was (the error says
// why) and is not read again until it changes. changed reports a
// replacement.
func (l *IPList) Reload() (changed bool, err error) {
	if l == nil || l.Name == "" {
		return false, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fi, err := os.Stat(l.Name)
	if err != nil {
		st := fileStamp{}
		if st == l.seen {
			return false, nil // still missing: said once
		}
		l.seen = st
		return false, fmt.Errorf("ip list: %w", err)
	}
	if (fileStamp{fi.ModTime(), fi.Size()}) == l.seen {
		return false, nil
	}
	set, st, err := readIPFile(l.Name)
	l.seen = st
	if err != nil {
		return false, err
	}
	l.set.Store(set)
	return true, nil
}

// WatchIPLists reloads lists (nil ones are skipped) every interval until
// ctx ends: each change of a file is applied, or logged and ignored when
// the new file is invalid (the list stays as it was).
func WatchIPLists(ctx context.Context, interval time.Duration, log *slog.Logger, lists ...*IPList) {
	var ls []*IPList
	for _, l := range lists {
		if l != nil && l.Name != "" {
			ls = append(ls, l)
		}
	}
	if len(ls) == 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, l := range ls {
			changed, err := l.Reload()
			switch {
			case err != nil:
				log.ErrorContext(ctx, "risk detection: IP list not reloaded, the previous version stays in use", "file", l.Name, "err", err)
			case changed:
				log.InfoContext(ctx, "risk detection: IP list reloaded", "file", l.Name, "entries", l.Len())
			}
		}
	}
}

// ParseIPList reads a list in LoadIPList's format from r.
func ParseIPList(r io.Reader) (*IPList, error) {
	set, err := parseIPSet(r)
	if err != nil {
		return nil, err
	}
	l := &IPList{}
	l.set.Store(set)
	return l, nil
}

func parseIPSet(r io.Reader) (*ipSet, error) {
	l := &ipSet{v4: map[netip.Prefix]struct{}{}, v6: map[netip.Prefix]struct{}{}}
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
			return netip.Prefix{}, errors.New("not an IP address or CIDR prefix")
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return netip.Prefix{}, errors.New("an IPv4-mapped prefix shorter than /96")
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, errors.New("not an IP address or CIDR prefix")
	}
	a = a.Unmap().WithZone("")
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (l *ipSet) add(p netip.Prefix) {
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
	if set := l.set.Load(); set != nil {
		return set.prefixes
	}
	return 0
}

// Contains reports whether ip is in the list.
func (l *IPList) Contains(ip netip.Addr) bool {
	if l == nil || !ip.IsValid() {
		return false
	}
	ip = ip.Unmap().WithZone("")
	set := l.set.Load()
	if set == nil {
		return false
	}
	m, lens := set.v4, set.lens4
	if ip.Is6() {
		m, lens = set.v6, set.lens6
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
