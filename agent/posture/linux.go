package posture

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Runner runs a command and returns its standard output. Collectors use
// it for facts only a command can tell (nftables, GNOME settings), so
// tests can replace it.
type Runner func(ctx context.Context, name string, args ...string) ([]byte, error)

// ExecRunner runs the command with os/exec, a 5-second timeout and
// LC_ALL=C.
func ExecRunner(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	return cmd.Output()
}

// errNoRunner: commands are not run against a non-default Root unless a
// Runner is given (they would describe this machine, not the tree).
var errNoRunner = errors.New("posture: no command runner")

// Identity is the user whose posture is collected.
type Identity struct {
	UID      int
	GIDs     []int // effective, real and supplementary group ids
	Username string
}

// CurrentIdentity describes the running process.
func CurrentIdentity() (Identity, error) {
	id := Identity{UID: os.Getuid()}
	gids, err := os.Getgroups()
	if err != nil {
		return id, err
	}
	id.GIDs = append(gids, os.Getgid(), os.Getegid())
	if u, err := user.Current(); err == nil {
		id.Username = u.Username
	}
	return id, nil
}

// LinuxCollector reads a Linux system's posture from its files under
// Root, from the process identity and from a few commands.
//
// How each fact is established (Unknown whenever the evidence is not
// there or not readable):
//
//   - DiskEncrypted: the device of "/" from /proc/self/mountinfo (or
//     /proc/self/mounts, /proc/mounts). A device-mapper device whose
//     /sys/block/dm-N/dm/uuid starts with "CRYPT-" (LUKS, plain dm-crypt)
//     is Yes; other device-mapper devices (LVM) are followed through
//     /sys/block/dm-N/slaves and are Yes only if every path down ends in
//     dm-crypt. A plain partition or disk is No. Overlay, tmpfs and
//     similar roots (containers, live systems) are Unknown: the backing
//     disk is not visible. Self-encrypting drives are not detected.
//   - UserIsAdmin: Yes for uid 0 or membership (process groups or
//     /etc/group) in sudo, wheel or admin; No otherwise. Other sudoers or
//     polkit rules are not inspected (/etc/sudoers is normally readable
//     only by root).
//   - AntiMalwarePresent: ClamAV (clamscan, clamd, freshclam binaries or
//     /var/lib/clamav/*.cvd|*.cld), Microsoft Defender for Endpoint
//     (/opt/microsoft/mdatp), CrowdStrike Falcon (/opt/CrowdStrike) or
//     Sophos (/opt/sophos-spl) installed is Yes; none is No; unreadable
//     locations make it Unknown. AntiMalwareSignatureAge comes from the
//     newest ClamAV daily database: the build time in its header, else
//     its modification time.
//   - FirewallEnabled: Yes if ufw is enabled (/etc/ufw/ufw.conf
//     ENABLED=yes), nftables has an input-hook filter chain with a drop
//     policy or rules (`nft list ruleset`), or iptables' INPUT chain has a
//     non-ACCEPT policy or rules (`iptables -S INPUT`). No if the sources
//     that answered show no inbound filtering; Unknown if none answered
//     (both commands need root).
//   - SecureBoot: the SecureBoot EFI variable (last byte 1 Yes, 0 No). On
//     UEFI without that variable the firmware does not support Secure
//     Boot: No. Without /sys/firmware/efi it is Unknown, not No: legacy
//     BIOS cannot be told apart from a hidden /sys (containers).
//   - ScreenLock: GNOME only (gsettings lock-enabled and idle-delay), and
//     only in a GNOME session (XDG_CURRENT_DESKTOP), since gsettings
//     prints schema defaults otherwise. Anything else is Unknown.
//   - Rooted: always Unknown. Rooting is a mobile-device notion; on a
//     desktop the question is UserIsAdmin. Policies should test
//     "rooted != yes".
//
// The zero value reads the running system.
type LinuxCollector struct {
	// Root is the file system root to read; "" means "/". Tests point it
	// at a fixture tree.
	Root string
	// Run runs commands. nil means ExecRunner when Root is "/", and no
	// commands at all for any other Root.
	Run Runner
	// Identity returns the user to assess; nil means CurrentIdentity.
	Identity func() (Identity, error)
	// Getenv reads the environment (XDG_CURRENT_DESKTOP); nil means
	// os.Getenv.
	Getenv func(string) string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (c *LinuxCollector) root() string {
	if c.Root == "" {
		return "/"
	}
	return c.Root
}

// p maps an absolute system path into Root.
func (c *LinuxCollector) p(abs string) string {
	return filepath.Join(c.root(), filepath.FromSlash(abs))
}

func (c *LinuxCollector) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *LinuxCollector) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	switch {
	case c.Run != nil:
		return c.Run(ctx, name, args...)
	case c.root() == "/":
		return ExecRunner(ctx, name, args...)
	}
	return nil, errNoRunner
}

