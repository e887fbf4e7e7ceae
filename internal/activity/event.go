package activity

import (
	"slices"
	"strconv"
	"strings"

	"github.com/ward-idp/ward/internal/model"
)

// Event data keys the activity is read from. Events that describe a use
// of a session or token set them; FromEvent reads nothing else from Data.
const (
	DataGrant      = "grant_type"       // OAuth grant type
	DataJKT        = "jkt"              // thumbprint of the proof's key
	DataBoundJKT   = "bound_jkt"        // thumbprint of the key the credential is bound to
	DataProof      = "proof"            // a Proof value
	DataAMR        = "amr"              // space-separated authentication methods
	DataResource   = "resource"         // audience used or requested
	DataSignal     = "signal"           // external signal type
	DataCount      = "count"            // uses a token.used event stands for
	DataRTGenIn    = "rt_gen_presented" // refresh-token generation presented
	DataRTGenOut   = "rt_gen_issued"    // refresh-token generation issued
	DataGeoASN     = "asn"
	DataGeoASOrg   = "as_org"
	DataGeoCountry = "country"
	DataGeoCity    = "city"
	DataGeoLat     = "lat"
	DataGeoLon     = "lon"
)

// mfaMethods are the RFC 8176 amr values of a second factor.
var mfaMethods = []string{"mfa", "otp", "hwk", "swk", "sms", "fpt", "face", "iris", "retina", "vbm"}

// FromEvent returns the activity an event records, and false for events
// that are not a use of a session or token (administration, key
// rotation, ...).
func FromEvent(e *model.Event) (Activity, bool) {
	kind, ok := eventKind(e)
	if !ok {
		return Activity{}, false
	}
	d := e.Data
	a := Activity{
		Time: e.Time, ID: e.ID, Kind: kind,
		UserID: e.UserID, SessionID: e.SessionID, ClientID: e.ClientID, DeviceID: e.DeviceID,
		TokenID: e.TokenID, Grant: d[DataGrant],
		JKT: d[DataJKT], BoundJKT: d[DataBoundJKT], Proof: Proof(d[DataProof]),
		Result: result(e), Reason: e.Reason, MFA: hasMFA(d[DataAMR]),
		Resource: d[DataResource], Signal: d[DataSignal],
		Count:               atoi(d[DataCount]),
		RefreshGenPresented: atoi(d[DataRTGenIn]), RefreshGenIssued: atoi(d[DataRTGenOut]),
		IP: e.IP, UserAgent: e.UserAgent,
		ASOrg: d[DataGeoASOrg], Country: d[DataGeoCountry], City: d[DataGeoCity],
	}
	if asn := atoi(d[DataGeoASN]); asn > 0 {
		a.ASN = uint32(asn)
	}
	if a.Reason == "" && a.Result == ResultFailure {
		a.Reason = d["error"]
	}
	if a.Proof == "" {
		a.Proof = inferProof(e)
	}
	if lat, lon, ok := coords(d[DataGeoLat], d[DataGeoLon]); ok {
		a.Lat, a.Lon, a.HasCoords = lat, lon, true
	}
	return a, true
}

// eventKind maps the event types that record a use of a session or token.
func eventKind(e *model.Event) (Kind, bool) {
	switch e.Type {
	case model.EventSignInSucceeded, model.EventSignInFailed:
		return KindSignIn, true
	case model.EventSSOSignIn:
		return KindSSOSignIn, true
	case model.EventTokenRefreshed, model.EventRefreshReuseDetected:
		return KindRefresh, true
	case model.EventTokenIssued, model.EventCodeReuseDetected:
		return KindToken, true
	case model.EventTokenRequestFailed, model.EventDPoPProofRejected:
		if e.Data[DataGrant] == "refresh_token" {
			return KindRefresh, true
		}
		return KindToken, true
	case model.EventTokenUsed:
		return KindTokenUse, true
	case model.EventDeviceRegistered:
		return KindDeviceRegistration, true
	case model.EventSSFSignalReceived:
		return KindSignal, true
	}
	return "", false
}

func result(e *model.Event) string {
	switch e.Type {
	case model.EventRefreshReuseDetected, model.EventCodeReuseDetected, model.EventDPoPProofRejected:
		return ResultFailure
	}
	switch e.Outcome {
	case model.OutcomeSuccess:
		return ResultSuccess
	case model.OutcomeFailure:
		return ResultFailure
	}
	return ""
}

// inferProof reads the proof status from events that predate the proof
// data key: a rejected proof, or the binding of an issued token.
func inferProof(e *model.Event) Proof {
	switch {
	case e.Type == model.EventDPoPProofRejected:
		return ProofInvalid
	case e.Binding == model.BindingDPoP:
		return ProofOK
	case e.Binding == model.BindingUnbound:
		return ProofNone
	}
	return ""
}

func hasMFA(amr string) bool {
	for m := range strings.FieldsSeq(amr) {
		if slices.Contains(mfaMethods, m) {
			return true
		}
	}
	return false
}

// atoi reads a small non-negative decimal; anything else is 0.
func atoi(s string) int {
	if s == "" || len(s) > 10 {
		return 0
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	if n > maxCount {
		return 0
	}
	return n
}

// coords parses a latitude and longitude given together.
func coords(lat, lon string) (float64, float64, bool) {
	if lat == "" || lon == "" {
		return 0, 0, false
	}
	la, err1 := strconv.ParseFloat(lat, 64)
	lo, err2 := strconv.ParseFloat(lon, 64)
	if err1 != nil || err2 != nil || la < -90 || la > 90 || lo < -180 || lo > 180 {
		return 0, 0, false
	}
	return la, lo, true
}
