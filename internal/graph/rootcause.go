package graph

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/geo"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
)

// Root-cause rules.
const (
	// RuleDetection: the root cause rests on a risk detection and the
	// events it cites.
	RuleDetection = "detection"
	// RuleSignal: no detection in the graph, but an event that is a theft
	// signal by itself (a rotated refresh token or a used code presented
	// again, a credential presented with another key than its own).
	RuleSignal = "signal"
)

// Credentials a misuse can concern.
const (
	CredRefreshToken = "refresh_token"
	CredAccessToken  = "access_token"
	CredSSOCookie    = "sso_cookie"
	CredCode         = "authorization_code"
	CredPassword     = "password"
)

// RootCause is how a theft began: where the stolen credential came from
// (Origin: the session, created on a device at a time from an address)
// and its first misuse (Misuse: the credential presented from elsewhere,
// with another key), with the detection that found it. The rule is
// documented in docs/secops.md, "Root cause".
type RootCause struct {
	Rule        string `json:"rule"`
	Summary     string `json:"summary"`
	DetectionID string `json:"detection_id,omitempty"`
	Detection   string `json:"detection_type,omitempty"`
	Technique   string `json:"technique,omitempty"`
	Severity    string `json:"severity,omitempty"`
	Origin      Origin `json:"origin"`
	Misuse      Misuse `json:"misuse"`
	// Nodes and Events are the nodes and event ids the root cause rests
	// on (the nodes are marked root_cause in the graph).
	Nodes  []string `json:"nodes"`
	Events []string `json:"events"`
}

// Place is what the location databases say of an address.
type Place struct {
	ASN     uint32 `json:"asn,omitempty"`
	ASOrg   string `json:"as_org,omitempty"`
	Country string `json:"country,omitempty"`
}

// Origin is where the misused credential was legitimately obtained.
type Origin struct {
	UserID    string    `json:"user_id,omitempty"`
	Username  string    `json:"username,omitempty"`
	SessionID string    `json:"session_id,omitempty"`
	DeviceID  string    `json:"device_id,omitempty"`
	ClientID  string    `json:"client_id,omitempty"`
	IP        string    `json:"ip,omitempty"`
	Place     *Place    `json:"place,omitempty"`
	Key       string    `json:"key,omitempty"` // thumbprint of the key the credential is bound to
	At        time.Time `json:"at,omitzero"`
	EventID   string    `json:"event_id,omitempty"`
}