func (c *LinuxCollector) getenv(k string) string {
	if c.Getenv != nil {
		return c.Getenv(k)
	}
	return os.Getenv(k)
}

// readSmall reads at most 1 MiB of a file under Root.
func (c *LinuxCollector) readSmall(abs string) ([]byte, error) {
	f, err := os.Open(c.p(abs))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 1<<20))
}

func (c *LinuxCollector) readLine(abs string) string {
	b, err := c.readSmall(abs)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Collect implements Collector.
func (c *LinuxCollector) Collect(ctx context.Context) (*Posture, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := &Posture{Platform: "linux", CollectedAt: c.now().UTC(), Evidence: map[string]string{}}
	ev := func(field string, s State, why string) State {
		if why != "" {
			p.Evidence[field] = truncate(why, MaxEvidenceLen)
		}
		return s
	}
	osr := c.osRelease()
	p.OSName, p.OSVersion = truncate(osr["NAME"], MaxStringLen), truncate(osr["VERSION_ID"], MaxStringLen)
	if pn := osr["PRETTY_NAME"]; pn != "" {
		p.Evidence[FieldOSName] = truncate(pn, MaxEvidenceLen)
	}
	p.Kernel = truncate(c.readLine("/proc/sys/kernel/osrelease"), MaxStringLen)
	p.Hostname = truncate(c.readLine("/proc/sys/kernel/hostname"), MaxStringLen)
	if p.Hostname == "" && c.root() == "/" {
		p.Hostname, _ = os.Hostname()
	}

	s, why := c.diskEncryption()
	p.DiskEncrypted = ev(FieldDiskEncrypted, s, why)
	s, why = c.admin()
	p.UserIsAdmin = ev(FieldUserIsAdmin, s, why)
	s, age, why := c.antiMalware()
	p.AntiMalwarePresent = ev(FieldAntiMalwarePresent, s, why)
	p.AntiMalwareSignatureAge = age
	s, why = c.firewall(ctx)
	p.FirewallEnabled = ev(FieldFirewallEnabled, s, why)
	s, why = c.secureBoot()
	p.SecureBoot = ev(FieldSecureBoot, s, why)
	s, why = c.screenLock(ctx)
	p.ScreenLock = ev(FieldScreenLock, s, why)
	p.Rooted = ev(FieldRooted, Unknown, "not applicable to desktop Linux (see user_is_admin)")
	return p, ctx.Err()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8ValidSuffix(s) {
		s = s[:len(s)-1]
	}
	return s
}

func utf8ValidSuffix(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

// ---- OS release ----

// osRelease parses /etc/os-release (or /usr/lib/os-release): KEY=VALUE
// lines, values optionally in single or double quotes with backslash
// escapes in double quotes (os-release(5)).
func (c *LinuxCollector) osRelease() map[string]string {
	b, err := c.readSmall("/etc/os-release")
	if err != nil {
		if b, err = c.readSmall("/usr/lib/os-release"); err != nil {
			return map[string]string{}
		}
	}
	return ParseOSRelease(b)
}

// ParseOSRelease parses the os-release(5) format.
func ParseOSRelease(b []byte) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			continue
		}
		switch {
		case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
			var sb strings.Builder
			for i := 1; i < len(v)-1; i++ {
				if v[i] == '\\' && i+1 < len(v)-1 && strings.IndexByte("\"\\$`", v[i+1]) >= 0 {
					i++
				}
				sb.WriteByte(v[i])
			}
			v = sb.String()
		case len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'':
			v = v[1 : len(v)-1]
		}
		out[k] = v
	}
	return out
}

