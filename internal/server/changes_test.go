package server_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ward-idp/ward/internal/access"
	"github.com/ward-idp/ward/internal/app"
	"github.com/ward-idp/ward/internal/bus/bustest"
	"github.com/ward-idp/ward/internal/clientspec"
	"github.com/ward-idp/ward/internal/config"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/policy"
	"github.com/ward-idp/ward/internal/secret"
	"github.com/ward-idp/ward/internal/wardtest"
)

// Changes made by a command-line tool on the database of a running server
// (or by another instance) reach the server's in-memory state through the
// events they store, within about a second: not at the next cache expiry
// or maintenance round. The instances run on a fake clock that the tests
// never advance, so no TTL, maintenance round or policy poll can be what
// made a change visible.

// changesBackend starts a server on one storage and bus combination.
type changesBackend struct {
	name  string
	start func(t *testing.T) *wardtest.Instance
}

func changesBackends() []changesBackend {
	return []changesBackend{
		{"sqlite, embedded NATS", func(t *testing.T) *wardtest.Instance { return wardtest.Start(t, wardtest.Options{}) }},
		{"sqlite, local bus", func(t *testing.T) *wardtest.Instance {
			return wardtest.Start(t, wardtest.Options{Configure: func(c *config.Config) { c.Bus.Driver = config.BusLocal }})
		}},
		{"postgres, external NATS", func(t *testing.T) *wardtest.Instance {
			dsn := postgresDSN(t)
			return wardtest.Start(t, wardtest.Options{PostgresDSN: dsn, Configure: externalNATS(t)})
		}},
	}
}

func postgresDSN(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("WARD_TEST_POSTGRES_DSN")
	if dsn == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI is set but WARD_TEST_POSTGRES_DSN is not")
		}
		t.Skip("set WARD_TEST_POSTGRES_DSN to run against PostgreSQL")
	}
	return dsn
}

// externalNATS points the instances configured with it to the external
// NATS, on a stream and subjects of their own (deleted afterwards).
func externalNATS(t *testing.T) func(*config.Config) {
	t.Helper()
	u := bustest.NATSURL(t)
	b := make([]byte, 6)
	rand.Read(b)
	id := hex.EncodeToString(b)
	stream := "WARDTEST_CHANGES_" + strings.ToUpper(id)
	t.Cleanup(func() {
		nc, err := nats.Connect(u)
		if err != nil {
			return
		}
		defer nc.Close()
		if js, err := jetstream.New(nc); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = js.DeleteStream(ctx, stream)
		}
	})
	return func(c *config.Config) {
		c.Bus.NATS.URL = secret.String(u)
		c.Bus.NATS.Stream, c.Bus.NATS.SubjectPrefix = stream, "wardtest.changes."+id
	}
}