// Misuse is the first presentation of the credential that was not its
// owner's.
type Misuse struct {
	EventID    string    `json:"event_id,omitempty"`
	EventType  string    `json:"event_type,omitempty"`
	Credential string    `json:"credential,omitempty"`
	Generation int       `json:"generation,omitempty"` // of a refresh token
	TokenID    string    `json:"token_id,omitempty"`   // of an access token
	Resource   string    `json:"resource,omitempty"`
	IP         string    `json:"ip,omitempty"`
	Place      *Place    `json:"place,omitempty"`
	Key        string    `json:"key,omitempty"` // thumbprint of the key that made the proof
	OtherKey   bool      `json:"other_key,omitempty"`
	Proof      string    `json:"proof,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	At         time.Time `json:"at"`
	// After is the time from the origin to the misuse.
	After string `json:"after,omitempty"`
}

func sevRank(s string) int { return model.RiskRank(s) }

// primaryDetection is the detection the root cause is drawn from: the
// most severe, active before dismissed, then the earliest.
func primaryDetection(ds []*model.RiskDetection) *model.RiskDetection {
	if len(ds) == 0 {
		return nil
	}
	ds = slices.Clone(ds)
	active := func(d *model.RiskDetection) int {
		if d.State == model.DetectionActive {
			return 0
		}
		return 1
	}
	slices.SortFunc(ds, func(x, y *model.RiskDetection) int {
		return cmp.Or(cmp.Compare(sevRank(y.Severity), sevRank(x.Severity)), cmp.Compare(active(x), active(y)),
			x.DetectedAt.Compare(y.DetectedAt), cmp.Compare(x.ID, y.ID))
	})
	return ds[0]
}

// misuseScore says how clearly an event shows a stolen credential:
// reuse of a one-time credential 5, a proof by another key 4, a missing
// or invalid proof 3, another failure 2, any other use 1.
func misuseScore(e *store.StoredEvent) int {
	switch e.Type {
	case model.EventRefreshReuseDetected, model.EventCodeReuseDetected:
		return 5
	}
	a, ok := activity.FromEvent(&e.Event)
	if !ok {
		return 0
	}
	switch {
	case a.Proof == activity.ProofWrongKey:
		return 4
	case a.Proof == activity.ProofMissing, a.Proof == activity.ProofInvalid:
		return 3
	case a.Result == activity.ResultFailure:
		return 2
	}
	return 1
}

// pickMisuse returns the clearest misuse among evs, the earliest of the
// clearest.
func pickMisuse(evs []*store.StoredEvent, min int) *store.StoredEvent {
	var best *store.StoredEvent
	bs := 0
	for _, e := range evs {
		s := misuseScore(e)
		if s < min {
			continue
		}
		if best == nil || s > bs || (s == bs && e.Seq < best.Seq) {
			best, bs = e, s
		}
	}
	return best
}

// rootCause applies the rule: the primary detection, the clearest misuse
// among its evidence (else the detection itself), the session it
// concerns and that session's origin. Without a detection, the earliest
// event read that is a theft signal by itself (score 4 or more) stands
// for both.
func (b *builder) rootCause() *RootCause {
	rc := &RootCause{}
	det := primaryDetection(b.in.Detections)
	var misuse *store.StoredEvent
	if det != nil {
		rc.Rule, rc.DetectionID, rc.Detection, rc.Technique, rc.Severity = RuleDetection, det.ID, det.Type, det.Technique, det.Severity
		var evs []*store.StoredEvent
		for _, id := range det.Evidence {
			if e := b.evByID[id]; e != nil {
				evs = append(evs, e)
			}
		}
		misuse = pickMisuse(evs, 1)
		rc.Events = append(rc.Events, det.Evidence...)
		if det.EventID != "" {
			rc.Events = append(rc.Events, det.EventID)
		}
	} else {
		misuse = pickMisuse(b.in.Events, 4)
		if misuse == nil {
			return nil
		}
		rc.Rule = RuleSignal
	}
	sessionID, userID := "", ""
	if det != nil {
		sessionID, userID = det.SessionID, det.UserID
	}
	if misuse != nil {
		rc.Misuse = b.misuse(misuse)
		if sessionID == "" {
			sessionID = misuse.SessionID
		}
		if userID == "" {
			userID = misuse.UserID
		}
		if !slices.Contains(rc.Events, misuse.ID) {
			rc.Events = append(rc.Events, misuse.ID)
		}
	} else {
		rc.Misuse = Misuse{EventID: det.EventID, EventType: string(model.EventRiskDetected), IP: det.IP, At: det.DetectedAt,
			Place: b.place(det.IP)}
	}
	rc.Origin = b.origin(sessionID, userID, misuse)
	if rc.Origin.EventID != "" && !slices.Contains(rc.Events, rc.Origin.EventID) {
		rc.Events = append(rc.Events, rc.Origin.EventID)
	}
	if rc.Origin.Key != "" && rc.Misuse.Key != "" && rc.Misuse.Key != rc.Origin.Key {
		rc.Misuse.OtherKey = true
	}
	if !rc.Origin.At.IsZero() && rc.Misuse.At.After(rc.Origin.At) {
		rc.Misuse.After = rc.Misuse.At.Sub(rc.Origin.At).Round(time.Second).String()
	}
	rc.Summary = summary(rc)
	rc.Nodes = b.rootNodes(rc, det)
	return rc
}

// misuse describes the event that misused the credential.
func (b *builder) misuse(e *store.StoredEvent) Misuse {
	m := Misuse{EventID: e.ID, EventType: string(e.Type), IP: e.IP, Place: b.place(e.IP), At: e.Time, Reason: e.Reason}
	a, ok := activity.FromEvent(&e.Event)
	if !ok {
		return m
	}
	m.Key, m.Proof = a.JKT, string(a.Proof)
	m.OtherKey = a.Proof == activity.ProofWrongKey
	switch a.Kind {
	case activity.KindRefresh:
		m.Credential, m.Generation = CredRefreshToken, a.RefreshGenPresented
	case activity.KindTokenUse:
		m.Credential, m.TokenID, m.Resource = CredAccessToken, a.TokenID, a.Resource
	case activity.KindSSOSignIn:
		m.Credential = CredSSOCookie
	case activity.KindSignIn:
		m.Credential = CredPassword
	case activity.KindToken:
		if a.Grant == "authorization_code" || e.Type == model.EventCodeReuseDetected {
			m.Credential = CredCode
		}
	}
	return m
}

// origin finds where the session (or, without one, the user's
// credential) came from: the stored session's creation time and address,
// else its first event in the graph; its device is the first registered
// device its events name; its key the one the misused credential is
// bound to, else the key of its first proof.
func (b *builder) origin(sessionID, userID string, misuse *store.StoredEvent) Origin {
	o := Origin{SessionID: sessionID, UserID: userID}
	var first *store.StoredEvent
	var firstDev *store.EventGroup
	for _, g := range b.in.Groups {
		if sessionID == "" || g.SessionID != sessionID {
			continue
		}
		if e := b.evBySeq[g.FirstSeq]; e != nil && (first == nil || e.Seq < first.Seq) {
			first = e
		}
		if g.DeviceID != "" && g.Outcome != model.OutcomeFailure && (firstDev == nil || g.FirstSeq < firstDev.FirstSeq) {
			firstDev = g
		}
	}
	if first != nil {
		o.At, o.IP, o.EventID, o.ClientID, o.DeviceID = first.Time, first.IP, first.ID, first.ClientID, first.DeviceID
		if o.UserID == "" {
			o.UserID = first.UserID
		}
	}
	if s := b.in.Sessions[sessionID]; s != nil && sessionID != "" {
		o.At, o.UserID = s.CreatedAt, s.UserID
		if s.IP != "" {
			o.IP = s.IP
		}
	}
	if firstDev != nil {
		o.DeviceID = firstDev.DeviceID
		if o.ClientID == "" {
			o.ClientID = firstDev.ClientID
		}
	}
	if misuse != nil {
		if a, ok := activity.FromEvent(&misuse.Event); ok && a.BoundJKT != "" {
			o.Key = a.BoundJKT
		}
	}
	if o.Key == "" && sessionID != "" {
		for _, e := range b.in.Events {
			if e.SessionID != sessionID || (misuse != nil && e.ID == misuse.ID) {
				continue
			}
			if a, ok := activity.FromEvent(&e.Event); ok && a.Result == activity.ResultSuccess && a.JKT != "" {
				o.Key = a.JKT
				break
			}
		}
	}
	if u := b.in.Users[o.UserID]; u != nil {
		o.Username = u.Username
	}
	o.Place = b.place(o.IP)
	return o
}

func (b *builder) place(ip string) *Place {
	loc, ok := b.in.Locations[ip]
	if !ok || (loc.ASN == 0 && loc.Country == "" && loc.ASOrg == "") {
		return nil
	}
	return &Place{ASN: loc.ASN, ASOrg: loc.ASOrg, Country: loc.Country}
}

// placeLabel is an address node's label: "AS 64500 Example Net, FR".
func placeLabel(loc geo.Location) string {
	p := (&builder{}).placeText(&Place{ASN: loc.ASN, ASOrg: loc.ASOrg, Country: loc.Country})
	return strings.TrimSuffix(strings.TrimPrefix(p, "("), ")")
}

// placeText writes "(AS 64500 Example Net, FR)".
func (*builder) placeText(p *Place) string {
	if p == nil {
		return ""
	}
	var parts []string
	if p.ASN != 0 {
		as := "AS " + strconv.FormatUint(uint64(p.ASN), 10)
		if p.ASOrg != "" {
			as += " " + p.ASOrg
		}
		parts = append(parts, as)
	}
	if p.Country != "" {
		parts = append(parts, p.Country)
	}
	if len(parts) == 0 {
		return ""
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// summary writes the root cause as one sentence, e.g. "session S of
// alice created on device X at T from IP A (AS 64500, FR); its refresh
// token (generation 2) replayed from IP B (AS 64501, US) with another
// key at T' (5m0s later); detected as refresh_token_replay (T1550.001,
// high)".
func summary(rc *RootCause) string {
	var sb strings.Builder
	o, m := rc.Origin, rc.Misuse
	who := o.Username
	if who == "" {
		who = o.UserID
	}
	if o.SessionID != "" {
		sb.WriteString("session " + o.SessionID)
		if who != "" {
			sb.WriteString(" of " + who)
		}
		sb.WriteString(" created")
	} else {
		sb.WriteString("user " + who)
	}
	if o.DeviceID != "" {
		sb.WriteString(" on device " + o.DeviceID)
	}
	if !o.At.IsZero() {
		sb.WriteString(" at " + o.At.UTC().Format(time.RFC3339))
	}
	if o.IP != "" {
		sb.WriteString(" from IP " + o.IP)
		if p := (&builder{}).placeText(o.Place); p != "" {
			sb.WriteString(" " + p)
		}
	}
	sb.WriteString("; ")
	sb.WriteString(misusePhrase(m, o.SessionID != ""))
	if m.IP != "" {
		sb.WriteString(" from IP " + m.IP)
		if p := (&builder{}).placeText(m.Place); p != "" {
			sb.WriteString(" " + p)
		}
	}
	switch {
	case m.OtherKey:
		sb.WriteString(" with another key")
	case m.Proof == "missing":
		sb.WriteString(" without its key's proof")
	case m.Proof == "invalid":
		sb.WriteString(" with an invalid proof")
	}
	if !m.At.IsZero() {
		sb.WriteString(" at " + m.At.UTC().Format(time.RFC3339))
		if m.After != "" {
			sb.WriteString(" (" + m.After + " later)")
		}
	}
	if rc.Detection != "" {
		sb.WriteString("; detected as " + rc.Detection)
		var det []string
		for _, v := range []string{rc.Technique, rc.Severity} {
			if v != "" {
				det = append(det, v)
			}
		}
		if len(det) > 0 {
			sb.WriteString(" (" + strings.Join(det, ", ") + ")")
		}
	}
	return sb.String()
}

func misusePhrase(m Misuse, inSession bool) string {
	its := "its "
	if !inSession {
		its = "the "
	}
	switch m.Credential {
	case CredRefreshToken:
		s := its + "refresh token"
		if m.Generation > 0 {
			s += fmt.Sprintf(" (generation %d)", m.Generation)
		}
		if m.EventType == string(model.EventRefreshReuseDetected) || m.OtherKey {
			return s + " replayed"
		}
		return s + " presented"
	case CredAccessToken:
		s := its + "access token"
		if m.Resource != "" {
			s += " used at " + m.Resource
		} else {
			s += " used"
		}
		return s
	case CredSSOCookie:
		return its + "SSO cookie replayed"
	case CredCode:
		return its + "authorization code replayed"
	case CredPassword:
		return "a sign-in"
	}
	if m.EventType == "" {
		return "a misuse"
	}
	return "event " + m.EventType
}

// rootNodes lists the nodes of the root cause that the graph holds, and
// marks them.
func (b *builder) rootNodes(rc *RootCause, det *model.RiskDetection) []string {
	o, m := rc.Origin, rc.Misuse
	var ids []string
	add := func(kind, key string) {
		if key == "" {
			return
		}
		id := NodeID(kind, key)
		if _, ok := b.nodes[id]; ok && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	add(KindUser, o.UserID)
	add(KindSession, o.SessionID)
	add(KindDevice, o.DeviceID)
	add(KindIP, o.IP)
	add(KindKey, o.Key)
	add(KindIP, m.IP)
	add(KindKey, m.Key)
	add(KindToken, m.TokenID)
	if m.Generation > 0 && o.SessionID != "" {
		add(KindRefresh, refreshKey(o.SessionID, m.Generation))
	}
	if det != nil {
		add(KindDetection, det.ID)
	}
	return ids
}

// markRootCause marks the root cause's nodes and the edges between them.
func (b *builder) markRootCause(rc *RootCause) {
	in := map[string]bool{}
	for _, id := range rc.Nodes {
		in[id] = true
		b.nodes[id].RootCause = true
	}
	for _, e := range b.edges {
		if in[e.From] && in[e.To] {
			e.RootCause = true
		}
	}
}