// ---- disk encryption ----

// virtualRoots are root file systems with no block device of their own.
var virtualRoots = map[string]bool{
	"overlay": true, "tmpfs": true, "ramfs": true, "rootfs": true, "aufs": true,
	"squashfs": true, "9p": true, "virtiofs": true, "nfs": true, "nfs4": true, "cifs": true, "fuse-overlayfs": true,
}

type rootMount struct{ majmin, fstype, source string }

// rootMount finds the mount of "/" (the last one, which is visible).
func (c *LinuxCollector) rootMount() (rootMount, bool) {
	var m rootMount
	found := false
	if b, err := c.readSmall("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			pre, post, ok := strings.Cut(line, " - ")
			f, g := strings.Fields(pre), strings.Fields(post)
			if !ok || len(f) < 5 || len(g) < 2 || unescapeMount(f[4]) != "/" {
				continue
			}
			m, found = rootMount{majmin: f[2], fstype: g[0], source: unescapeMount(g[1])}, true
		}
		if found {
			return m, true
		}
	}
	for _, file := range []string{"/proc/self/mounts", "/proc/mounts"} {
		b, err := c.readSmall(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 3 || unescapeMount(f[1]) != "/" {
				continue
			}
			m, found = rootMount{fstype: f[2], source: unescapeMount(f[0])}, true
		}
		if found {
			return m, true
		}
	}
	return m, false
}

// unescapeMount undoes the octal escapes (\040 for space) of mount tables.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// sysBlock returns the sysfs directory of block device name, or "".
func (c *LinuxCollector) sysBlock(name string) string {
	for _, d := range []string{"/sys/class/block/", "/sys/block/"} {
		if fi, err := os.Stat(c.p(d + name)); err == nil && fi.IsDir() {
			return d + name
		}
	}
	return ""
}

// dmByName finds dm-N whose dm/name is name (for /dev/mapper/NAME).
func (c *LinuxCollector) dmByName(name string) string {
	ents, _ := os.ReadDir(c.p("/sys/block"))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "dm-") && c.readLine("/sys/block/"+e.Name()+"/dm/name") == name {
			return e.Name()
		}
	}
	return ""
}

func (c *LinuxCollector) diskEncryption() (State, string) {
	m, ok := c.rootMount()
	if !ok {
		return Unknown, "no mount of / in /proc/self/mountinfo or /proc/mounts"
	}
	if virtualRoots[m.fstype] || strings.HasPrefix(m.fstype, "fuse") {
		return Unknown, fmt.Sprintf("root is %s (%s): container or live system, backing disk not visible", m.fstype, m.source)
	}
	// Resolve the kernel's block device name.
	name := ""
	if m.majmin != "" {
		if target, err := os.Readlink(c.p("/sys/dev/block/" + m.majmin)); err == nil {
			name = path.Base(filepath.ToSlash(target))
		}
	}
	if name == "" {
		switch {
		case strings.HasPrefix(m.source, "/dev/mapper/"):
			name = c.dmByName(strings.TrimPrefix(m.source, "/dev/mapper/"))
		case strings.HasPrefix(m.source, "/dev/") && m.source != "/dev/root":
			name = path.Base(m.source)
		}
	}
	if name == "" || c.sysBlock(name) == "" {
		return Unknown, fmt.Sprintf("root on %s (%s): block device not found in /sys", m.source, m.fstype)
	}
	s, chain := c.classify(name, 0)
	switch s {
	case Yes:
		return Yes, fmt.Sprintf("root on %s (%s): %s", m.source, m.fstype, chain)
	case No:
		return No, fmt.Sprintf("root on %s (%s): %s, no dm-crypt layer", m.source, m.fstype, chain)
	}
	return Unknown, fmt.Sprintf("root on %s (%s): %s", m.source, m.fstype, chain)
}

