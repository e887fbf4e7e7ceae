package store

import (
	"encoding/json"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// eventJSON is the one documented JSON shape of an audit event: the line
// format of `ward logs --json`, the admin API's events and the export that
// SIEMs and backtests read. Field names are stable; only add.
type eventJSON struct {
	Seq           int64             `json:"seq"`
	ID            string            `json:"id"`
	Type          model.EventType   `json:"type"`
	Code          string            `json:"code,omitempty"`
	Time          time.Time         `json:"time"`
	Actor         string            `json:"actor,omitempty"`
	UserID        string            `json:"user_id,omitempty"`
	SessionID     string            `json:"session_id,omitempty"`
	ClientID      string            `json:"client_id,omitempty"`
	DeviceID      string            `json:"device_id,omitempty"`
	TokenID       string            `json:"token_id,omitempty"`
	IP            string            `json:"ip,omitempty"`
	UserAgent     string            `json:"user_agent,omitempty"`
	Outcome       string            `json:"outcome,omitempty"`
	Reason        string            `json:"reason,omitempty"`
	Binding       string            `json:"binding,omitempty"`
	BindingReason string            `json:"binding_reason,omitempty"`
	CorrelationID string            `json:"correlation_id,omitempty"`
	Data          map[string]string `json:"data,omitempty"`
}

// MarshalJSON writes the event in its documented JSON shape.
func (e StoredEvent) MarshalJSON() ([]byte, error) {
	return json.Marshal(eventJSON{
		Seq: e.Seq, ID: e.ID, Type: e.Type, Code: e.Code(), Time: e.Time.UTC(), Actor: e.Actor,
		UserID: e.UserID, SessionID: e.SessionID, ClientID: e.ClientID, DeviceID: e.DeviceID,
		TokenID: e.TokenID, IP: e.IP, UserAgent: e.UserAgent, Outcome: e.Outcome, Reason: e.Reason,
		Binding: e.Binding, BindingReason: e.BindingReason, CorrelationID: e.CorrelationID, Data: e.Data,
	})
}

// UnmarshalJSON reads the documented shape back (durable bus consumers
// receive events in it). The code is derived from the type and ignored.
func (e *StoredEvent) UnmarshalJSON(b []byte) error {
	var j eventJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*e = StoredEvent{Seq: j.Seq, Event: model.Event{
		ID: j.ID, Type: j.Type, Time: j.Time, Actor: j.Actor, UserID: j.UserID, SessionID: j.SessionID,
		ClientID: j.ClientID, DeviceID: j.DeviceID, TokenID: j.TokenID, IP: j.IP, UserAgent: j.UserAgent,
		Outcome: j.Outcome, Reason: j.Reason, Binding: j.Binding, BindingReason: j.BindingReason,
		CorrelationID: j.CorrelationID, Data: j.Data,
	}}
	return nil
}
