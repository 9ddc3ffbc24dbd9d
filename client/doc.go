// Package client is a Go client of the Dispatch Engine API.
//
// Most of it is generated from the contract, openapi.yaml, by oapi-codegen
// (client.gen.go; make client regenerates it, make lint fails when it is
// stale): the resource types (Notification, Operation, Problem, ...), the
// enums (StatusDELIVERED, ChannelSms, ...), and ClientWithResponses, which
// has one method per operation and answers a response with the status, the
// headers and the body decoded for each documented status.
//
// Dispatch, made by New, is a thin layer over it for the common calls:
//
//   - it sends the API key as `Authorization: Bearer <key>` with every request;
//   - each call answers the resource it is about (Send a *Notification,
//     SendBatch a *BatchAccepted, List a *NotificationPage, ...);
//   - every non-2xx answer is a *Problem error, the RFC 9457 problem document
//     the API answers (type, title, status, detail, instance and the bad
//     fields in errors), whose Error() reads
//     "422 Validation failed: recipient: must be ...";
//   - WithIdempotencyKey and WithRequestID set those headers on one request;
//   - ListAll pages through a list by its cursor, and Wait polls a
//     notification until it is DELIVERED, FAILED, CANCELLED or SKIPPED;
//   - PutRecipient, PatchRecipient, Suppress, PutCategory and their kin
//     cover the recipient side (profiles, suppressions, categories).
//
// A refusal is told by its problem:
//
//	var p *client.Problem
//	if errors.As(err, &p) && p.Type == "/problems/not-found" { ... }
//
// An answer that is not a problem document (a proxy's HTML 502) is a
// *Problem too, of type about:blank, with the start of the body as detail.
// Failures to reach the API are the http.Client's errors.
//
// What Dispatch does not wrap (providers, dead letters, receipts, probes, a
// replay's Idempotent-Replayed header) is on Raw, the generated client with
// the same key and options.
package client
