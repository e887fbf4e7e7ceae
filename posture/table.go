package posture

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
)

// Table renders p as a readable three-column table (check, value,
// evidence) for `ward device posture`. It ends with a newline.
func (p *Posture) Table() string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "CHECK\tVALUE\tEVIDENCE")
	row := func(label, value, field string) {
		fmt.Fprintf(w, "%s\t%s\t%s\n", label, oneLine(orDash(value)), oneLine(p.Evidence[field]))
	}
	osName := strings.TrimSpace(p.OSName + " " + p.OSVersion)
	row("Platform", p.Platform, FieldPlatform)
	row("Operating system", osName, FieldOSName)
	row("Kernel", p.Kernel, FieldKernel)
	row("Host name", p.Hostname, FieldHostname)
	row("Disk encrypted", string(norm(p.DiskEncrypted)), FieldDiskEncrypted)
	row("User is admin", string(norm(p.UserIsAdmin)), FieldUserIsAdmin)
	row("Anti-malware", string(norm(p.AntiMalwarePresent)), FieldAntiMalwarePresent)
	age := "unknown"
	if p.AntiMalwareSignatureAge != nil {
		age = formatAge(p.AntiMalwareSignatureAge.Duration())
	}
	row("Signature age", age, FieldAntiMalwareSignatureAge)
	row("Firewall", string(norm(p.FirewallEnabled)), FieldFirewallEnabled)
	row("Secure Boot", string(norm(p.SecureBoot)), FieldSecureBoot)
	row("Screen lock", string(norm(p.ScreenLock)), FieldScreenLock)
	row("Rooted", string(norm(p.Rooted)), FieldRooted)
	collected := ""
	if !p.CollectedAt.IsZero() {
		collected = p.CollectedAt.UTC().Format(time.RFC3339)
	}
	row("Collected at", collected, FieldCollectedAt)
	w.Flush()
	return b.String()
}

func norm(s State) State {
	if s == "" {
		return Unknown
	}
	return s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine keeps table rows on one line (evidence comes from the system
// and, on the server, from the device).
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// formatAge renders a duration as days and hours ("3d 4h", "5h 2m").
func formatAge(d time.Duration) string {
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd %dh", d/(24*time.Hour), d%(24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh %dm", d/time.Hour, d%time.Hour/time.Minute)
	}
	return fmt.Sprintf("%dm %ds", d/time.Minute, d%time.Minute/time.Second)
}
