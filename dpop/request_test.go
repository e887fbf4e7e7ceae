package dpop

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestFromRequest(t *testing.T) {
	tests := []struct {
		name    string
		headers map[string][]string
		want    string
		err     error
		reason  Reason
	}{
		{name: "one", headers: map[string][]string{"Dpop": {"a.b.c"}}, want: "a.b.c"},
		{name: "trimmed", headers: map[string][]string{"Dpop": {" a.b.c\t"}}, want: "a.b.c"},
		{name: "non-canonical name", headers: map[string][]string{"DPoP": {"a.b.c"}}, want: "a.b.c"},
		{name: "none", headers: map[string][]string{"Authorization": {"DPoP x"}}, err: ErrNoProof},
		{name: "two fields", headers: map[string][]string{"Dpop": {"a.b.c", "d.e.f"}}, reason: ReasonMultiple},
		{name: "two spellings", headers: map[string][]string{"Dpop": {"a.b.c"}, "DPOP": {"d.e.f"}}, reason: ReasonMultiple},
		{name: "merged list", headers: map[string][]string{"Dpop": {"a.b.c, d.e.f"}}, reason: ReasonMultiple},
		{name: "empty", headers: map[string][]string{"Dpop": {""}}, reason: ReasonMissing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "https://rs.example.com/", nil)
			for k, vs := range tt.headers {
				r.Header[k] = vs
			}
			got, err := FromRequest(r)
			switch {
			case tt.reason != "":
				wantReason(t, err, CodeInvalidProof, tt.reason)
			case tt.err != nil:
				if !errors.Is(err, tt.err) {
					t.Errorf("err = %v, want %v", err, tt.err)
				}
			case err != nil || got != tt.want:
				t.Errorf("FromRequest = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// Two DPoP header lines on the wire reach FromRequest as two values.
func TestFromRequestWire(t *testing.T) {
	var got error
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, got = FromRequest(r)
	}))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Add("DPoP", "a.b.c")
	req.Header.Add("dpop", "d.e.f")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	wantReason(t, got, CodeInvalidProof, ReasonMultiple)
}
