package rs

import "github.com/ward-idp/ward/jsonobj"

// Tokens, SETs and poll responses are read with Ward's strict JSON object
// reader (package jsonobj): duplicate members, invalid UTF-8 and more
// than jsonobj.MaxMembers members are refused.

type object = jsonobj.Object

// parseObject splits a JSON object into its members.
func parseObject(data []byte) (object, error) { return jsonobj.Parse(data, nil) }

func unquote(raw []byte) (string, bool)         { return jsonobj.Unquote(raw) }
func stringArray(raw []byte) ([]string, bool)   { return jsonobj.StringArray(raw) }
func stringOrArray(raw []byte) ([]string, bool) { return jsonobj.StringOrArray(raw) }

// numericDate parses an RFC 7519 NumericDate in whole seconds (a fraction
// is truncated).
func numericDate(raw []byte) (int64, bool) {
	sec, _, ok := jsonobj.NumericDate(raw)
	return sec, ok
}