// openTool opens Ward on in's database as `ward client …`, `ward keys …`
// and `ward policy …` do, on in's clock.
func openTool(t *testing.T, in *wardtest.Instance) *app.App {
	t.Helper()
	cfg := *in.Config
	tool, err := app.OpenWith(context.Background(), &cfg, nil, app.Options{Now: in.Clock.Now, Tool: true,
		LookupEnv: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatalf("open the tool: %v", err)
	}
	return tool
}

// eventually polls cond until it holds; the deadline is generous (a
// loaded machine), the expected time is about a second.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not seen within 15 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// newServiceClient creates a confidential client_credentials client (not
// from the configuration, so its secret can be rotated) and returns its
// secret.
func newServiceClient(t *testing.T, a *app.App, id string) string {
	t.Helper()
	_, sec, err := a.Clients.Create(context.Background(), "test", clientspec.Spec{ID: id, Name: id,
		AuthMethod: model.AuthClientSecretBasic, GrantTypes: []string{"client_credentials"}, Scopes: []string{"docs.read"}})
	if err != nil {
		t.Fatal(err)
	}
	return sec.Reveal()
}

func clientCredentials(t *testing.T, in *wardtest.Instance, id, sec string) result {
	t.Helper()
	return do(t, in, call{path: "/token", basic: [2]string{id, sec}, form: url.Values{"grant_type": {"client_credentials"}}})
}

func TestToolChangesReachServer(t *testing.T) {
	for _, b := range changesBackends() {
		t.Run(b.name, func(t *testing.T) {
			in := b.start(t)
			ctx := context.Background()

			// A rotated client secret: the old one is refused, the new
			// one accepted.
			old := newServiceClient(t, in.App, "rotated")
			if r := clientCredentials(t, in, "rotated", old); r.Status != http.StatusOK {
				t.Fatalf("before the rotation: %d %s", r.Status, r.Body) // and the client is cached
			}
			tool := openTool(t, in)
			newSec, err := tool.Clients.RotateSecret(ctx, "cli", "rotated")
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, "the old secret refused", func() bool {
				return clientCredentials(t, in, "rotated", old).Status == http.StatusUnauthorized
			})
			if r := clientCredentials(t, in, "rotated", newSec.Reveal()); r.Status != http.StatusOK {
				t.Fatalf("the new secret: %d %s", r.Status, r.Body)
			}

			// A rotated signing key: published in /jwks, and it signs the
			// next token.
			before := in.App.Keys.ActiveKID()
			k, err := tool.Keys.Rotate(ctx, "cli")
			if err != nil {
				t.Fatal(err)
			}
			if k.KID == before {
				t.Fatal("the rotation kept the key")
			}
			eventually(t, "the new key in /jwks", func() bool { return jwksHas(t, in, k.KID) })
			r := clientCredentials(t, in, "rotated", newSec.Reveal())
			if kid := header(t, r.str("access_token"))["kid"]; kid != k.KID {
				t.Fatalf("the next token is signed by %v, want the new key %s", kid, k.KID)
			}
			if !jwksHas(t, in, before) {
				t.Error("the previous key left /jwks at the rotation (it must stay until its retirement)")
			}

			// A Conditional Access version applied by the tool is in force.
			doc, err := policy.DecodeYAML([]byte(`
policies:
  - id: no-rotated
    state: enabled
    assignments: {users: {include: [all]}, applications: {include: [rotated]}}
    conditions: {flows: [client_credentials]}
    grant: {block: true}
`))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tool.Access.Apply(ctx, doc, access.ApplyOptions{Actor: "cli", ExpectVersion: access.AnyVersion}); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the policy in force", func() bool {
				r := clientCredentials(t, in, "rotated", newSec.Reveal())
				return r.Status == http.StatusBadRequest && r.str("error") == "unauthorized_client"
			})
			if r := clientCredentials(t, in, "service", wardtest.ServiceSecret); r.Status != http.StatusOK {
				t.Fatalf("a client the policy does not name: %d %s", r.Status, r.Body)
			}
			if err := tool.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// jwksHas reports whether the instance's /jwks lists kid.
func jwksHas(t *testing.T, in *wardtest.Instance, kid string) bool {
	t.Helper()
	resp, err := http.Get(in.URL + "/jwks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var set struct {
		Keys []struct {
			KID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		t.Fatalf("/jwks: %v: %s", err, body)
	}
	for _, k := range set.Keys {
		if k.KID == kid {
			return true
		}
	}
	return false
}

// Two instances on one PostgreSQL database and one NATS: a secret rotated
// through one is refused by the other, which had the client cached.
func TestChangesAcrossInstances(t *testing.T) {
	dsn := postgresDSN(t)
	nc := externalNATS(t)
	a := wardtest.Start(t, wardtest.Options{PostgresDSN: dsn, Configure: nc})
	b := wardtest.Start(t, wardtest.Options{Join: a, Configure: nc})
	old := newServiceClient(t, a.App, "shared")
	if r := clientCredentials(t, b, "shared", old); r.Status != http.StatusOK {
		t.Fatalf("second instance before the rotation: %d %s", r.Status, r.Body)
	}
	newSec, err := a.App.Clients.RotateSecret(context.Background(), "admin", "shared")
	if err != nil {
		t.Fatal(err)
	}
	if r := clientCredentials(t, a, "shared", old); r.Status != http.StatusUnauthorized {
		t.Fatalf("first instance, old secret: %d, want 401 at once", r.Status)
	}
	eventually(t, "the old secret refused by the second instance", func() bool {
		return clientCredentials(t, b, "shared", old).Status == http.StatusUnauthorized
	})
	if r := clientCredentials(t, b, "shared", newSec.Reveal()); r.Status != http.StatusOK {
		t.Fatalf("second instance, new secret: %d %s", r.Status, r.Body)
	}

	// A key rotated through the second instance signs the first's tokens.
	// The key is active from the second instance's time, which the first
	// must have reached (each instance has a fake clock of its own).
	if d := b.Clock.Now().Sub(a.Clock.Now()); d > 0 {
		a.Clock.Advance(d)
	}
	k, err := b.App.Keys.Rotate(context.Background(), "admin")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the first instance signing with the new key", func() bool { return a.App.Keys.ActiveKID() == k.KID })
	if !jwksHas(t, a, k.KID) {
		t.Fatal("the new key is not in the first instance's /jwks")
	}
}
