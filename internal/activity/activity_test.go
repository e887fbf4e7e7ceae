package activity

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

var t0 = time.Date(2026, 12, 6, 9, 30, 0, 123456789, time.UTC)

func full() Activity {
	return Activity{
		Time: t0, ID: "ev-1", Kind: KindRefresh,
		UserID: "u1", SessionID: "s1", ClientID: "c1", DeviceID: "d1", TokenID: "jti-1", Grant: "refresh_token",
		RefreshGenPresented: 3, RefreshGenIssued: 4,
		JKT: "jkt-a", BoundJKT: "jkt-b", Proof: ProofWrongKey, Result: ResultFailure, Reason: "invalid_dpop_proof",
		MFA: true, Resource: "https://api.example", Signal: "", Count: 7,
		IP: "2001:db8::1", UserAgent: "curl/8 “quoted” <b>", ASN: 64500, ASOrg: "Example AS", Country: "JP", City: "Tōkyō",
		Lat: 35.68, Lon: 139.76, HasCoords: true,
	}
}

func TestRoundTrip(t *testing.T) {
	for _, a := range []Activity{full(), {Time: t0, ID: "x", Kind: KindSignIn}} {
		b, err := Marshal(&a)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(%s): %v", b, err)
		}
		if !got.Time.Equal(a.Time) {
			t.Errorf("time: got %v, want %v", got.Time, a.Time)
		}
		got.Time = a.Time
		if got != a {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, a)
		}
	}
}

func TestMarshalFieldNames(t *testing.T) {
	a := full()
	b, err := Marshal(&a)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"t":"2026-12-06T09:30:00.123456789Z","id":"ev-1","kind":"refresh","user":"u1","session_id":"s1","client_id":"c1","device_id":"d1","token_id":"jti-1","grant":"refresh_token","rt_gen_presented":3,"rt_gen_issued":4,"jkt":"jkt-a","bound_jkt":"jkt-b","proof":"wrong_key","result":"failure","reason":"invalid_dpop_proof","mfa":true,"resource":"https://api.example","count":7,"ip":"2001:db8::1","user_agent":"curl/8 “quoted” <b>","asn":64500,"as_org":"Example AS","country":"JP","city":"Tōkyō","lat":35.68,"lon":139.76}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	// Coordinates at zero are still written when known.
	z := Activity{Time: t0, ID: "z", Kind: KindTokenUse, HasCoords: true}
	b, _ = Marshal(&z)
	if !strings.Contains(string(b), `"lat":0,"lon":0`) {
		t.Errorf("zero coordinates dropped: %s", b)
	}
}

