package ssfrx

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store"
	"github.com/ward-idp/ward/rs"
)

// Bounds of what a signal's event keeps of a SET.
const (
	maxReason = 256
	maxDetail = 256
)

// errDuplicate is a SET whose jti was recorded before: a transmitter's
// redelivery after a lost acknowledgement (or someone replaying a SET
// they captured). It is acknowledged like the first delivery and changes
// nothing, so the transmitter stops sending it and nothing is recorded
// twice (RFC 8935 §2 and RFC 8936 §2.3 leave duplicates to the receiver).
var errDuplicate = errors.New("ssfrx: SET already recorded")

// errUnknownSubject refuses a SET about no one Ward knows.
var errUnknownSubject = invalid("the subject names no user of this receiver")

// process verifies a SET and handles it: the single path of push and
// poll. It returns nil when the SET is recorded (or was a stream event),
// an *rs.SETError when it is refused for good, another error when it
// should be delivered again.
// key is the SET's name in a poll answer ("" for a push), which must be
// its jti.
func (r *receiver) process(ctx context.Context, compact, key string) error {
	r.s.stats.Received.Add(1)
	set, err := r.verify(ctx, compact)
	if err == nil && key != "" && set.JTI != key {
		err = invalid("the SET's jti differs from its key in sets")
	}
	if err == nil {
		err = r.handle(ctx, set)
	}
	var se *rs.SETError
	switch {
	case err == nil:
	case errors.Is(err, errDuplicate):
		r.s.stats.Duplicates.Add(1)
		r.s.log.InfoContext(ctx, "ssf receiver: SET already recorded, acknowledged again", "receiver", r.cfg.Name)
		return nil
	case errors.As(err, &se):
		r.s.stats.Refused.Add(1)
		// The code and the fixed description only: never the SET.
		r.s.log.WarnContext(ctx, "ssf receiver: SET refused", "receiver", r.cfg.Name, "err", se.Code, "description", se.Description)
	default:
		r.s.stats.Failures.Add(1)
		r.s.log.WarnContext(ctx, "ssf receiver: SET not processed, to be delivered again", "receiver", r.cfg.Name, "err", err)
	}
	return err
}

// handle records a verified SET: stream events update the stream,
// everything else becomes an ssf.signal_received about the Ward user its
// subject names, committed together with the record of its jti.
func (r *receiver) handle(ctx context.Context, set *rs.SET) error {
	switch set.Event.Type {
	case rs.EventVerification:
		r.s.stats.Verifications.Add(1)
		return r.updateStream(ctx, func(st *model.SSFReceiverStream) { st.VerifiedAt = r.s.o.Now() })
	case rs.EventStreamUpdated:
		return r.updateStream(ctx, func(st *model.SSFReceiverStream) {
			st.Status, st.StatusReason = bounded(set.Event.Status, 32), bounded(set.Event.Reason, maxReason)
		})
	}
	if strings.HasPrefix(set.Event.Type, "https://schemas.openid.net/secevent/ssf/") {
		return nil // another SSF stream event: nothing to record
	}
	userID, sessionID, deviceID, format, err := r.resolve(ctx, set)
	if err != nil {
		return err
	}
	if userID == "" {
		return errUnknownSubject
	}
	e := r.event(set, userID, sessionID, deviceID, format)
	// The record of the jti and the event commit in one transaction: a
	// crash leaves both or neither, so the transmitter's redelivery is
	// either recorded or acknowledged as a duplicate, never lost or doubled.
	ectx := r.s.events.Pending(ctx, e, nil)
	exp := set.IssuedAt.Add(r.maxAge + r.skew)
	switch err := r.s.o.Store.RecordSSFSignal(ectx, r.cfg.Name, set.JTI, exp); {
	case errors.Is(err, store.ErrReplay):
		return errDuplicate
	case err != nil:
		return fmt.Errorf("record signal: %w", err)
	}
	r.s.stats.Recorded.Add(1)
	if err := r.s.events.Emit(ectx, e); err != nil {
		// Stored with its record already; subscribers that missed it
		// read it from the events table (durable consumers, exporters).
		r.s.log.WarnContext(ctx, "ssf receiver: signal recorded, not all subscribers got it", "receiver", r.cfg.Name, "err", err)
	}
	r.s.log.InfoContext(ctx, "ssf receiver: signal recorded", "receiver", r.cfg.Name, "event_id", e.ID, "signal", set.Event.Type, "user_id", userID)
	return nil
}

func (r *receiver) updateStream(ctx context.Context, fn func(*model.SSFReceiverStream)) error {
	st, err := r.load(ctx)
	if err != nil {
		return err
	}
	if st == nil {
		return nil
	}
	fn(st)
	st.UpdatedAt = r.s.o.Now()
	if err := r.s.o.Store.PutSSFReceiverStream(ctx, st); err != nil {
		return err
	}
	r.setStream(st)
	return nil
}

