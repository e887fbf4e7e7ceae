package console

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ward-idp/ward/internal/clients"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/secret"
)

// Clients is the client registry (clients.Service).
type Clients interface {
	List(ctx context.Context) ([]*model.Client, error)
	Get(ctx context.Context, id string) (*model.Client, error)
	RotateSecret(ctx context.Context, actor, id string) (secret.String, error)
}

// SigningKeys is the signing key manager (tokens.KeyManager).
type SigningKeys interface {
	Keys() []*model.SigningKey
	ActiveKID() string
	Rotate(ctx context.Context, actor string) (*model.SigningKey, error)
}

type clientRow struct {
	C          *model.Client
	UsesSecret bool
	Managed    bool
}

func clientRowOf(c *model.Client) clientRow {
	return clientRow{C: c, UsesSecret: len(c.SecretHash) > 0 && strings.HasPrefix(c.TokenEndpointAuthMethod, "client_secret"),
		Managed: c.ManagedBy != ""}
}

// handleClients lists the registered clients.
func (c *Console) handleClients(w http.ResponseWriter, r *http.Request) {
	cs, err := c.d.Clients.List(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	rows := make([]clientRow, len(cs))
	for i, x := range cs {
		rows[i] = clientRowOf(x)
	}
	c.render(w, r, "clients.html", pageData{Title: "Applications", Nav: "clients", Data: rows})
}

type clientPage struct {
	clientRow
	// NewSecret is shown once, right after a rotation.
	NewSecret string
	Problem   string
}

// handleClient shows a client's registration.
func (c *Console) handleClient(w http.ResponseWriter, r *http.Request) {
	cl, err := c.d.Clients.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.render(w, r, "client.html", pageData{Title: cl.ID, Nav: "clients", Data: clientPage{clientRow: clientRowOf(cl)}})
}

// handleRotateClientSecret replaces a client's secret through the client
// registry (which records client.secret_rotated with the operator) and
// shows the new secret once: it is in this response only, never stored
// or logged in the clear.
func (c *Console) handleRotateClientSecret(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	op, id := OperatorOf(ctx), r.PathValue("id")
	sec, err := c.d.Clients.RotateSecret(ctx, op.User.ID, id)
	cl, gerr := c.d.Clients.Get(ctx, id)
	if gerr != nil {
		c.fail(w, r, gerr)
		return
	}
	p := clientPage{clientRow: clientRowOf(cl)}
	if err != nil && sec.Reveal() == "" {
		if errors.Is(err, clients.ErrNoSecret) || errors.Is(err, clients.ErrManagedByConfig) {
			p.Problem = strings.TrimPrefix(err.Error(), "clients: ")
			c.renderStatus(w, r, http.StatusConflict, "client.html", pageData{Title: cl.ID, Nav: "clients", Data: p})
			return
		}
		c.fail(w, r, err)
		return
	}
	p.NewSecret = sec.Reveal()
	if err != nil {
		// Rotated, but its event was not recorded: say so, and still
		// show the secret (the old one no longer works).
		c.d.Log.ErrorContext(ctx, "client secret rotated, event not recorded", "client_id", id, "err", err)
		p.Problem = "The secret was rotated but recording it failed; the server log has the details."
	}
	c.render(w, r, "client.html", pageData{Title: cl.ID, Nav: "clients",
		Notice: "The secret was rotated: the old one no longer works. Copy the new secret below into the application's configuration; it is shown only once.", Data: p})
}

type keyRow struct {
	K      *model.SigningKey
	Status string // active, next, retiring, published
}

type keysPage struct {
	Rows []keyRow
	Now  time.Time
}

// handleKeys lists the signing keys with their status.
func (c *Console) handleKeys(w http.ResponseWriter, r *http.Request) {
	now := c.d.Now()
	active := c.d.Keys.ActiveKID()
	p := keysPage{Now: now}
	for _, k := range c.d.Keys.Keys() {
		row := keyRow{K: k, Status: "published"}
		switch {
		case k.KID == active:
			row.Status = "active"
		case k.ActiveAt.After(now):
			row.Status = "next"
		case !k.RetireAt.IsZero():
			row.Status = "retiring"
		}
		p.Rows = append(p.Rows, row)
	}
	slices.SortFunc(p.Rows, func(a, b keyRow) int { return b.K.CreatedAt.Compare(a.K.CreatedAt) })
	c.render(w, r, "keys.html", pageData{Title: "Signing keys", Nav: "keys", Notice: noticeOf(r), Data: p})
}

// handleRotateKeys creates a new signing key through the key manager
// (which records key.created and key.rotated with the operator).
func (c *Console) handleRotateKeys(w http.ResponseWriter, r *http.Request) {
	if _, err := c.d.Keys.Rotate(r.Context(), OperatorOf(r.Context()).User.ID); err != nil {
		c.fail(w, r, err)
		return
	}
	c.done(w, r, Prefix+"/keys", "keys-rotated")
}
