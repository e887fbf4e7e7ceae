package httpauth

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseGrammar(t *testing.T) {
	cases := []struct {
		in   string
		want []string // formatted challenges
	}{
		// RFC 9110 §11.6.1 example.
		{`Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple"`,
			[]string{`Newauth realm="apps", type=1, title="Login to \"apps\""`, `Basic realm="simple"`}},
		{`Basic`, []string{`Basic`}},
		{`Basic `, []string{`Basic`}},
		{`Negotiate abc+/def==`, []string{`Negotiate abc+/def==`}},
		{`Negotiate abc==, Basic realm="x"`, []string{`Negotiate abc==`, `Basic realm="x"`}},
		{`, ,Bearer  realm = "a" ,, DPoP`, []string{`Bearer realm="a"`, `DPoP`}},
		{`DPoP ERROR="x"`, []string{`DPoP error="x"`}},
		{`Bearer error=invalid_token`, []string{`Bearer error="invalid_token"`}},
		{`Bearer max_age="0", acr_values="a b"`, []string{`Bearer max_age=0, acr_values="a b"`}},
		{`Bearer realm="a\\b\"c"`, []string{`Bearer realm="a\\b\"c"`}},
		{"Bearer realm=\"caf\xc3\xa9\"", []string{"Bearer realm=\"caf\xc3\xa9\""}},
		{"Bearer\trealm=\"a\tb\"", []string{"Bearer realm=\"a\tb\""}},
		{`Bearer realm=`, []string{`Bearer realm=`}}, // a token68 with its padding
	}
	for _, tc := range cases {
		got, err := ParseField(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		var s []string
		for _, c := range got {
			s = append(s, c.String())
		}
		if !reflect.DeepEqual(s, tc.want) {
			t.Errorf("%q:\n got %q\nwant %q", tc.in, s, tc.want)
		}
	}
	for _, bad := range []string{
		``, ` , `, `"quoted"`, `Bearer realm="unterminated`, `Bearer realm="a" x`, `Bearer a=1, a=2`, `Bearer a=1, A=2`,
		`Bearer realm="a\` + "\x01" + `"`, `Bearer realm="` + "\x7f" + `"`, `Bearer =x`, `Basic abc def`,
		`Bearer realm="a\`, `Basic abc==x`, `error="orphan"`, `Bearer realm="a"b`,
		`, ,DPoP  error="unterminated`,
	} {
		if got, err := ParseField(bad); err == nil {
			t.Errorf("%q parsed as %+v", bad, got)
		}
	}
}

// TestParseFields: several fields, each possibly with several challenges;
// a field that does not parse is skipped as a whole, the others kept.
func TestParseFields(t *testing.T) {
	type ch struct {
		scheme string
		params []Param
	}
	for _, tc := range []struct {
		in   []string
		want []ch
		err  bool
	}{
		{[]string{`DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof"`},
			[]ch{{"DPoP", []Param{{"error", "use_dpop_nonce"}, {"error_description", "Resource server requires nonce in DPoP proof"}}}}, false},
		{[]string{`Bearer realm="ward", DPoP algs="ES256 PS256", error = use_dpop_nonce`},
			[]ch{{"Bearer", []Param{{"realm", "ward"}}}, {"DPoP", []Param{{"algs", "ES256 PS256"}, {"error", "use_dpop_nonce"}}}}, false},
		{[]string{`Bearer realm="a, b=\"c\""`, `dpop error="use_dpop_nonce"`},
			[]ch{{"Bearer", []Param{{"realm", `a, b="c"`}}}, {"dpop", []Param{{"error", "use_dpop_nonce"}}}}, false},
		{[]string{`Basic abc==, DPoP`, `Negotiate`},
			[]ch{{"Basic", nil}, {"DPoP", nil}, {"Negotiate", nil}}, false},
		// A malformed field gives nothing, not a guess from its first part.
		{[]string{`, ,DPoP  error="unterminated`, `Bearer realm="ok"`}, []ch{{"Bearer", []Param{{"realm", "ok"}}}}, true},
		{[]string{`error="orphan"`, ``}, nil, true},
		{[]string{strings.Repeat("a", MaxLength/2), `Bearer realm="` + strings.Repeat("b", MaxLength/2) + `"`}, []ch{{strings.Repeat("a", MaxLength/2), nil}}, true},
	} {
		got, err := Parse(tc.in...)
		if (err != nil) != tc.err {
			t.Errorf("%q: err = %v", tc.in, err)
		}
		var g []ch
		for _, c := range got {
			g = append(g, ch{c.Scheme, c.Params})
		}
		if !reflect.DeepEqual(g, tc.want) {
			t.Errorf("Parse(%q)\n got %+v\nwant %+v", tc.in, g, tc.want)
		}
	}
}

func TestString(t *testing.T) {
	for _, tc := range []struct {
		c    Challenge
		want string
	}{
		{Challenge{Scheme: "DPoP", Params: []Param{{"algs", "ES256 PS256"}, {"error", "invalid_token"}}}, `DPoP algs="ES256 PS256", error="invalid_token"`},
		{Challenge{Scheme: "Bearer", Params: []Param{{"max_age", "300"}, {"claims", "eyJ9"}}}, `Bearer max_age=300, claims="eyJ9"`},
		{Challenge{Scheme: "Bearer", Params: []Param{{"realm", `a"b\c`}}}, `Bearer realm="a\"b\\c"`},
		{Challenge{Scheme: "Bearer", Params: []Param{{"realm", "a\r\nb\x00\x7f\tc"}}}, "Bearer realm=\"a  b  \tc\""},
		{Challenge{Scheme: "Bearer", Params: []Param{{"realm", ""}}}, `Bearer realm=""`},
		{Challenge{Scheme: "Negotiate", Token68: "abc=="}, `Negotiate abc==`},
		{Challenge{Scheme: "Basic"}, `Basic`},
	} {
		if got := tc.c.String(); got != tc.want {
			t.Errorf("String() = %q, want %q", got, tc.want)
		}
	}
}

func TestErrorParams(t *testing.T) {
	if got := ErrorParams("invalid_token", ""); !reflect.DeepEqual(got, []Param{{"error", "invalid_token"}}) {
		t.Errorf("no description: %v", got)
	}
	got := ErrorParams("invalid_request", `the "scope" parameter`)
	if !reflect.DeepEqual(got, []Param{{"error", "invalid_request"}, {"error_description", `the 'scope' parameter`}}) {
		t.Errorf("quotes: %v", got)
	}
	c := Challenge{Scheme: "Bearer", Params: append([]Param{{"realm", "ward"}}, got...)}
	if s := c.String(); s != `Bearer realm="ward", error="invalid_request", error_description="the 'scope' parameter"` {
		t.Errorf("String = %s", s)
	}
}

func TestGet(t *testing.T) {
	cs, err := ParseField(`DPoP Error="use_dpop_nonce", ALGS="ES256"`)
	if err != nil {
		t.Fatal(err)
	}
	c := cs[0]
	if v, ok := c.Get("error"); !ok || v != "use_dpop_nonce" || c.Param("Algs") != "ES256" || c.Param("nope") != "" {
		t.Errorf("Get: %+v", c)
	}
}

func TestIsToken68(t *testing.T) {
	for s, ok := range map[string]bool{
		"abc": true, "a.b-c_d~e+f/g": true, "abc==": true, "": false, "=": false, "a=b": false, "a b": false, "a,b": false,
		"eyJhbGciOiJFUzI1NiJ9.e30.sig": true,
	} {
		if IsToken68(s) != ok {
			t.Errorf("IsToken68(%q) = %v", s, !ok)
		}
	}
}

// FuzzParse is the one fuzz target of the challenge parser and writer:
// parsing never panics and is bounded; whatever parses has schemes and
// lower-case, unique parameter names, and formats (String) to text that
// parses back to the same challenges; and any challenge built from
// tokens and printable values survives writing and parsing.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple"`,
		`Negotiate abc==, Basic realm="x"`,
		`DPoP algs="ES256", error="insufficient_claims", claims="eyJhIjoxfQ"`,
		`Bearer error="insufficient_user_authentication", acr_values="a b", max_age=5`,
		`Bearer realm="ward", DPoP algs="ES256 PS256", error = use_dpop_nonce`,
		`DPoP algs="ES256 PS256"`,
		`Bearer error="invalid_request", error_description="Multiple methods used to include access token", DPoP algs="ES256 PS256", error="invalid_request", error_description="Multiple methods used to include access token"`,
		`, ,DPoP  error="unterminated`,
	} {
		f.Add(s, "DPoP", "error", "use_dpop_nonce")
	}
	f.Fuzz(func(t *testing.T, in, scheme, name, value string) {
		got, err := ParseField(in)
		if err == nil {
			var parts []string
			for i := range got {
				c := &got[i]
				if c.Scheme == "" {
					t.Fatalf("empty scheme from %q", in)
				}
				seen := map[string]bool{}
				for _, p := range c.Params {
					if p.Name == "" || p.Name != strings.ToLower(p.Name) || seen[p.Name] {
						t.Fatalf("%q: parameter name %q", in, p.Name)
					}
					seen[p.Name] = true
				}
				parts = append(parts, c.String())
			}
			again, err := ParseField(strings.Join(parts, ", "))
			if err != nil {
				t.Fatalf("%q -> %q does not parse: %v", in, strings.Join(parts, ", "), err)
			}
			if !reflect.DeepEqual(again, got) {
				t.Fatalf("%q: %+v, after formatting %+v", in, got, again)
			}
		}
		// Writing then parsing gives the same challenge.
		if !isToken(scheme) || !isToken(name) || !printable(value) {
			return
		}
		name = strings.ToLower(name)
		c := Challenge{Scheme: scheme, Params: []Param{{name, value}}}
		if name != "realm" {
			c.Params = append(c.Params, Param{"realm", "ward"})
		}
		back, err := ParseField(c.String())
		if err != nil || len(back) != 1 || !reflect.DeepEqual(back[0], c) {
			t.Fatalf("%+v -> %q -> %+v, %v", c, c.String(), back, err)
		}
	})
}

func isToken(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isTChar(s[i]) {
			return false
		}
	}
	return s != ""
}

// printable: what a quoted-string can carry (no control characters
// except HTAB).
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
