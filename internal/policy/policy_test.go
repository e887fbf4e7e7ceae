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
		// Expect, optional, is checked as by Set.RunCases.
		Expect *Expectation `json:"expect"`
	} `json:"cases"`
}

func loadGolden(t *testing.T, f string) goldenFile {
	t.Helper()
	data, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	var gf goldenFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&gf); err != nil {
		t.Fatalf("%s: %v", f, err)
	}
	return gf
}

// goldenFiles lists the testdata/cases inputs.
func goldenFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("testdata/cases/*.json")
	if err != nil {
		t.Fatal(err)
	}
	files = slices.DeleteFunc(files, func(f string) bool { return strings.HasSuffix(f, ".golden.json") })
	if len(files) == 0 {
		t.Fatal("no golden cases")
	}
	return files
}

type goldenResult struct {
	Name     string   `json:"name"`
	Decision Decision `json:"decision"`
}

func TestGolden(t *testing.T) {
	for _, f := range goldenFiles(t) {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".json"), func(t *testing.T) {
			gf := loadGolden(t, f)
			set, err := Compile(gf.Policies, gf.Locations)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			known := map[string]bool{}
			for _, p := range gf.Policies {
				known[p.ID] = true
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
				if c.Expect != nil {
					for _, m := range checkExpectation(c.Expect, &d, known) {
						t.Errorf("%s: %s", c.Name, m)
					}
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
}

// A user list may name a user by id or by username.
func TestUserMatchesByUsername(t *testing.T) {
	set, err := Compile([]Policy{{ID: "p", State: StateEnabled,
		Assignments: Assignments{Users: IncludeExclude{Include: []string{All}, Exclude: []string{"breakglass"}}, Applications: IncludeExclude{Include: []string{All}}},
		Grant:       GrantControls{Block: true}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user UserInput
		want Outcome
	}{
		{UserInput{ID: "u-1", Username: "breakglass"}, OutcomeAllow},
		{UserInput{ID: "breakglass"}, OutcomeAllow},
		{UserInput{ID: "u-2", Username: "alice"}, OutcomeBlock},
		{UserInput{ID: "u-3"}, OutcomeBlock},
	} {
		if d := set.Evaluate(Input{User: tc.user, App: AppInput{ClientID: "c"}, Flow: FlowInteractive}); d.Outcome != tc.want {
			t.Errorf("%+v: %s, want %s", tc.user, d.Outcome, tc.want)
		}
	}
}
