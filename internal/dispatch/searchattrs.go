package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.uber.org/zap"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// searchAttributes are the search attributes a notification's workflow
// starts with; the workflow updates status, attempts and provider as it goes.
func searchAttributes(n store.Notification, tenant store.Tenant, status notification.Status) temporal.SearchAttributes {
	attrs := []temporal.SearchAttributeUpdate{
		workflows.SearchTenant.ValueSet(tenant.Name),
		workflows.SearchChannel.ValueSet(string(n.Channel)),
		workflows.SearchPriority.ValueSet(string(n.Priority)),
		workflows.SearchStatus.ValueSet(string(status)),
		workflows.SearchAttempts.ValueSet(int64(n.AttemptBase)),
	}
	if n.BatchID != nil {
		attrs = append(attrs, workflows.SearchBatchID.ValueSet(n.BatchID.String()))
	}
	return temporal.NewSearchAttributes(attrs...)
}

// EnsureSearchAttributes registers the workflows' custom search attributes
// on the namespace; attributes that exist already are fine.
func EnsureSearchAttributes(ctx context.Context, tc client.Client, namespace string) error {
	attrs := map[string]enumspb.IndexedValueType{
		workflows.SearchStatus.GetName():   enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		workflows.SearchChannel.GetName():  enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		workflows.SearchPriority.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		workflows.SearchAttempts.GetName(): enumspb.INDEXED_VALUE_TYPE_INT,
		workflows.SearchBatchID.GetName():  enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		workflows.SearchProvider.GetName(): enumspb.INDEXED_VALUE_TYPE_KEYWORD,
		workflows.SearchTenant.GetName():   enumspb.INDEXED_VALUE_TYPE_KEYWORD,
	}
	existing, err := tc.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("listing search attributes: %w", err)
	}
	for name := range existing.GetCustomAttributes() {
		delete(attrs, name)
	}
	if len(attrs) == 0 {
		return nil
	}
	_, err = tc.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace: namespace, SearchAttributes: attrs,
	})
	var exists *serviceerror.AlreadyExists
	if err != nil && !errors.As(err, &exists) && !strings.Contains(err.Error(), "already") {
		return fmt.Errorf("adding search attributes: %w", err)
	}
	return nil
}

// RegisterSearchAttributes calls EnsureSearchAttributes until it succeeds,
// with backoff (1s doubling to 30s), until ctx ends or the namespace refuses
// the operator call (Temporal Cloud: register them there by hand). Until
// then workflow starts are refused and their messages wait in the queue.
func RegisterSearchAttributes(ctx context.Context, tc client.Client, namespace string, log *zap.Logger) error {
	backoff := time.Second
	for {
		err := EnsureSearchAttributes(ctx, tc, namespace)
		var denied *serviceerror.PermissionDenied
		switch {
		case err == nil:
			log.Info("search attributes registered")
			return nil
		case errors.As(err, &denied):
			log.Error("may not register search attributes; register them on the namespace by hand", zap.Error(err))
			return err
		}
		log.Warn("could not register search attributes yet; retrying", zap.Error(err), zap.Duration("backoff", backoff))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}
