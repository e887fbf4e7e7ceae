package mitre

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every technique names tactics the table knows, sub-techniques carry
// their parent's name and tactics, and every assumed technique exists.
func TestTableConsistent(t *testing.T) {
	for id, e := range techniques {
		if !ValidID(id) || e.name == "" || len(e.tactics) == 0 {
			t.Errorf("%s: malformed entry %+v", id, e)
		}
		for _, ta := range e.tactics {
			if tactics[ta] == "" {
				t.Errorf("%s: unknown tactic %s", id, ta)
			}
		}
		if parent, _, sub := strings.Cut(id, "."); sub {
			p, ok := techniques[parent]
			if !ok {
				t.Errorf("%s: no parent %s", id, parent)
				continue
			}
			if !strings.HasPrefix(e.name, p.name+": ") || strings.Join(p.tactics, ",") != strings.Join(e.tactics, ",") {
				t.Errorf("%s: name %q / tactics %v do not follow the parent's %q / %v", id, e.name, e.tactics, p.name, p.tactics)
			}
		}
	}
	for typ, id := range ByType {
		if _, ok := Lookup(id); !ok {
			t.Errorf("ByType[%s] = %s: not in the table", typ, id)
		}
	}
}

func TestLookup(t *testing.T) {
	tech, ok := Lookup("T1550.001")
	if !ok || tech.Name != "Use Alternate Authentication Material: Application Access Token" ||
		len(tech.Tactics) != 2 || tech.Tactics[0] != (Tactic{"TA0005", "Defense Evasion"}) || tech.Tactics[1] != (Tactic{"TA0008", "Lateral Movement"}) {
		t.Errorf("Lookup(T1550.001) = %+v, %v", tech, ok)
	}
	if tech, ok := Lookup("T9999"); ok || tech.ID != "T9999" || tech.Name != "" || len(tech.Tactics) != 0 {
		t.Errorf("Lookup(unknown) = %+v, %v", tech, ok)
	}
	got := TacticsOf([]string{"T1539", "T1550.004", "T9999", "T1539"})
	want := []string{"TA0005", "TA0006", "TA0008"}
	if len(got) != len(want) {
		t.Fatalf("TacticsOf = %v", got)
	}
	for i := range want {
		if got[i].ID != want[i] {
			t.Errorf("TacticsOf = %v, want %v", got, want)
		}
	}
	for _, bad := range []string{"", "T155", "T1550.1", "t1550", "T1550.001 ", "TA0006"} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q)", bad)
		}
	}
}

// The table in docs/secops.md is this table.
func TestDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "secops.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, tech := range All() {
		var ta []string
		for _, x := range tech.Tactics {
			ta = append(ta, x.ID+" "+x.Name)
		}
		row := "| " + tech.ID + " | " + tech.Name + " | " + strings.Join(ta, ", ") + " |"
		if !strings.Contains(doc, row) {
			t.Errorf("docs/secops.md lacks the row\n%s", row)
		}
	}
	for typ, id := range ByType {
		if row := "| `" + typ + "` | " + id + " |"; !strings.Contains(doc, row) {
			t.Errorf("docs/secops.md lacks the row\n%s", row)
		}
	}
}
