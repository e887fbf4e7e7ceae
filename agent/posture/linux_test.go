package posture

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var fixedNow = time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)

// copyTree copies testdata/name into a temporary directory, so a test can
// change one fixture without touching the others.
func copyTree(t *testing.T, name string) string {
	t.Helper()
	src := filepath.Join("testdata", name)
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(out, 0o755)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, out)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	if name == "lvm" { // kept out of testdata: ':' is not a portable file name
		dir := filepath.Join(dst, "sys", "dev", "block")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../../devices/virtual/block/dm-1", filepath.Join(dir, "254:1")); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func write(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeRunner answers commands from a table ("nft list ruleset" -> output);
// anything else fails like a missing binary.
func fakeRunner(outputs map[string]string) Runner {
	return func(_ context.Context, name string, args ...string) ([]byte, error) {
		if out, ok := outputs[strings.Join(append([]string{name}, args...), " ")]; ok {
			return []byte(out), nil
		}
		return nil, errors.New("exec: not found")
	}
}

var (
	alice = Identity{UID: 1000, GIDs: []int{1000, 100}, Username: "alice"}
	bob   = Identity{UID: 1001, GIDs: []int{1001, 100}, Username: "bob"}
)

func collect(t *testing.T, root string, id Identity, run Runner, env map[string]string) *Posture {
	t.Helper()
	c := &LinuxCollector{
		Root:     root,
		Run:      run,
		Identity: func() (Identity, error) { return id, nil },
		Getenv:   func(k string) string { return env[k] },
		Now:      func() time.Time { return fixedNow },
	}
	p, err := c.Collect(context.Background())
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("collected posture does not validate: %v", err)
	}
	return p
}

func wantState(t *testing.T, p *Posture, field string, got, want State, evidence string) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %q, want %q (evidence: %q)", field, got, want, p.Evidence[field])
	}
	if evidence != "" && !strings.Contains(p.Evidence[field], evidence) {
		t.Errorf("%s evidence = %q, want it to mention %q", field, p.Evidence[field], evidence)
	}
}

func TestDiskEncryption(t *testing.T) {
	tests := []struct {
		fixture  string
		flip     func(t *testing.T, root string)
		want     State
		evidence string
	}{
		{"luks", nil, Yes, "dm-crypt LUKS2"},
		{"plain", nil, No, "/dev/sda2 (ext4): sda2, no dm-crypt"},
		{"lvm", nil, Yes, "dm-1 [vg0-root] (LVM) on dm-0 [sda3_crypt] (dm-crypt LUKS2)"},
		{"container", nil, Unknown, "root is overlay"},
		// LVM on a plain partition: flip the lower layer from LUKS to a
		// plain linear mapping.
		{"lvm", func(t *testing.T, root string) {
			write(t, root, "sys/block/dm-0/dm/uuid", "LVM-plainlinear\n")
		}, No, "no dm-crypt layer"},
		// The same LUKS device found by /dev/dm-0 instead of its mapper name.
		{"luks", func(t *testing.T, root string) {
			write(t, root, "proc/self/mounts", "/dev/dm-0 / btrfs rw 0 0\n")
		}, Yes, "root on /dev/dm-0 (btrfs)"},
		// A mapper name that sysfs does not know: unknown, not "no".
		{"luks", func(t *testing.T, root string) {
			write(t, root, "proc/self/mounts", "/dev/mapper/other / ext4 rw 0 0\n")
		}, Unknown, "not found in /sys"},
		{"plain", func(t *testing.T, root string) {
			write(t, root, "proc/self/mounts", "tmpfs /tmp tmpfs rw 0 0\n")
		}, Unknown, "no mount of /"},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			root := copyTree(t, tt.fixture)
			if tt.flip != nil {
				tt.flip(t, root)
			}
			p := collect(t, root, alice, nil, nil)
			wantState(t, p, FieldDiskEncrypted, p.DiskEncrypted, tt.want, tt.evidence)
		})
	}
}

