package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Template is one version of a tenant's template: its channel, its parts
// per locale (locale -> part -> Liquid source; parts are subject, text,
// html, title) and the locale taken when none fits.
type Template struct {
	Name          string
	Version       int
	Channel       string
	Locales       map[string]map[string]string
	DefaultLocale string
	// CreatedAt is when the template was first stored; UpdatedAt when this
	// version was.
	CreatedAt time.Time
	UpdatedAt time.Time
}

// TemplateVersion is one stored version of a template, as its history lists it.
type TemplateVersion struct {
	Version   int
	CreatedAt time.Time
}

// PutTemplate stores t as the tenant's new current version of t.Name (the
// first, or the one after the current); created reports a new template.
// Two concurrent PUTs of one name each get their own version: the
// template's row is locked while its next number is taken.
func PutTemplate(ctx context.Context, db TxStarter, tenantID uuid.UUID, t Template) (out Template, created bool, err error) {
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		// xmax = 0 tells an inserted row from an updated one.
		err := tx.QueryRow(ctx, `
			INSERT INTO templates (tenant_id, name, current_version) VALUES ($1, $2, 1)
			ON CONFLICT (tenant_id, name) DO UPDATE SET current_version = templates.current_version + 1, updated_at = now()
			RETURNING current_version, xmax = 0`, tenantID, t.Name).Scan(&t.Version, &created)
		if err != nil {
			return fmt.Errorf("storing template: %w", err)
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO template_versions (tenant_id, name, version, channel, locales, default_locale)
			VALUES ($1, $2, $3, $4, $5, $6)`, tenantID, t.Name, t.Version, t.Channel, t.Locales, t.DefaultLocale); err != nil {
			return fmt.Errorf("storing template version: %w", err)
		}
		out, err = getTemplate(ctx, tx, tenantID, t.Name, 0)
		return err
	})
	if err != nil {
		return Template{}, false, err
	}
	return out, created, nil
}

const templateColumns = `t.name, v.version, v.channel, v.locales, v.default_locale, t.created_at, v.created_at`

func scanTemplate(row pgx.CollectableRow) (Template, error) {
	var t Template
	err := row.Scan(&t.Name, &t.Version, &t.Channel, &t.Locales, &t.DefaultLocale, &t.CreatedAt, &t.UpdatedAt)
	return t, err
}

// GetTemplate loads the current version of the tenant's template name;
// ErrNotFound when there is none.
func GetTemplate(ctx context.Context, q Querier, tenantID uuid.UUID, name string) (Template, error) {
	return getTemplate(ctx, q, tenantID, name, 0)
}

// getTemplate loads version of the template (0: the current one).
func getTemplate(ctx context.Context, q Querier, tenantID uuid.UUID, name string, version int) (Template, error) {
	rows, err := q.Query(ctx, `SELECT `+templateColumns+` FROM templates t
		JOIN template_versions v ON v.tenant_id = t.tenant_id AND v.name = t.name
			AND v.version = CASE WHEN $3 > 0 THEN $3 ELSE t.current_version END
		WHERE t.tenant_id = $1 AND t.name = $2`, tenantID, name, version)
	if err != nil {
		return Template{}, fmt.Errorf("loading template: %w", err)
	}
	t, err := pgx.CollectExactlyOneRow(rows, scanTemplate)
	if errors.Is(err, pgx.ErrNoRows) {
		return Template{}, ErrNotFound
	}
	if err != nil {
		return Template{}, fmt.Errorf("loading template: %w", err)
	}
	return t, nil
}

// ListTemplateVersions lists the versions of the tenant's template name,
// oldest first; ErrNotFound when there is no such template.
func ListTemplateVersions(ctx context.Context, q Querier, tenantID uuid.UUID, name string) ([]TemplateVersion, error) {
	rows, err := q.Query(ctx, `SELECT version, created_at FROM template_versions
		WHERE tenant_id = $1 AND name = $2 ORDER BY version`, tenantID, name)
	if err != nil {
		return nil, fmt.Errorf("listing template versions: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (TemplateVersion, error) {
		var v TemplateVersion
		return v, row.Scan(&v.Version, &v.CreatedAt)
	})
	if err != nil {
		return nil, fmt.Errorf("listing template versions: %w", err)
	}
	if len(list) == 0 {
		return nil, ErrNotFound
	}
	return list, nil
}

// ListTemplates returns up to limit of the tenant's templates (each its
// current version) in name order, after the name after ("" for the first page).
func ListTemplates(ctx context.Context, q Querier, tenantID uuid.UUID, after string, limit int) ([]Template, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("listing templates: limit %d must be positive", limit)
	}
	rows, err := q.Query(ctx, `SELECT `+templateColumns+` FROM templates t
		JOIN template_versions v ON v.tenant_id = t.tenant_id AND v.name = t.name AND v.version = t.current_version
		WHERE t.tenant_id = $1 AND t.name > $2 ORDER BY t.name LIMIT $3`, tenantID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("listing templates: %w", err)
	}
	list, err := pgx.CollectRows(rows, scanTemplate)
	if err != nil {
		return nil, fmt.Errorf("listing templates: %w", err)
	}
	return list, nil
}

// DeleteTemplate removes the tenant's template name with all its versions;
// the notifications rendered from it keep what they rendered. ErrNotFound
// when there is none.
func DeleteTemplate(ctx context.Context, q Querier, tenantID uuid.UUID, name string) error {
	tag, err := q.Exec(ctx, `DELETE FROM templates WHERE tenant_id = $1 AND name = $2`, tenantID, name)
	if err != nil {
		return fmt.Errorf("deleting template: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}
