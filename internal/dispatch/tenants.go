package dispatch

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/dispatch-engine/dispatch-engine/internal/store"
)

// tenantTTL is how long a tenant's name and weight are reused: a weight
// changed with `dispatchctl tenants set` reaches workflows started after it.
const tenantTTL = 30 * time.Second

// tenants caches the tenants the starter puts on workflows (their name as
// the fairness key and search attribute, their weight as fairness weight).
type tenants struct {
	mu   sync.Mutex
	byID map[uuid.UUID]cachedTenant
}

type cachedTenant struct {
	t     store.Tenant
	until time.Time
}

func (c *tenants) get(ctx context.Context, q store.Querier, id uuid.UUID) (store.Tenant, error) {
	now := time.Now()
	c.mu.Lock()
	hit, ok := c.byID[id]
	c.mu.Unlock()
	if ok && now.Before(hit.until) {
		return hit.t, nil
	}
	t, err := store.GetTenant(ctx, q, store.TenantOrDefault(id))
	if err != nil {
		return store.Tenant{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byID == nil || len(c.byID) > 10_000 {
		c.byID = make(map[uuid.UUID]cachedTenant)
	}
	c.byID[id] = cachedTenant{t: t, until: now.Add(tenantTTL)}
	return t, nil
}