// event builds the signal's domain event.
func (r *receiver) event(set *rs.SET, userID, sessionID, deviceID, format string) *model.Event {
	ev := set.Event
	d := map[string]string{
		activity.DataSignal:        bounded(ev.Type, maxDetail),
		model.DataSSFTransmitter:   r.cfg.Name,
		model.DataSSFIssuer:        bounded(set.Issuer, maxDetail),
		model.DataSSFJTI:           set.JTI,
		model.DataSSFSubjectFormat: bounded(format, 32),
	}
	put := func(k, v string, n int) {
		if v = bounded(v, n); v != "" {
			d[k] = v
		}
	}
	if !ev.Timestamp.IsZero() {
		d[model.DataSSFEventTime] = ev.Timestamp.UTC().Format(time.RFC3339)
	}
	put(model.DataSSFInitiator, ev.InitiatingEntity, 16)
	put(model.DataSSFReasonAdmin, pickLang(ev.ReasonAdmin), maxReason)
	put(model.DataSSFReasonUser, pickLang(ev.ReasonUser), maxReason)
	put(model.DataSSFCurrentLevel, ev.CurrentLevel, 64)
	put(model.DataSSFPreviousLevel, ev.PreviousLevel, 64)
	var detail []string
	for _, kv := range [][2]string{{"credential_type", ev.CredentialType}, {"change_type", ev.ChangeType},
		{"current_status", ev.CurrentStatus}, {"principal", ev.Principal}, {"risk_reason", ev.RiskReason}, {"namespace", ev.Namespace}} {
		if kv[1] != "" {
			detail = append(detail, kv[0]+"="+kv[1])
		}
	}
	put(model.DataSSFDetail, strings.Join(detail, " "), maxDetail)
	return &model.Event{
		Type: model.EventSSFSignalReceived, Actor: "ssf:" + r.cfg.Name,
		UserID: userID, SessionID: sessionID, DeviceID: deviceID,
		Reason: bounded(shortType(ev.Type), 64), Outcome: model.OutcomeSuccess, Data: d,
	}
}

// shortType is an event type URI's last path segment (session-revoked).
func shortType(t string) string {
	if i := strings.LastIndexByte(t, '/'); i >= 0 && i < len(t)-1 {
		return t[i+1:]
	}
	return t
}

// pickLang returns the English text of a reason, else the first by
// language tag.
func pickLang(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	for _, k := range []string{"en", "en-US", "en-GB"} {
		if v, ok := m[k]; ok {
			return v
		}
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return m[keys[0]]
}

// resolve maps a SET's subject to a Ward user, session and device. A
// complex subject's user member names the user, its session member a
// Ward session (an opaque id Ward knows, of that user), its device member
// a Ward device of that user; a session Ward knows names its user when no
// user member does. A simple opaque subject of a session event may be a
// Ward session id.
func (r *receiver) resolve(ctx context.Context, set *rs.SET) (userID, sessionID, deviceID, format string, err error) {
	sub := set.Subject
	if sub == nil {
		return "", "", "", "", nil
	}
	format = sub.Format
	userSub := sub
	if sub.Format == "complex" {
		userSub = sub.User
		if userSub != nil {
			format = userSub.Format
		}
	}
	if userSub != nil {
		if userID, err = r.userOf(ctx, userSub); err != nil {
			return "", "", "", "", err
		}
	}
	var sessionSub, deviceSub *rs.Subject
	switch {
	case sub.Format == "complex":
		sessionSub, deviceSub = sub.Session, sub.Device
	case sub.Format == "opaque" && userID == "" && set.Event.Type == rs.EventSessionRevoked:
		sessionSub = sub
	}
	if sessionSub != nil && sessionSub.Format == "opaque" && sessionSub.ID != "" && len(sessionSub.ID) <= 128 {
		s, err := r.s.o.Store.GetSession(ctx, sessionSub.ID)
		switch {
		case err == nil && (userID == "" || s.UserID == userID):
			sessionID, userID = s.ID, s.UserID
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return "", "", "", "", err
		}
	}
	if deviceSub != nil && deviceSub.Format == "opaque" && userID != "" && deviceSub.ID != "" && len(deviceSub.ID) <= 128 {
		d, err := r.s.o.Store.GetDevice(ctx, deviceSub.ID)
		switch {
		case err == nil && d.UserID == userID:
			deviceID = d.ID
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return "", "", "", "", err
		}
	}
	return userID, sessionID, deviceID, format, nil
}

// userOf maps a simple user subject ("" when it names no Ward user). An
// iss_sub of Ward's own issuer names a Ward user by id whatever the
// mapping; an email, an iss_sub of the transmitter's issuer and an
// opaque id are looked up as the receiver's mapping says; aliases by
// their first identifier that maps.
func (r *receiver) userOf(ctx context.Context, s *rs.Subject) (string, error) {
	switch s.Format {
	case "iss_sub":
		if s.Iss == r.s.o.Issuer {
			return r.lookup(ctx, MapID, s.Sub)
		}
		if s.Iss == r.cfg.Issuer {
			return r.lookup(ctx, r.cfg.IssSubMap, s.Sub)
		}
	case "email":
		return r.lookup(ctx, r.cfg.EmailMap, s.Email)
	case "opaque":
		return r.lookup(ctx, r.cfg.OpaqueMap, s.ID)
	case "aliases":
		for _, id := range s.Identifiers {
			if u, err := r.userOf(ctx, id); u != "" || err != nil {
				return u, err
			}
		}
	}
	return "", nil
}

// lookup finds the one user whose attribute (MapID, MapUsername,
// MapEmail) is v; none, or an ambiguous email, is "".
func (r *receiver) lookup(ctx context.Context, attr, v string) (string, error) {
	if v == "" || len(v) > 320 {
		return "", nil
	}
	var (
		u   *model.User
		err error
	)
	switch attr {
	case MapID:
		u, err = r.s.o.Store.GetUser(ctx, v)
	case MapUsername:
		u, err = r.s.o.Store.GetUserByUsername(ctx, strings.ToLower(v))
	case MapEmail:
		us, e := r.s.o.Store.UsersByEmail(ctx, v, 2)
		if e != nil || len(us) != 1 {
			return "", e // none, or two users share it: naming neither is safer than guessing
		}
		u = us[0]
	default:
		return "", nil
	}
	if errors.Is(err, store.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return u.ID, nil
}