func TestUserIsAdmin(t *testing.T) {
	root := copyTree(t, "plain")
	tests := []struct {
		name     string
		id       Identity
		want     State
		evidence string
	}{
		{"listed in sudo", alice, Yes, "alice is listed in group sudo"},
		{"sudo gid in process groups", Identity{UID: 1002, GIDs: []int{27}, Username: "carol"}, Yes, "group sudo (gid 27)"},
		{"not in admin groups", bob, No, "not in sudo, wheel or admin"},
		{"root", Identity{UID: 0}, Yes, "uid 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := collect(t, root, tt.id, nil, nil)
			wantState(t, p, FieldUserIsAdmin, p.UserIsAdmin, tt.want, tt.evidence)
		})
	}
	// Flip: bob joins wheel.
	write(t, root, "etc/group", "wheel:x:10:bob\n")
	p := collect(t, root, bob, nil, nil)
	wantState(t, p, FieldUserIsAdmin, p.UserIsAdmin, Yes, "group wheel")
	// Without /etc/group it cannot be told.
	os.Remove(filepath.Join(root, "etc", "group"))
	p = collect(t, root, bob, nil, nil)
	wantState(t, p, FieldUserIsAdmin, p.UserIsAdmin, Unknown, "not fully readable")
}

func TestAntiMalware(t *testing.T) {
	// Fresh: daily.cld built 2026-11-14 (header stime), 6 days before fixedNow.
	root := copyTree(t, "luks")
	p := collect(t, root, alice, nil, nil)
	wantState(t, p, FieldAntiMalwarePresent, p.AntiMalwarePresent, Yes, "ClamAV (clamscan, freshclam); daily.cld built 2026-11-14")
	built := time.Unix(1794644580, 0)
	if p.AntiMalwareSignatureAge == nil || p.AntiMalwareSignatureAge.Duration() != fixedNow.Sub(built).Truncate(time.Second) {
		t.Fatalf("signature age = %v, want %v", p.AntiMalwareSignatureAge, fixedNow.Sub(built))
	}

	// Stale: replace daily.cld with one whose header has no build time,
	// so the header's date text is used.
	write(t, root, "var/lib/clamav/daily.cld", strings.Repeat(" ", 0)+
		padHeader("ClamAV-VDB:02 Jan 2026 10-00 +0000:27000:1:90:X:X:builder:"))
	p = collect(t, root, alice, nil, nil)
	wantAge := fixedNow.Sub(time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC))
	if p.AntiMalwareSignatureAge == nil || p.AntiMalwareSignatureAge.Duration() != wantAge {
		t.Fatalf("stale signature age = %v, want %v", p.AntiMalwareSignatureAge, wantAge)
	}

	// No header at all: the file's modification time.
	write(t, root, "var/lib/clamav/daily.cld", "garbage")
	mtime := fixedNow.Add(-40 * 24 * time.Hour)
	if err := os.Chtimes(filepath.Join(root, "var/lib/clamav/daily.cld"), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	p = collect(t, root, alice, nil, nil)
	if p.AntiMalwareSignatureAge == nil || p.AntiMalwareSignatureAge.Duration() != 40*24*time.Hour {
		t.Fatalf("mtime signature age = %v, want 960h", p.AntiMalwareSignatureAge)
	}

	// Database without binaries still counts as present.
	for _, b := range []string{"usr/bin/clamscan", "usr/bin/freshclam"} {
		os.Remove(filepath.Join(root, b))
	}
	p = collect(t, root, alice, nil, nil)
	wantState(t, p, FieldAntiMalwarePresent, p.AntiMalwarePresent, Yes, "ClamAV")

	// Absent.
	p = collect(t, copyTree(t, "plain"), alice, nil, nil)
	wantState(t, p, FieldAntiMalwarePresent, p.AntiMalwarePresent, No, "no ClamAV")
	if p.AntiMalwareSignatureAge != nil {
		t.Fatalf("signature age without anti-malware = %v", *p.AntiMalwareSignatureAge)
	}

	// Another product.
	root = copyTree(t, "plain")
	write(t, root, "opt/microsoft/mdatp/conf/x", "")
	p = collect(t, root, alice, nil, nil)
	wantState(t, p, FieldAntiMalwarePresent, p.AntiMalwarePresent, Yes, "Defender")
}

func padHeader(h string) string { return h + strings.Repeat(" ", 512-len(h)) + "body" }

func TestAntiMalwareUnreadable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads everything")
	}
	root := copyTree(t, "plain")
	dir := filepath.Join(root, "var", "lib", "clamav")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0)
	defer os.Chmod(dir, 0o755)
	p := collect(t, root, alice, nil, nil)
	wantState(t, p, FieldAntiMalwarePresent, p.AntiMalwarePresent, Unknown, "not readable")
}