// classify tells whether block device name is encrypted (dm-crypt on
// every path to the disks) and describes the stack.
func (c *LinuxCollector) classify(name string, depth int) (State, string) {
	if depth > 8 {
		return Unknown, name + " (stack too deep)"
	}
	dir := c.sysBlock(name)
	if dir == "" {
		return Unknown, name + " (not in /sys)"
	}
	if _, err := os.Stat(c.p(dir + "/dm")); err != nil {
		return No, name
	}
	uuid := c.readLine(dir + "/dm/uuid")
	label := name
	if n := c.readLine(dir + "/dm/name"); n != "" {
		label = name + " [" + n + "]"
	}
	if strings.HasPrefix(uuid, "CRYPT-") {
		kind, _, _ := strings.Cut(strings.TrimPrefix(uuid, "CRYPT-"), "-")
		return Yes, label + " (dm-crypt " + kind + ")"
	}
	kind, _, _ := strings.Cut(uuid, "-")
	if kind == "" {
		kind = "device-mapper"
	}
	ents, err := os.ReadDir(c.p(dir + "/slaves"))
	if err != nil || len(ents) == 0 {
		return No, label + " (" + kind + ", no underlying devices)"
	}
	result, parts := Yes, []string{}
	for _, e := range ents {
		s, d := c.classify(e.Name(), depth+1)
		parts = append(parts, d)
		switch {
		case s == No:
			result = No
		case s == Unknown && result == Yes:
			result = Unknown
		}
	}
	return result, label + " (" + kind + ") on " + strings.Join(parts, " + ")
}

// ---- admin ----

var adminGroups = []string{"sudo", "wheel", "admin"}

func (c *LinuxCollector) admin() (State, string) {
	ident := CurrentIdentity
	if c.Identity != nil {
		ident = c.Identity
	}
	id, err := ident()
	if err != nil {
		return Unknown, "cannot determine the user and groups"
	}
	if id.UID == 0 {
		return Yes, "uid 0 (root)"
	}
	b, gerr := c.readSmall("/etc/group")
	if gerr == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Split(strings.TrimSpace(line), ":")
			if len(f) < 4 || !slices.Contains(adminGroups, f[0]) {
				continue
			}
			gid, _ := strconv.Atoi(f[2])
			members := strings.Split(f[3], ",")
			switch {
			case slices.Contains(id.GIDs, gid):
				return Yes, fmt.Sprintf("uid %d is in group %s (gid %d)", id.UID, f[0], gid)
			case id.Username != "" && slices.Contains(members, id.Username):
				return Yes, fmt.Sprintf("%s is listed in group %s in /etc/group", id.Username, f[0])
			}
		}
	}
	if gerr != nil {
		return Unknown, fmt.Sprintf("uid %d: groups not fully readable", id.UID)
	}
	return No, fmt.Sprintf("uid %d (%s) is not in sudo, wheel or admin", id.UID, id.Username)
}

// ---- anti-malware ----

var binDirs = []string{"/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/bin", "/sbin"}

var otherAV = []struct{ path, name string }{
	{"/opt/microsoft/mdatp", "Microsoft Defender for Endpoint"},
	{"/opt/CrowdStrike", "CrowdStrike Falcon"},
	{"/opt/sophos-spl", "Sophos Protection for Linux"},
}

// exists reports whether abs exists under Root; err is set when that
// cannot be told (permission problems).
func (c *LinuxCollector) exists(abs string) (bool, error) {
	_, err := os.Stat(c.p(abs))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	}
	return false, err
}

