package policy

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// The YAML decoder names Go types in its errors ("cannot unmarshal !!seq
// into policy.IncludeExclude", "field bogus not found in type
// policy.Document"), which mean nothing to someone writing a policy file.
// yamlErrors rewrites them in the file's own terms: the keys a mapping
// takes, and what kind of value was expected and found.

var (
	reUnknownField = regexp.MustCompile("^line (\\d+): field (.+) not found in type (\\S+)$")
	reWrongKind    = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+)(?: `([^`]*)`)? into (\\S+)$")
)

// yamlErrors returns err with the messages of a *yaml.TypeError
// rewritten, one error per problem; other errors are returned as they are.
func yamlErrors(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	errs := make([]error, 0, len(te.Errors))
	for _, msg := range te.Errors {
		errs = append(errs, errors.New("policy: "+friendlyYAML(msg)))
	}
	return errors.Join(errs...)
}

func friendlyYAML(msg string) string {
	if m := reUnknownField.FindStringSubmatch(msg); m != nil {
		s := fmt.Sprintf("line %s: unknown key %q", m[1], m[2])
		if keys := typeKeys(m[3]); len(keys) > 0 {
			s += " (allowed here: " + strings.Join(keys, ", ") + ")"
		}
		return s
	}
	if m := reWrongKind.FindStringSubmatch(msg); m != nil {
		got := yamlKind(m[2])
		if m[3] != "" {
			got += " (" + m[3] + ")"
		}
		return fmt.Sprintf("line %s: expected %s, got %s", m[1], describeType(m[4]), got)
	}
	return msg
}

// yamlKind names a YAML node tag.
func yamlKind(tag string) string {
	switch tag {
	case "seq":
		return "a list"
	case "map":
		return "a mapping"
	case "str":
		return "a string"
	case "int", "float":
		return "a number"
	case "bool":
		return "true or false"
	case "null":
		return "nothing"
	}
	return "a " + tag
}

// describeType says what a Go type name from the decoder expects, in YAML
// terms.
func describeType(name string) string {
	switch {
	case strings.HasPrefix(name, "[]"):
		return "a list"
	case strings.HasPrefix(name, "map["):
		return "a mapping"
	case name == "string":
		return "a string"
	case name == "bool":
		return "true or false"
	case strings.HasPrefix(name, "int") || strings.HasPrefix(name, "uint") || strings.HasPrefix(name, "float"):
		return "a number"
	}
	if keys := typeKeys(name); len(keys) > 0 {
		return "a mapping with the keys " + strings.Join(keys, ", ")
	}
	return "another kind of value"
}

var (
	keysOnce sync.Once
	keysOf   map[string][]string // "policy.IncludeExclude" -> its YAML keys
)

// typeKeys returns the YAML keys of a struct type of the document, by the
// name the decoder uses for it.
func typeKeys(name string) []string {
	keysOnce.Do(func() {
		keysOf = map[string][]string{}
		var walk func(t reflect.Type)
		walk = func(t reflect.Type) {
			for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map || t.Kind() == reflect.Array {
				t = t.Elem()
			}
			if t.Kind() != reflect.Struct || keysOf[t.String()] != nil {
				return
			}
			var keys []string
			keysOf[t.String()] = keys // mark before recursing
			for f := range t.Fields() {
				if !f.IsExported() {
					continue
				}
				tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
				if tag == "-" {
					continue
				}
				if tag == "" {
					tag = strings.ToLower(f.Name)
				}
				keys = append(keys, tag)
				walk(f.Type)
			}
			slices.Sort(keys)
			keysOf[t.String()] = keys
		}
		walk(reflect.TypeFor[Document]())
	})
	return keysOf[name]
}