const nftDrop = `table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iif "lo" accept
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
	}
}
`

const nftDockerOnly = `table ip nat {
	chain DOCKER {
		iifname "docker0" counter packets 0 bytes 0 return
	}
	chain POSTROUTING {
		type nat hook postrouting priority srcnat; policy accept;
		oifname != "docker0" ip saddr 172.17.0.0/16 counter masquerade
	}
}
table inet filter {
	chain input {
		type filter hook input priority filter; policy accept;
	}
}
`

func TestFirewall(t *testing.T) {
	tests := []struct {
		name     string
		fixture  string
		run      map[string]string
		want     State
		evidence string
	}{
		{"ufw enabled", "luks", nil, Yes, "ufw enabled"},
		{"nft input drop", "plain", map[string]string{"nft list ruleset": nftDrop}, Yes, "chain input"},
		{"nft docker only", "plain", map[string]string{"nft list ruleset": nftDockerOnly}, No, "nftables: no input filtering"},
		{"nft empty", "plain", map[string]string{"nft list ruleset": ""}, No, "ufw disabled"},
		{"iptables drop policy", "plain", map[string]string{"iptables -S INPUT": "-P INPUT DROP\n"}, Yes, "INPUT policy DROP"},
		{"iptables rules", "plain", map[string]string{"nft list ruleset": "", "iptables -S INPUT": "-P INPUT ACCEPT\n-A INPUT -p tcp --dport 22 -j ACCEPT\n"}, Yes, "INPUT rules"},
		{"iptables open", "plain", map[string]string{"iptables -S INPUT": "-P INPUT ACCEPT\n"}, No, "policy ACCEPT"},
		{"nothing answers", "plain", nil, Unknown, "neither nft nor iptables answered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := collect(t, copyTree(t, tt.fixture), alice, fakeRunner(tt.run), nil)
			wantState(t, p, FieldFirewallEnabled, p.FirewallEnabled, tt.want, tt.evidence)
		})
	}
	// Flip the fixture: ufw disabled, nothing else answers.
	root := copyTree(t, "luks")
	write(t, root, "etc/ufw/ufw.conf", "ENABLED=no\n")
	p := collect(t, root, alice, nil, nil)
	wantState(t, p, FieldFirewallEnabled, p.FirewallEnabled, Unknown, "ufw disabled")
}

func TestSecureBoot(t *testing.T) {
	p := collect(t, copyTree(t, "luks"), alice, nil, nil)
	wantState(t, p, FieldSecureBoot, p.SecureBoot, Yes, "= 1")
	p = collect(t, copyTree(t, "lvm"), alice, nil, nil)
	wantState(t, p, FieldSecureBoot, p.SecureBoot, No, "= 0")
	p = collect(t, copyTree(t, "plain"), alice, nil, nil)
	wantState(t, p, FieldSecureBoot, p.SecureBoot, Unknown, "legacy BIOS")

	root := copyTree(t, "luks")
	os.Remove(filepath.Join(root, filepath.FromSlash(secureBootVar)))
	p = collect(t, root, alice, nil, nil)
	wantState(t, p, FieldSecureBoot, p.SecureBoot, No, "not supported")
	// efivarfs not mounted: an empty directory.
	os.RemoveAll(filepath.Join(root, "sys/firmware/efi/efivars"))
	os.MkdirAll(filepath.Join(root, "sys/firmware/efi/efivars"), 0o755)
	p = collect(t, root, alice, nil, nil)
	wantState(t, p, FieldSecureBoot, p.SecureBoot, Unknown, "efivarfs")
	write(t, root, secureBootVar, "\x06\x00")
	p = collect(t, root, alice, nil, nil)
	wantState(t, p, FieldSecureBoot, p.SecureBoot, Unknown, "malformed")
}