func (c *LinuxCollector) antiMalware() (State, *Seconds, string) {
	unreadable := false
	var bins []string
	for _, d := range binDirs {
		for _, n := range []string{"clamscan", "clamd", "clamdscan", "freshclam"} {
			ok, err := c.exists(d + "/" + n)
			unreadable = unreadable || err != nil
			if ok && !slices.Contains(bins, n) {
				bins = append(bins, n)
			}
		}
	}
	var dbs []string
	var newest time.Time
	var newestFile string
	ents, err := os.ReadDir(c.p("/var/lib/clamav"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		unreadable = true
	}
	for _, e := range ents {
		n := e.Name()
		if !strings.HasSuffix(n, ".cvd") && !strings.HasSuffix(n, ".cld") {
			continue
		}
		dbs = append(dbs, n)
		if strings.HasPrefix(n, "daily.") {
			if t, ok := c.cvdTime("/var/lib/clamav/" + n); ok && t.After(newest) {
				newest, newestFile = t, n
			}
		}
	}
	if len(bins) > 0 || len(dbs) > 0 {
		why := "ClamAV"
		if len(bins) > 0 {
			why += " (" + strings.Join(bins, ", ") + ")"
		}
		if len(dbs) == 0 {
			return Yes, nil, why + "; no signature database in /var/lib/clamav"
		}
		if newest.IsZero() {
			return Yes, nil, why + "; no readable daily signature database"
		}
		age := c.now().Sub(newest)
		if age < 0 {
			age = 0
		}
		return Yes, SecondsOf(age), fmt.Sprintf("%s; %s built %s", why, newestFile, newest.UTC().Format(time.RFC3339))
	}
	for _, av := range otherAV {
		ok, err := c.exists(av.path)
		unreadable = unreadable || err != nil
		if ok {
			return Yes, nil, av.name + " (" + av.path + "); signature age not read"
		}
	}
	if unreadable {
		return Unknown, nil, "anti-malware locations not readable"
	}
	return No, nil, "no ClamAV, Defender, CrowdStrike or Sophos found"
}

// cvdTime returns the build time of a ClamAV database: from its 512-byte
// header "ClamAV-VDB:<time>:<version>:<sigs>:<flevel>:<md5>:<dsig>:
// <builder>:<stime>" (stime in Unix seconds, else the time text), falling
// back to the file's modification time.
func (c *LinuxCollector) cvdTime(abs string) (time.Time, bool) {
	f, err := os.Open(c.p(abs))
	if err != nil {
		return time.Time{}, false
	}
	defer f.Close()
	var hdr [512]byte
	n, _ := io.ReadFull(f, hdr[:])
	if h := string(bytes.TrimRight(hdr[:n], " \x00")); strings.HasPrefix(h, "ClamAV-VDB:") {
		parts := strings.Split(h, ":")
		if len(parts) >= 9 {
			if sec, err := strconv.ParseInt(strings.TrimSpace(parts[8]), 10, 64); err == nil && sec > 0 {
				return time.Unix(sec, 0), true
			}
		}
		if t, err := time.Parse("02 Jan 2006 15-04 -0700", parts[1]); err == nil {
			return t, true
		}
	}
	fi, err := f.Stat()
	if err != nil {
		return time.Time{}, false
	}
	return fi.ModTime(), true
}

// ---- firewall ----

func (c *LinuxCollector) firewall(ctx context.Context) (State, string) {
	var notes []string
	answered := false
	if b, err := c.readSmall("/etc/ufw/ufw.conf"); err == nil {
		enabled := ParseOSRelease(b)["ENABLED"]
		if strings.EqualFold(enabled, "yes") {
			return Yes, "ufw enabled (/etc/ufw/ufw.conf ENABLED=yes)"
		}
		notes = append(notes, "ufw disabled")
	}
	if out, err := c.run(ctx, "nft", "list", "ruleset"); err == nil {
		answered = true
		if chain, ok := nftInputFilter(string(out)); ok {
			return Yes, "nftables input filter (chain " + chain + ")"
		}
		notes = append(notes, "nftables: no input filtering")
	}
	if out, err := c.run(ctx, "iptables", "-S", "INPUT"); err == nil {
		answered = true
		if why, ok := iptablesInputFilter(string(out)); ok {
			return Yes, "iptables " + why
		}
		notes = append(notes, "iptables: INPUT policy ACCEPT, no rules")
	}
	if !answered {
		return Unknown, strings.Join(append(notes, "neither nft nor iptables answered (not installed, or not run as root)"), "; ")
	}
	return No, strings.Join(notes, "; ")
}

// nftInputFilter looks in `nft list ruleset` output for a chain hooked on
// input with a drop/reject policy or at least one rule.
func nftInputFilter(out string) (string, bool) {
	inChain, hook, drop, rules, name := false, false, false, 0, ""
	for _, line := range strings.Split(out, "\n") {
		l := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(l, "chain "):
			inChain, hook, drop, rules = true, false, false, 0
			name = strings.TrimSuffix(strings.TrimSpace(strings.TrimPrefix(l, "chain ")), " {")
		case !inChain || l == "" || l[0] == '#':
		case l == "}":
			if hook && (drop || rules > 0) {
				return name, true
			}
			inChain = false
		case strings.HasPrefix(l, "type "):
			hook = hook || strings.Contains(l, "hook input")
			drop = drop || strings.Contains(l, "policy drop") || strings.Contains(l, "policy reject")
		case strings.HasPrefix(l, "policy "):
			drop = drop || strings.Contains(l, "drop")
		default:
			rules++
		}
	}
	return "", false
}

