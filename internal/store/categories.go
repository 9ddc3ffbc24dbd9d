package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/dispatch-engine/dispatch-engine/internal/pacing"
)

// Category is a tenant's notification category. A critical one (security,
// billing) ignores opt-outs and quiet hours, never suppressions; a category
// not stored is non-critical. Throttle and Digest, when set, pace its
// notifications per recipient (Recipients II).
type Category struct {
	Name        string           `db:"name"`
	Critical    bool             `db:"critical"`
	Description *string          `db:"description"`
	Throttle    *pacing.Throttle `db:"throttle"`
	Digest      *pacing.Digest   `db:"digest"`
	CreatedAt   time.Time        `db:"created_at"`
	UpdatedAt   time.Time        `db:"updated_at"`
}

const categoryColumns = `name, critical, description, throttle, digest, created_at, updated_at`

// PutCategory stores the tenant's category name as given (created or
// replaced: critical and description both, with no throttle or digest);
// created reports a new one.
func PutCategory(ctx context.Context, q Querier, tenantID uuid.UUID, name string, critical bool, description *string) (c Category, created bool, err error) {
	return PutCategoryRules(ctx, q, tenantID, Category{Name: name, Critical: critical, Description: description})
}

// PutCategoryRules stores the tenant's category c.Name as given (created or
// replaced whole: critical, description, throttle and digest); created
// reports a new one.
func PutCategoryRules(ctx context.Context, q Querier, tenantID uuid.UUID, c Category) (out Category, created bool, err error) {
	rows, err := q.Query(ctx, `
		INSERT INTO categories (tenant_id, name, critical, description, throttle, digest) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (tenant_id, name) DO UPDATE SET critical = EXCLUDED.critical,
			description = EXCLUDED.description, throttle = EXCLUDED.throttle, digest = EXCLUDED.digest, updated_at = now()
		RETURNING `+categoryColumns+`, xmax = 0 AS created`, tenantID, c.Name, c.Critical, c.Description, c.Throttle, c.Digest)
	if err != nil {
		return Category{}, false, fmt.Errorf("storing category: %w", err)
	}
	type row struct {
		Category
		Created bool `db:"created"`
	}
	r, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[row])
	if err != nil {
		return Category{}, false, fmt.Errorf("storing category: %w", err)
	}
	return r.Category, r.Created, nil
}

// GetCategory loads the tenant's category name; ErrNotFound when there is none.
func GetCategory(ctx context.Context, q Querier, tenantID uuid.UUID, name string) (Category, error) {
	rows, err := q.Query(ctx, `SELECT `+categoryColumns+` FROM categories WHERE tenant_id = $1 AND name = $2`, tenantID, name)
	if err != nil {
		return Category{}, fmt.Errorf("loading category: %w", err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Category])
	if errors.Is(err, pgx.ErrNoRows) {
		return Category{}, ErrNotFound
	}
	if err != nil {
		return Category{}, fmt.Errorf("loading category: %w", err)
	}
	return c, nil
}

// ListCategories returns up to limit of the tenant's categories in name
// order, after the name after ("" for the first page).
func ListCategories(ctx context.Context, q Querier, tenantID uuid.UUID, after string, limit int) ([]Category, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("listing categories: limit %d must be positive", limit)
	}
	rows, err := q.Query(ctx, `SELECT `+categoryColumns+` FROM categories
		WHERE tenant_id = $1 AND name > $2 ORDER BY name LIMIT $3`, tenantID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("listing categories: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByName[Category])
	if err != nil {
		return nil, fmt.Errorf("listing categories: %w", err)
	}
	return list, nil
}

// DeleteCategory removes the tenant's category name (it becomes an unknown,
// non-critical category); ErrNotFound when there is none.
func DeleteCategory(ctx context.Context, q Querier, tenantID uuid.UUID, name string) error {
	tag, err := q.Exec(ctx, `DELETE FROM categories WHERE tenant_id = $1 AND name = $2`, tenantID, name)
	if err != nil {
		return fmt.Errorf("deleting category: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}
