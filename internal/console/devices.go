package console

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/ward-idp/ward/internal/device"
	"github.com/ward-idp/ward/internal/model"
)

type devicesPage struct {
	Status, Compliance string
	Statuses           []string
	Compliances        []string
	Rows               []deviceRow
	Now                time.Time
}

// handleDevices lists devices with their compliance and failing rules,
// filtered by status and compliance.
func (c *Console) handleDevices(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	p := devicesPage{Status: q.Get("status"), Compliance: q.Get("compliance"), Now: c.d.Now(),
		Statuses:    []string{model.DeviceActive, model.DeviceDisabled, model.DeviceLost},
		Compliances: []string{model.Compliant, model.NonCompliant, model.ComplianceUnknown}}
	if p.Status != "" && !slices.Contains(p.Statuses, p.Status) {
		p.Status = ""
	}
	if p.Compliance != "" && !slices.Contains(p.Compliances, p.Compliance) {
		p.Compliance = ""
	}
	ds, err := c.d.Devices.List(ctx, device.Filter{Status: p.Status, Compliance: p.Compliance, Limit: 1000})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	users := c.lookup(ctx)
	for _, d := range ds {
		p.Rows = append(p.Rows, deviceRow{Device: d, User: users.get(d.UserID), Failures: device.DecodeFailures(d)})
	}
	c.render(w, r, "devices.html", pageData{Title: "Devices", Nav: "devices", Data: p})
}

type postureItem struct {
	Name, Value string
}

type devicePage struct {
	deviceRow
	Now        time.Time
	Posture    []postureItem
	Attestaton []postureItem
}

// flatten turns a JSON object into sorted name/value pairs (nested
// objects as dotted names).
func flatten(raw json.RawMessage) []postureItem {
	if len(raw) == 0 {
		return nil
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return []postureItem{{Name: "(unreadable)", Value: err.Error()}}
	}
	var out []postureItem
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				name := k
				if prefix != "" {
					name = prefix + "." + k
				}
				walk(name, e)
			}
		case []any:
			b, _ := json.Marshal(x)
			out = append(out, postureItem{Name: prefix, Value: string(b)})
		case nil:
			out = append(out, postureItem{Name: prefix, Value: "—"})
		default:
			out = append(out, postureItem{Name: prefix, Value: fmt.Sprint(x)})
		}
	}
	walk("", v)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// handleDevice shows a device: its posture, each failing compliance rule
// with how to fix it, its key's storage and attestation.
func (c *Console) handleDevice(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	d, err := c.d.Devices.Get(ctx, r.PathValue("id"))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	u, _ := c.d.Identity.GetUser(ctx, d.UserID)
	p := devicePage{deviceRow: deviceRow{Device: d, User: u, Failures: device.DecodeFailures(d)}, Now: c.d.Now(),
		Posture: flatten(d.Posture), Attestaton: flatten(d.KeyAttestation)}
	c.render(w, r, "device.html", pageData{Title: d.Hostname, Nav: "devices", Notice: noticeOf(r), Data: p})
}

// handleDeviceAction disables a device, marks it lost (both end its
// sessions) or enables it again.
func (c *Console) handleDeviceAction(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	op, id := OperatorOf(ctx), r.PathValue("id")
	var err error
	switch r.PathValue("action") {
	case "disable":
		_, err = c.d.Devices.Disable(ctx, op.User.ID, id)
	case "lost":
		_, err = c.d.Devices.MarkLost(ctx, op.User.ID, id)
	case "enable":
		_, err = c.d.Devices.Enable(ctx, op.User.ID, id)
	default:
		c.errorPage(w, r, http.StatusNotFound, "Not found", "There is no such action.")
		return
	}
	if err != nil {
		if errIsConflict(err) {
			c.errorPage(w, r, http.StatusConflict, "Not done", err.Error())
			return
		}
		c.fail(w, r, err)
		return
	}
	c.done(w, r, Prefix+"/devices/"+id, "device-done")
}

// errIsConflict reports a refusal the operator should read (a lost
// device cannot be enabled again).
func errIsConflict(err error) bool { return errors.Is(err, device.ErrLost) }
