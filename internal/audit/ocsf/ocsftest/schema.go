// Package ocsftest validates OCSF records against the OCSF schema's own
// source files (dictionary.json, categories.json, events/, objects/,
// profiles/ of github.com/ocsf/ocsf-schema), vendored in
// internal/audit/ocsf/testdata. It is for tests only.
//
// The schema is not JSON Schema: it is OCSF's own description language,
// from which the OCSF server generates JSON Schema. This package
// interprets the part of that language the vendored classes use, which
// is what the generated JSON Schema would check and a little more:
// inheritance (extends) and profile inclusion ($include), per-class and
// per-object overrides of an attribute's requirement, type and enum;
// required attributes (also of the profiles a record declares in
// metadata.profiles); no attribute the class or object does not define;
// the scalar types with their regular expressions, lengths and ranges;
// enums; arrays; the at_least_one and just_one constraints; deprecated
// attributes; and the classification (class_uid, category_uid,
// type_uid = class_uid*100 + activity_id, metadata.version).
package ocsftest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Dir returns the vendored schema's directory.
func Dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata", "ocsf-schema-1.8.0")
}

// Schema is a loaded OCSF schema.
type Schema struct {
	Version    string
	dir        string
	dict       map[string]dictAttr
	types      map[string]scalar
	rawObjects map[string]rawDef
	rawEvents  map[string]rawDef
	categories map[string]int
	classes    map[int]*def

	mu      sync.Mutex // objects are compiled on first use
	objects map[string]*def
}

type dictAttr struct {
	Type       string                     `json:"type"`
	IsArray    bool                       `json:"is_array"`
	Enum       map[string]json.RawMessage `json:"enum"`
	Deprecated json.RawMessage            `json:"@deprecated"`
}

type scalar struct {
	base   string // string_t, integer_t, long_t, float_t, boolean_t, json_t
	re     *regexp.Regexp
	maxLen int
	rng    []float64
}

type rawAttr struct {
	Requirement string                     `json:"requirement"`
	Type        string                     `json:"type"`
	Enum        map[string]json.RawMessage `json:"enum"`
	Profile     json.RawMessage            `json:"profile"` // null: native to this class, not the profile's
	Deprecated  json.RawMessage            `json:"@deprecated"`
}

type rawDef struct {
	Name        string                     `json:"name"`
	UID         *int                       `json:"uid"`
	Category    string                     `json:"category"`
	Extends     string                     `json:"extends"`
	Attributes  map[string]json.RawMessage `json:"attributes"`
	Constraints map[string][]string        `json:"constraints"`
}

// attr is an attribute of a compiled class or object.
type attr struct {
	typ         string // a scalar type or an object name
	isArray     bool
	requirement string
	enum        map[string]bool
	profile     string // set when the attribute comes from a profile
	deprecated  bool
}

// def is a compiled class or object.
type def struct {
	name        string
	uid         int // classes: class_uid
	category    int
	attrs       map[string]*attr
	constraints map[string][]string
}

