package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

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
func Load(data []byte) (*Set, error) {
	var (
		doc *Document
		err error
	)
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		doc, err = DecodeJSON(bytes.NewReader(t))
	} else {
		doc, err = DecodeYAML(data)
	}
	if err != nil {
		return nil, err
	}
	return Compile(doc.Policies, doc.Locations)
}
