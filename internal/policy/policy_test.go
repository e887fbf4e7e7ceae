package policy

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/cases/*.golden.json")

// goldenFile is one testdata/cases/*.json file: a policy document and the
// requests to evaluate against it, each with its hand-written expectation.
type goldenFile struct {
	Locations []NamedLocation `json:"locations"`
	Policies  []Policy        `json:"policies"`
	Cases     []struct {
		Name         string   `json:"name"`
		Input        Input    `json:"input"`
		WantOutcome  Outcome  `json:"want_outcome"`
		WantControls []string `json:"want_controls"`
	} `json:"cases"`
}

type goldenResult struct {
	Name     string   `json:"name"`
	Decision Decision `json:"decision"`
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/cases/*.json")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, ".golden.json") {
			continue
		}
		n++
		t.Run(strings.TrimSuffix(filepath.Base(f), ".json"), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var gf goldenFile
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&gf); err != nil {
				t.Fatal(err)
			}
			set, err := Compile(gf.Policies, gf.Locations)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			var got []goldenResult
			for _, c := range gf.Cases {
				d := set.Evaluate(c.Input)
				got = append(got, goldenResult{c.Name, d})
				if d.Outcome != c.WantOutcome {
					t.Errorf("%s: outcome %s, want %s (%+v)", c.Name, d.Outcome, c.WantOutcome, d.Policies)
				}
				if !slices.Equal(d.Controls, c.WantControls) {
					t.Errorf("%s: controls %v, want %v", c.Name, d.Controls, c.WantControls)
				}
			}
			out, err := json.MarshalIndent(got, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, '\n')
			golden := strings.TrimSuffix(f, ".json") + ".golden.json"
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if !bytes.Equal(out, want) {
				t.Errorf("decisions differ from %s (run with -update after checking):\n%s", golden, out)
			}
		})
	}
	if n == 0 {
		t.Fatal("no golden cases")
	}
}