// iptablesInputFilter reads `iptables -S INPUT`.
func iptablesInputFilter(out string) (string, bool) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "-P" && f[1] == "INPUT" && f[2] != "ACCEPT":
			return "INPUT policy " + f[2], true
		case len(f) >= 2 && f[0] == "-A" && f[1] == "INPUT":
			return "INPUT rules present", true
		}
	}
	return "", false
}

// ---- Secure Boot ----

const secureBootVar = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

func (c *LinuxCollector) secureBoot() (State, string) {
	if ok, _ := c.exists("/sys/firmware/efi"); !ok {
		return Unknown, "no /sys/firmware/efi: legacy BIOS, or firmware interface hidden (container)"
	}
	b, err := c.readSmall(secureBootVar)
	if err == nil {
		// 4 bytes of attributes, then the 1-byte value.
		if len(b) < 5 {
			return Unknown, "SecureBoot EFI variable malformed"
		}
		switch b[len(b)-1] {
		case 1:
			return Yes, "SecureBoot EFI variable = 1"
		case 0:
			return No, "SecureBoot EFI variable = 0 (disabled)"
		}
		return Unknown, "SecureBoot EFI variable has an unexpected value"
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return Unknown, "SecureBoot EFI variable not readable"
	}
	ents, derr := os.ReadDir(c.p("/sys/firmware/efi/efivars"))
	if derr != nil || len(ents) == 0 {
		return Unknown, "UEFI, but efivarfs not mounted or not readable"
	}
	return No, "UEFI firmware without a SecureBoot variable (Secure Boot not supported)"
}

// ---- screen lock ----

func (c *LinuxCollector) screenLock(ctx context.Context) (State, string) {
	desk := c.getenv("XDG_CURRENT_DESKTOP")
	if !strings.Contains(strings.ToUpper(desk), "GNOME") {
		if desk == "" {
			return Unknown, "no desktop session detected (XDG_CURRENT_DESKTOP unset)"
		}
		return Unknown, "screen lock of " + truncate(desk, 64) + " not inspected"
	}
	out, err := c.run(ctx, "gsettings", "get", "org.gnome.desktop.screensaver", "lock-enabled")
	if err != nil {
		return Unknown, "gsettings not available"
	}
	switch strings.TrimSpace(string(out)) {
	case "false":
		return No, "GNOME lock-enabled = false"
	case "true":
	default:
		return Unknown, "GNOME lock-enabled unreadable"
	}
	out, err = c.run(ctx, "gsettings", "get", "org.gnome.desktop.session", "idle-delay")
	if err != nil {
		return Unknown, "GNOME lock enabled, idle-delay unreadable"
	}
	f := strings.Fields(string(out)) // "uint32 300"
	if len(f) == 0 {
		return Unknown, "GNOME idle-delay unreadable"
	}
	delay, err := strconv.ParseUint(f[len(f)-1], 10, 32)
	if err != nil {
		return Unknown, "GNOME idle-delay unreadable"
	}
	if delay == 0 {
		return No, "GNOME lock enabled but idle-delay = 0 (never idles)"
	}
	return Yes, fmt.Sprintf("GNOME lock enabled, idle-delay %d s", delay)
}