func TestParseRefuses(t *testing.T) {
	ok := `"t":"2026-12-06T09:30:00Z","id":"e","kind":"signin"`
	long := strings.Repeat("a", MaxField+1)
	for _, c := range []struct{ line, want string }{
		{`{` + ok + `}`, ""},
		{``, "incomplete JSON"},
		{`{`, "incomplete JSON"},
		{`[]`, "wrong type"},
		{`{` + ok + `,"password":"hunter2"}`, `unknown field "password"`},
		{`{` + ok + `}{}`, "more than one JSON value"},
		{`{` + ok + `} x`, "more than one JSON value"},
		{`{"t":"yesterday","id":"e","kind":"signin"}`, "t: \"yesterday\" is not an RFC 3339 time"},
		{`{"t":"2026-12-06T09:30:00Z","kind":"signin"}`, "id: missing"},
		{`{"t":"1600-01-01T00:00:00Z","id":"e","kind":"signin"}`, "t: out of range"},
		{`{"t":"2300-01-01T00:00:00Z","id":"e","kind":"signin"}`, "t: out of range"},
		{`{"t":"9999-12-31T23:59:59Z","id":"e","kind":"signin"}`, "t: out of range"},
		{`{"t":"2026-12-06T09:30:00Z","id":"e","kind":"logout"}`, `kind: "logout" is not one of`},
		{`{` + ok + `,"proof":"maybe"}`, `proof: "maybe"`},
		{`{` + ok + `,"result":"ok"}`, `result: "ok"`},
		{`{` + ok + `,"ip":"10.0.0.300"}`, `ip: "10.0.0.300" is not an IP address`},
		{`{` + ok + `,"ip":"` + long + `"}`, "ip: 1025 bytes, more than 1024"},
		{`{` + ok + `,"user":"\xff"}`, "invalid JSON"}, // encoding/json refuses invalid UTF-8 itself
		{`{` + ok + `,"count":-1}`, "count: -1 is out of range"},
		{`{` + ok + `,"count":"3"}`, "count: wrong type"},
		{`{` + ok + `,"asn":-5}`, "asn: wrong type"},
		{`{` + ok + `,"country":"jp"}`, `country: "jp"`},
		{`{` + ok + `,"country":"JPN"}`, `country: "JPN"`},
		{`{` + ok + `,"lat":95,"lon":0}`, "lat, lon: out of range"},
		{`{` + ok + `,"lat":1}`, "give both or neither"},
		{`{` + ok + `,"rt_gen_issued":-2}`, "out of range"},
	} {
		_, err := Parse([]byte(c.line))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("Parse(%.60s): %v", c.line, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("Parse(%.60s): got %v, want an error with %q", c.line, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error echoes a field value: %v", err)
		}
	}
}

func TestMarshalRefusesWhatParseWould(t *testing.T) {
	a := full()
	a.Country = "Japan"
	if _, err := Marshal(&a); err == nil {
		t.Fatal("Marshal wrote a line Parse refuses")
	}
}

func TestReaderContinuesPastBadLines(t *testing.T) {
	good := func(id string) string {
		return `{"t":"2026-12-06T09:30:00Z","id":"` + id + `","kind":"token_use"}`
	}
	in := good("a") + "\n" +
		"\n" +
		"not json\n" +
		strings.Repeat("x", 3*MaxLine) + "\n" +
		good("b") + "\r\n" +
		good("c") // no final newline
	r := NewReader(strings.NewReader(in))
	var ids []string
	var lineErrs []int
	for {
		a, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		var le *LineError
		if errors.As(err, &le) {
			lineErrs = append(lineErrs, le.Line)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	if strings.Join(ids, ",") != "a,b,c" {
		t.Errorf("ids: got %v, want a,b,c", ids)
	}
	if len(lineErrs) != 2 || lineErrs[0] != 3 || lineErrs[1] != 4 {
		t.Errorf("line errors: got %v, want [3 4]", lineErrs)
	}
}

func TestFromEvent(t *testing.T) {
	ev := func(typ model.EventType, outcome string, data map[string]string) *model.Event {
		return &model.Event{ID: "e", Type: typ, Time: t0, UserID: "u", SessionID: "s", ClientID: "c",
			IP: "192.0.2.7", UserAgent: "ua", Outcome: outcome, Data: data}
	}
	cases := []struct {
		name string
		e    *model.Event
		want Activity
		ok   bool
	}{
		{"sign-in with a second factor", ev(model.EventSignInSucceeded, model.OutcomeSuccess, map[string]string{"amr": "pwd otp"}),
			Activity{Kind: KindSignIn, Result: ResultSuccess, MFA: true}, true},
		{"password only", ev(model.EventSignInSucceeded, model.OutcomeSuccess, map[string]string{"amr": "pwd"}),
			Activity{Kind: KindSignIn, Result: ResultSuccess}, true},
		{"failed refresh with another key", ev(model.EventTokenRequestFailed, model.OutcomeFailure,
			map[string]string{"grant_type": "refresh_token", "error": "invalid_dpop_proof", "jkt": "k2", "bound_jkt": "k1", "proof": "wrong_key", "rt_gen_presented": "2"}),
			Activity{Kind: KindRefresh, Grant: "refresh_token", Result: ResultFailure, Reason: "invalid_dpop_proof", JKT: "k2", BoundJKT: "k1", Proof: ProofWrongKey, RefreshGenPresented: 2}, true},
		{"refresh reuse", ev(model.EventRefreshReuseDetected, "", nil),
			Activity{Kind: KindRefresh, Result: ResultFailure}, true},
		{"bound token issued", &model.Event{ID: "e", Type: model.EventTokenIssued, Time: t0, Outcome: model.OutcomeSuccess, Binding: model.BindingDPoP,
			Data: map[string]string{"grant_type": "authorization_code", "jkt": "k1", "country": "JP", "asn": "64500", "lat": "35.5", "lon": "139.5"}},
			Activity{Kind: KindToken, Grant: "authorization_code", Result: ResultSuccess, JKT: "k1", Proof: ProofOK, Country: "JP", ASN: 64500, Lat: 35.5, Lon: 139.5, HasCoords: true}, true},
		{"rejected proof", ev(model.EventDPoPProofRejected, model.OutcomeFailure, nil),
			Activity{Kind: KindToken, Result: ResultFailure, Proof: ProofInvalid}, true},
		{"hostile numbers are dropped", ev(model.EventTokenRefreshed, model.OutcomeSuccess, map[string]string{"count": "99999999999", "asn": "-1", "lat": "1e999", "lon": "0"}),
			Activity{Kind: KindRefresh, Result: ResultSuccess}, true},
		{"external signal", ev(model.EventSSFSignalReceived, model.OutcomeSuccess,
			map[string]string{"signal": "https://schemas.openid.net/secevent/caep/event-type/session-revoked", "transmitter": "edr"}),
			Activity{Kind: KindSignal, Result: ResultSuccess, Signal: "https://schemas.openid.net/secevent/caep/event-type/session-revoked"}, true},
		{"administration is not activity", ev(model.EventUserCreated, model.OutcomeSuccess, nil), Activity{}, false},
	}
	for _, c := range cases {
		got, ok := FromEvent(c.e)
		if ok != c.ok {
			t.Errorf("%s: ok=%v, want %v", c.name, ok, c.ok)
			continue
		}
		if !ok {
			continue
		}
		w := c.want
		w.Time, w.ID = t0, "e"
		if c.e.UserID != "" {
			w.UserID, w.SessionID, w.ClientID, w.IP, w.UserAgent = "u", "s", "c", "192.0.2.7", "ua"
		}
		if got != w {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, w)
		}
		if err := got.Validate(); err != nil {
			t.Errorf("%s: FromEvent made an invalid activity: %v", c.name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	a := full()
	b, _ := Marshal(&a)
	f.Add(b)
	f.Add([]byte(`{"t":"2026-12-06T09:30:00Z","id":"e","kind":"signin","lat":1,"lon":2}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		a, err := Parse(in)
		if err != nil {
			return
		}
		// Whatever Parse accepts, Marshal writes and Parse reads back the same.
		out, err := Marshal(&a)
		if err != nil {
			t.Fatalf("Marshal of a parsed line: %v", err)
		}
		b, err := Parse(out)
		if err != nil {
			t.Fatalf("re-Parse: %v", err)
		}
		if !b.Time.Equal(a.Time) {
			t.Fatal("time changed")
		}
		b.Time = a.Time
		if b != a {
			t.Fatalf("round trip changed the activity:\n%+v\n%+v", a, b)
		}
	})
}