// Load reads the schema in dir.
func Load(dir string) (*Schema, error) {
	s := &Schema{dict: map[string]dictAttr{}, types: map[string]scalar{}, rawObjects: map[string]rawDef{},
		rawEvents: map[string]rawDef{}, categories: map[string]int{}, objects: map[string]*def{}, classes: map[int]*def{}, dir: dir}
	var version struct {
		Version string `json:"version"`
	}
	if err := readJSON(filepath.Join(dir, "version.json"), &version); err != nil {
		return nil, err
	}
	s.Version = version.Version
	var dict struct {
		Attributes map[string]dictAttr `json:"attributes"`
		Types      struct {
			Attributes map[string]struct {
				Type   string    `json:"type"`
				Regex  string    `json:"regex"`
				MaxLen int       `json:"max_len"`
				Range  []float64 `json:"range"`
			} `json:"attributes"`
		} `json:"types"`
	}
	if err := readJSON(filepath.Join(dir, "dictionary.json"), &dict); err != nil {
		return nil, err
	}
	s.dict = dict.Attributes
	for name, t := range dict.Types.Attributes {
		sc := scalar{base: name, maxLen: t.MaxLen, rng: t.Range}
		if t.Type != "" {
			sc.base = t.Type
		}
		if t.Regex != "" {
			re, err := regexp.Compile(t.Regex)
			if err != nil {
				return nil, fmt.Errorf("ocsftest: type %s: regex: %w", name, err)
			}
			sc.re = re
		}
		s.types[name] = sc
	}
	var cats struct {
		Attributes map[string]struct {
			UID int `json:"uid"`
		} `json:"attributes"`
	}
	if err := readJSON(filepath.Join(dir, "categories.json"), &cats); err != nil {
		return nil, err
	}
	for name, c := range cats.Attributes {
		s.categories[name] = c.UID
	}
	for _, sub := range []string{"objects", "events"} {
		err := filepath.WalkDir(filepath.Join(dir, sub), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".json") {
				return err
			}
			var r rawDef
			if err := readJSON(p, &r); err != nil {
				return err
			}
			if sub == "objects" {
				s.rawObjects[r.Name] = r
			} else {
				s.rawEvents[r.Name] = r
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	for name, r := range s.rawEvents {
		if r.UID == nil {
			continue // a category's parent class (iam, findings, …)
		}
		d, err := s.compile(dir, name, s.rawEvents, map[string]bool{})
		if err != nil {
			return nil, err
		}
		d.uid = d.category*1000 + *r.UID
		s.classes[d.uid] = d
	}
	return s, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("ocsftest: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("ocsftest: %s: %w", path, err)
	}
	return nil
}

// compile resolves a class or object: its parent's attributes, then its
// included profiles, then its own overrides.
func (s *Schema) compile(dir, name string, raws map[string]rawDef, seen map[string]bool) (*def, error) {
	r, ok := raws[name]
	if !ok {
		return nil, fmt.Errorf("ocsftest: %q is not defined", name)
	}
	if seen[name] {
		return nil, fmt.Errorf("ocsftest: %q extends itself", name)
	}
	seen[name] = true
	d := &def{name: name, attrs: map[string]*attr{}, constraints: r.Constraints}
	if r.Extends != "" && r.Extends != "object" {
		parent, err := s.compile(dir, r.Extends, raws, seen)
		if err != nil {
			return nil, err
		}
		for k, a := range parent.attrs {
			c := *a
			c.enum = maps(a.enum)
			d.attrs[k] = &c
		}
		d.category = parent.category
		if d.constraints == nil {
			d.constraints = parent.constraints
		}
	}
	if r.Category != "" {
		if c, ok := s.categories[r.Category]; ok {
			d.category = c
		}
	}
	if inc, ok := r.Attributes["$include"]; ok {
		var files []string
		if err := json.Unmarshal(inc, &files); err != nil {
			return nil, fmt.Errorf("ocsftest: %s: $include: %w", name, err)
		}
		for _, f := range files {
			var prof struct {
				Name       string                     `json:"name"`
				Attributes map[string]json.RawMessage `json:"attributes"`
			}
			if err := readJSON(filepath.Join(dir, f), &prof); err != nil {
				return nil, err
			}
			for k, raw := range prof.Attributes {
				if err := s.merge(d, k, raw, prof.Name); err != nil {
					return nil, fmt.Errorf("ocsftest: %s (%s): %w", name, f, err)
				}
			}
		}
	}
	for k, raw := range r.Attributes {
		if k == "$include" {
			continue
		}
		if err := s.merge(d, k, raw, ""); err != nil {
			return nil, fmt.Errorf("ocsftest: %s: %w", name, err)
		}
	}
	return d, nil
}

// merge applies one attribute entry to d.
func (s *Schema) merge(d *def, name string, raw json.RawMessage, profile string) error {
	var ra rawAttr
	if err := json.Unmarshal(raw, &ra); err != nil {
		return fmt.Errorf("attribute %s: %w", name, err)
	}
	a, ok := d.attrs[name]
	if !ok {
		da, ok := s.dict[name]
		if !ok {
			return fmt.Errorf("attribute %s is not in the dictionary", name)
		}
		a = &attr{typ: da.Type, isArray: da.IsArray, requirement: "optional", enum: map[string]bool{}, deprecated: len(da.Deprecated) > 0}
		for v := range da.Enum {
			a.enum[v] = true
		}
		a.profile = profile
		d.attrs[name] = a
	}
	if len(ra.Profile) > 0 {
		var p *string
		if err := json.Unmarshal(ra.Profile, &p); err != nil {
			return fmt.Errorf("attribute %s: profile: %w", name, err)
		}
		a.profile = ""
		if p != nil {
			a.profile = *p
		}
	}
	if ra.Requirement != "" {
		a.requirement = ra.Requirement
	}
	if ra.Type != "" {
		a.typ = ra.Type
	}
	for v := range ra.Enum {
		a.enum[v] = true
	}
	if len(ra.Deprecated) > 0 {
		a.deprecated = true
	}
	return nil
}

func maps(m map[string]bool) map[string]bool {
	out := make(map[string]bool, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (s *Schema) object(dir, name string) (*def, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.objects[name]; ok {
		return d, nil
	}
	d, err := s.compile(dir, name, s.rawObjects, map[string]bool{})
	if err != nil {
		return nil, err
	}
	s.objects[name] = d
	return d, nil
}

// ClassName returns the name of class uid ("" if the schema has none).
func (s *Schema) ClassName(uid int) string {
	if d, ok := s.classes[uid]; ok {
		return d.name
	}
	return ""
}

// Validate checks one record (a JSON object) and returns every problem
// found, joined, or nil.
func (s *Schema) Validate(record []byte) error {
	dec := json.NewDecoder(bytes.NewReader(record))
	dec.UseNumber()
	var rec map[string]any
	if err := dec.Decode(&rec); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	v := &validation{s: s, profiles: map[string]bool{}}
	classUID, ok := intOf(rec["class_uid"])
	if !ok {
		return errors.New("class_uid: missing or not an integer")
	}
	class, ok := s.classes[int(classUID)]
	if !ok {
		return fmt.Errorf("class_uid: %d is not a class of OCSF %s", classUID, s.Version)
	}
	if md, ok := rec["metadata"].(map[string]any); ok {
		if ps, ok := md["profiles"].([]any); ok {
			for _, p := range ps {
				if name, ok := p.(string); ok {
					v.profiles[name] = true
				}
			}
		}
		if md["version"] != s.Version {
			v.add("metadata.version", "is %v, want %s", md["version"], s.Version)
		}
	}
	if cat, ok := intOf(rec["category_uid"]); !ok || int(cat) != class.category {
		v.add("category_uid", "is %v, want %d for class %s", rec["category_uid"], class.category, class.name)
	}
	act, okA := intOf(rec["activity_id"])
	typ, okT := intOf(rec["type_uid"])
	if okA && okT && typ != classUID*100+act {
		v.add("type_uid", "is %d, want class_uid*100+activity_id = %d", typ, classUID*100+act)
	}
	v.object("", class, rec)
	return errors.Join(v.errs...)
}

type validation struct {
	s        *Schema
	profiles map[string]bool
	errs     []error
}

func (v *validation) add(path, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func (v *validation) object(path string, d *def, obj map[string]any) {
	names := make([]string, 0, len(obj))
	for k := range obj {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		a, ok := d.attrs[k]
		switch {
		case !ok:
			v.add(join(path, k), "%s has no attribute %q", d.name, k)
			continue
		case a.profile != "" && !v.profiles[a.profile]:
			v.add(join(path, k), "belongs to the %s profile, which metadata.profiles does not list", a.profile)
		case a.deprecated:
			v.add(join(path, k), "is deprecated")
		}
		v.value(join(path, k), a, obj[k])
	}
	reqs := make([]string, 0)
	for k, a := range d.attrs {
		if a.requirement != "required" || a.profile != "" && !v.profiles[a.profile] {
			continue
		}
		if _, ok := obj[k]; !ok {
			reqs = append(reqs, k)
		}
	}
	sort.Strings(reqs)
	for _, k := range reqs {
		v.add(join(path, k), "required by %s", d.name)
	}
	if one := d.constraints["at_least_one"]; len(one) > 0 {
		if !slices.ContainsFunc(one, func(k string) bool { _, ok := obj[k]; return ok }) {
			v.add(orRoot(path), "%s needs at least one of %s", d.name, strings.Join(one, ", "))
		}
	}
	if one := d.constraints["just_one"]; len(one) > 0 {
		n := 0
		for _, k := range one {
			if _, ok := obj[k]; ok {
				n++
			}
		}
		if n != 1 {
			v.add(orRoot(path), "%s needs exactly one of %s", d.name, strings.Join(one, ", "))
		}
	}
}

func orRoot(path string) string {
	if path == "" {
		return "(record)"
	}
	return path
}

func (v *validation) value(path string, a *attr, val any) {
	if a.isArray {
		arr, ok := val.([]any)
		if !ok {
			v.add(path, "must be an array")
			return
		}
		for i, e := range arr {
			v.one(path+"["+strconv.Itoa(i)+"]", a, e)
		}
		return
	}
	v.one(path, a, val)
}

func (v *validation) one(path string, a *attr, val any) {
	if val == nil {
		v.add(path, "is null")
		return
	}
	if sc, ok := v.s.types[a.typ]; ok {
		v.scalar(path, a.typ, sc, val)
		// The classification's enums are per class; Validate checks them.
		if len(a.enum) > 0 && !a.enum[fmt.Sprint(val)] && path != "class_uid" && path != "category_uid" && path != "type_uid" {
			v.add(path, "%v is not one of the enum's values", val)
		}
		return
	}
	if a.typ == "object" {
		if _, ok := val.(map[string]any); !ok {
			v.add(path, "must be an object")
		}
		return
	}
	obj, ok := val.(map[string]any)
	if !ok {
		v.add(path, "must be a %s object", a.typ)
		return
	}
	d, err := v.s.object(v.s.dir, a.typ)
	if err != nil {
		v.add(path, "%v", err)
		return
	}
	v.object(path, d, obj)
}

func (v *validation) scalar(path, name string, sc scalar, val any) {
	switch sc.base {
	case "json_t":
		return
	case "boolean_t":
		if _, ok := val.(bool); !ok {
			v.add(path, "must be a boolean (%s)", name)
		}
		return
	case "integer_t", "long_t":
		n, ok := intOf(val)
		if !ok {
			v.add(path, "must be an integer (%s)", name)
			return
		}
		if name == "integer_t" || sc.base == "integer_t" && name != "port_t" {
			if n < -1<<31 || n > 1<<31-1 {
				v.add(path, "%d does not fit a 32-bit integer", n)
			}
		}
		if len(sc.rng) == 2 && (float64(n) < sc.rng[0] || float64(n) > sc.rng[1]) {
			v.add(path, "%d is outside %v (%s)", n, sc.rng, name)
		}
		return
	case "float_t":
		if _, ok := val.(json.Number); !ok {
			v.add(path, "must be a number (%s)", name)
		}
		return
	case "string_t":
		str, ok := val.(string)
		if !ok {
			v.add(path, "must be a string (%s)", name)
			return
		}
		if sc.maxLen > 0 && len(str) > sc.maxLen {
			v.add(path, "longer than %d (%s)", sc.maxLen, name)
		}
		if sc.re != nil && !sc.re.MatchString(str) {
			v.add(path, "%q is not a %s", str, name)
		}
		return
	}
	v.add(path, "unknown type %s", name)
}

func intOf(val any) (int64, bool) {
	n, ok := val.(json.Number)
	if !ok {
		return 0, false
	}
	i, err := n.Int64()
	return i, err == nil
}
