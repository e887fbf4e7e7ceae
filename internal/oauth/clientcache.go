package oauth

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/ward-idp/ward/internal/model"
)

// clientCacheTTL bounds how long a client registration read from the store
// is reused. A change evicts it (client.* events): at once when made
// through this instance's services, within about a second when made by
// another instance or a command-line tool (Config.Changes). The TTL is the
// safety net for an event that never arrives.
const clientCacheTTL = 10 * time.Second

// clientCache keeps recently used client registrations: every token
// request authenticates its client, and the lookup was a sixth of the cost
// of a client_credentials grant.
type clientCache struct {
	mu      sync.RWMutex
	entries map[string]clientEntry
	now     func() time.Time
}

type clientEntry struct {
	c   *model.Client
	exp time.Time
}

func newClientCache(now func() time.Time) *clientCache {
	return &clientCache{entries: map[string]clientEntry{}, now: now}
}

func (cc *clientCache) get(id string) *model.Client {
	cc.mu.RLock()
	e, ok := cc.entries[id]
	cc.mu.RUnlock()
	if !ok || !cc.now().Before(e.exp) {
		return nil
	}
	return e.c
}

func (cc *clientCache) put(c *model.Client) {
	cc.mu.Lock()
	if len(cc.entries) > 10000 {
		cc.entries = map[string]clientEntry{} // bounded: start over rather than grow
	}
	cc.entries[c.ID] = clientEntry{c: c, exp: cc.now().Add(clientCacheTTL)}
	cc.mu.Unlock()
}

func (cc *clientCache) evict(id string) {
	cc.mu.Lock()
	delete(cc.entries, id)
	cc.mu.Unlock()
}

// onEvent evicts a client when it changes.
func (cc *clientCache) onEvent(_ context.Context, e *model.Event) error {
	if strings.HasPrefix(string(e.Type), "client.") && e.ClientID != "" {
		cc.evict(e.ClientID)
	}
	return nil
}

// client returns the client registration, from the cache when fresh. The
// returned value is shared: callers must not modify it.
func (p *Provider) client(ctx context.Context, id string) (*model.Client, error) {
	if c := p.clients.get(id); c != nil {
		return c, nil
	}
	c, err := p.c.Store.GetClient(ctx, id)
	if err != nil {
		return nil, err
	}
	p.clients.put(c)
	return c, nil
}
