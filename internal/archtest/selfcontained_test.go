package archtest

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestSelfContained keeps the repository whole on its own: a fresh clone
// with nothing beside it must build, pass its tests and make sense to a
// reader. No file may reach for a folder beside the checkout (test
// vectors belong in the package's testdata with their provenance) or
// point at documents a user does not have.
func TestSelfContained(t *testing.T) {
	root := moduleRoot(t)
	// Built from parts so that this file does not match itself.
	banned := []string{
		".." + "/shared",
		`"..", "..", "` + "shared" + `"`,
		`"..", "` + "shared" + `"`,
		"DESIGN" + ".md",
	}
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "node_modules", "fuzz":
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(path) {
		case ".go", ".md", ".sh", ".yaml", ".yml", ".mjs", ".js", ".html", "":
		default:
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		checked++
		for _, b := range banned {
			if bytes.Contains(data, []byte(b)) {
				rel, _ := filepath.Rel(root, path)
				t.Errorf("%s mentions %q: copy what it needs into the repository (tests: the package's testdata, with its source) and say it there", rel, b)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 100 {
		t.Fatalf("checked only %d files under %s: is the walk rooted at the module?", checked, root)
	}
}

// moduleRoot is the folder holding go.mod, two levels above this package.
func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s: %v", root, err)
	}
	return root
}
