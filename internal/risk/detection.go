package risk

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/risk/assess"
	"github.com/ward-idp/ward/internal/textclean"
)

// Bounds of what a risk.detected event may carry. The event's fields are
// checked rather than trusted: the bus carries what every detector and
// every external signal mapping put there.
const (
	maxIDLen       = 128
	maxDetailBytes = 512
	maxEvidence    = assess.MaxEvidence
)

var (
	typePattern      = regexp.MustCompile(`^[a-z0-9][a-z0-9_.:-]{0,63}$`)
	techniquePattern = regexp.MustCompile(`^T[0-9]{4}(\.[0-9]{3})?$`)
)

// errRefused marks an event the consumer refuses (and acknowledges).
var errRefused = errors.New("risk: refused risk.detected")

func refused(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errRefused, fmt.Sprintf(format, a...))
}

// printableID reports whether v is a non-empty id of printable ASCII
// without spaces, at most maxIDLen bytes.
func printableID(v string) bool {
	if v == "" || len(v) > maxIDLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] > '~' {
			return false
		}
	}
	return true
}

// parseDetection makes the detection a risk.detected event describes, or
// says why it refuses the event. Oversized free text is cut, not refused;
// a missing detection id is derived from the event id (the event is then
// its own idempotency key).
func parseDetection(e *model.Event) (*model.RiskDetection, error) {
	if e.Type != model.EventRiskDetected {
		return nil, refused("event type %q", e.Type)
	}
	g := func(k string) string { return e.Data[k] }
	d := &model.RiskDetection{
		ID: g(model.DataDetectionID), Type: e.Reason, UserID: e.UserID, SessionID: e.SessionID,
		ClientID: e.ClientID, DeviceID: e.DeviceID, IP: e.IP, Severity: g(model.DataDetectionSeverity),
		Source: g(model.DataDetectionSource), EventID: e.ID, DetectedAt: e.Time, State: model.DetectionActive,
	}
	if d.ID == "" {
		if !printableID(e.ID) {
			return nil, refused("no detection id and no usable event id")
		}
		d.ID = "event:" + e.ID
	}
	if !printableID(d.ID) {
		return nil, refused("detection id: not an id of at most %d printable characters", maxIDLen)
	}
	if !typePattern.MatchString(d.Type) {
		return nil, refused("detection type (reason) %q", textclean.Clip(d.Type, 64))
	}
	switch d.Severity {
	case model.RiskLow, model.RiskMedium, model.RiskHigh:
	default:
		return nil, refused("severity %q: want low, medium or high", textclean.Clip(d.Severity, 16))
	}
	c, err := strconv.ParseFloat(g(model.DataDetectionConfidence), 64)
	if err != nil || math.IsNaN(c) || c < 0 || c > 1 {
		return nil, refused("confidence %q: want a number from 0 to 1", textclean.Clip(g(model.DataDetectionConfidence), 16))
	}
	d.Confidence = c
	switch d.Source {
	case "":
		d.Source = model.DetectionSourceOnline
	case model.DetectionSourceOnline, model.DetectionSourceSignIn, model.DetectionSourceExternal, model.DetectionSourceAdmin:
	default:
		return nil, refused("source %q", textclean.Clip(d.Source, 16))
	}
	for _, id := range []string{d.UserID, d.SessionID, d.ClientID, d.DeviceID} {
		if id != "" && !printableID(id) {
			return nil, refused("a subject id is not an id of at most %d printable characters", maxIDLen)
		}
	}
	if len(d.IP) > 64 {
		d.IP = ""
	}
	if t := g(model.DataDetectionTechnique); techniquePattern.MatchString(t) {
		d.Technique = t
	}
	for _, id := range strings.Fields(g(model.DataDetectionEvidence)) {
		if len(d.Evidence) == maxEvidence {
			break
		}
		if printableID(id) {
			d.Evidence = append(d.Evidence, id)
		}
	}
	d.Detail = textclean.Clean(g(model.DataDetectionDetail), maxDetailBytes)
	if d.DetectedAt.IsZero() {
		return nil, refused("no time")
	}
	return d, nil
}
