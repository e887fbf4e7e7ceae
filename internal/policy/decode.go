package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// DecodeJSON strictly decodes a Document from JSON: unknown fields and
// trailing data are errors.
func DecodeJSON(r io.Reader) (*Document, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var doc Document
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("policy: decode json: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("policy: decode json: trailing data after document")
	}
	return &doc, nil
}

// DecodeYAML strictly decodes a Document from YAML: unknown fields are
// errors. Only one YAML document is accepted.
func DecodeYAML(data []byte) (*Document, error) {
	doc, err := decodeYAML(data)
	return doc, yamlErrors(err)
}

// decodeYAML is DecodeYAML with the decoder's own errors.
func decodeYAML(data []byte) (*Document, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var doc Document
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("policy: decode yaml: %w", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("policy: decode yaml: more than one document")
	}
	return &doc, nil
}

// Load strictly decodes and compiles a Document (YAML is a superset of JSON,
// but JSON input is decoded with the JSON decoder when it starts with '{').
// Every problem is reported at once: when the only decoding problems are
// unknown fields, they are all listed and the rest of the document is
// still compiled, so its validation errors are reported with them.
func Load(data []byte) (*Set, error) {
	var (
		doc *Document
		err error
	)
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		doc, err = loadJSON(t)
	} else {
		doc, err = loadYAML(data)
	}
	if doc == nil {
		return nil, err
	}
	set, cerr := Compile(doc.Policies, doc.Locations)
	if err != nil || cerr != nil {
		return nil, errors.Join(err, cerr)
	}
	return set, nil
}

// loadYAML is DecodeYAML, but it also returns the document when the only
// problems are unknown fields (the YAML decoder lists them all).
func loadYAML(data []byte) (*Document, error) {
	doc, err := decodeYAML(data)
	if err == nil {
		return doc, nil
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return nil, err
	}
	for _, msg := range te.Errors {
		if !strings.Contains(msg, " not found in type ") {
			return nil, yamlErrors(err)
		}
	}
	// Decode again, leniently, for the parts that are understood.
	var lenient Document
	if yaml.Unmarshal(data, &lenient) != nil {
		return nil, yamlErrors(err)
	}
	return &lenient, yamlErrors(err)
}

// loadJSON is DecodeJSON, but it lists every unknown field (the JSON
// decoder stops at the first) and then also returns the document.
func loadJSON(data []byte) (*Document, error) {
	doc, err := DecodeJSON(bytes.NewReader(data))
	if err == nil {
		return doc, nil
	}
	var lenient Document
	dec := json.NewDecoder(bytes.NewReader(data))
	if dec.Decode(&lenient) != nil {
		return nil, err
	}
	if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
		return nil, err
	}
	var generic any
	if json.Unmarshal(data, &generic) != nil {
		return nil, err
	}
	var unknown []string
	unknownJSONFields(generic, reflect.TypeFor[Document](), "", &unknown)
	if len(unknown) == 0 {
		return nil, err
	}
	errs := make([]error, len(unknown))
	for i, u := range unknown {
		errs[i] = errors.New("policy: decode json: " + u)
	}
	return &lenient, errors.Join(errs...)
}

// unknownJSONFields appends to out every object key of v (decoded into
// generic values) that encoding/json would not match to a field of t.
func unknownJSONFields(v any, t reflect.Type, path string, out *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			f, ok := jsonField(t, k)
			if !ok {
				if path == "" {
					*out = append(*out, fmt.Sprintf("unknown field %q", k))
				} else {
					*out = append(*out, fmt.Sprintf("%s: unknown field %q", path, k))
				}
				continue
			}
			name := strings.Split(f.Tag.Get("json"), ",")[0]
			if path != "" {
				name = path + "." + name
			}
			unknownJSONFields(m[k], f.Type, name, out)
		}
	case reflect.Slice, reflect.Array:
		s, _ := v.([]any)
		for i, e := range s {
			unknownJSONFields(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), out)
		}
	}
}

// jsonField finds the field of struct t that encoding/json decodes key
// into: exact name first, then case-insensitively.
func jsonField(t reflect.Type, key string) (reflect.StructField, bool) {
	var fold *reflect.StructField
	for i := range t.NumField() {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("json"), ",")[0]
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if name == key {
			return f, true
		}
		if fold == nil && strings.EqualFold(name, key) {
			fold = &f
		}
	}
	if fold != nil {
		return *fold, true
	}
	return reflect.StructField{}, false
}
