package dpop

import "github.com/ward-idp/ward/jsonobj"

// The verifier reads headers, JWKs and claims with Ward's strict JSON
// object reader (package jsonobj): duplicate members, invalid UTF-8 and
// more than jsonobj.MaxMembers members are refused.

type member = jsonobj.Member

// parseObject splits a JSON object into its members, reusing dst.
func parseObject(data []byte, dst []member) ([]member, error) { return jsonobj.Parse(data, dst) }

// unquote decodes a raw JSON string value (with its quotes).
func unquote(raw []byte) (string, bool) { return jsonobj.Unquote(raw) }

// numericDate parses an RFC 7519 NumericDate into seconds and nanoseconds.
func numericDate(raw []byte) (sec, nsec int64, ok bool) { return jsonobj.NumericDate(raw) }