func TestScreenLock(t *testing.T) {
	gnome := map[string]string{"XDG_CURRENT_DESKTOP": "ubuntu:GNOME"}
	root := copyTree(t, "plain")
	tests := []struct {
		name     string
		env      map[string]string
		run      map[string]string
		want     State
		evidence string
	}{
		{"gnome locks", gnome, map[string]string{
			"gsettings get org.gnome.desktop.screensaver lock-enabled": "true\n",
			"gsettings get org.gnome.desktop.session idle-delay":       "uint32 300\n"}, Yes, "idle-delay 300 s"},
		{"gnome lock off", gnome, map[string]string{
			"gsettings get org.gnome.desktop.screensaver lock-enabled": "false\n"}, No, "lock-enabled = false"},
		{"gnome never idles", gnome, map[string]string{
			"gsettings get org.gnome.desktop.screensaver lock-enabled": "true\n",
			"gsettings get org.gnome.desktop.session idle-delay":       "uint32 0\n"}, No, "never idles"},
		{"gnome without gsettings", gnome, nil, Unknown, "gsettings not available"},
		{"kde", map[string]string{"XDG_CURRENT_DESKTOP": "KDE"}, nil, Unknown, "KDE not inspected"},
		{"no session", nil, map[string]string{
			"gsettings get org.gnome.desktop.screensaver lock-enabled": "true\n"}, Unknown, "no desktop session"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := collect(t, root, alice, fakeRunner(tt.run), tt.env)
			wantState(t, p, FieldScreenLock, p.ScreenLock, tt.want, tt.evidence)
		})
	}
}

func TestOSReleaseAndIdentity(t *testing.T) {
	p := collect(t, copyTree(t, "container"), alice, nil, nil)
	if p.Platform != "linux" || p.OSName != "Debian GNU/Linux" || p.OSVersion != "12" ||
		p.Kernel != "6.1.0-18-amd64" || p.Hostname != "alice-laptop" || !p.CollectedAt.Equal(fixedNow) {
		t.Fatalf("got %q %q %q %q %q %v", p.Platform, p.OSName, p.OSVersion, p.Kernel, p.Hostname, p.CollectedAt)
	}
	if p.Evidence[FieldOSName] != "Debian GNU/Linux 12 (bookworm)" {
		t.Errorf("os evidence = %q", p.Evidence[FieldOSName])
	}
	wantState(t, p, FieldRooted, p.Rooted, Unknown, "not applicable")

	got := ParseOSRelease([]byte("NAME=Fedora Linux\nVERSION_ID=41\nA='single quoted'\nB=\"esc \\\"q\\\" \\$x\"\n#C=1\nbroken\n"))
	want := map[string]string{"NAME": "Fedora Linux", "VERSION_ID": "41", "A": "single quoted", "B": `esc "q" $x`}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("ParseOSRelease[%s] = %q, want %q", k, got[k], v)
		}
	}
	if _, ok := got["#C"]; ok || len(got) != len(want) {
		t.Errorf("ParseOSRelease = %v", got)
	}

	// /usr/lib/os-release is the fallback.
	root := copyTree(t, "container")
	os.Rename(filepath.Join(root, "etc/os-release"), filepath.Join(root, "usr-lib-os-release"))
	write(t, root, "usr/lib/os-release", "NAME=Arch Linux\n")
	p = collect(t, root, alice, nil, nil)
	if p.OSName != "Arch Linux" || p.OSVersion != "" {
		t.Errorf("fallback os-release: %q %q", p.OSName, p.OSVersion)
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/mnt/my\040disk`: "/mnt/my disk", `/plain`: "/plain", `/x\04`: `/x\04`, `a\\b`: `a\\b`} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNoCommandsOutsideRealRoot(t *testing.T) {
	c := &LinuxCollector{Root: copyTree(t, "plain"), Identity: func() (Identity, error) { return bob, nil }, Getenv: func(string) string { return "GNOME" }}
	p, err := c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if p.FirewallEnabled != Unknown || p.ScreenLock != Unknown {
		t.Fatalf("commands ran against a fixture root: firewall %q, screen lock %q", p.FirewallEnabled, p.ScreenLock)
	}
}

func TestCollectorsOnThisMachine(t *testing.T) {
	for _, c := range []Collector{NewCollector(), &GenericCollector{}} {
		p, err := c.Collect(context.Background())
		if err != nil {
			t.Fatalf("%T: %v", c, err)
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("%T: %v", c, err)
		}
		t.Logf("%T:\n%s", c, p.Table())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewCollector().Collect(ctx); err == nil {
		t.Fatal("Collect with a cancelled context succeeded")
	}
}

func TestUserIsAdminIdentityError(t *testing.T) {
	c := &LinuxCollector{Root: copyTree(t, "plain"), Identity: func() (Identity, error) { return Identity{}, errors.New("no user") }}
	p, err := c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, p, FieldUserIsAdmin, p.UserIsAdmin, Unknown, "cannot determine")
}
