-- The W3C traceparent of the request that wrote the outbox row, so the
-- relay's publish (and everything after it) joins that request's trace.
-- NULL when tracing is off or the row was not written by a traced request.
ALTER TABLE outbox ADD COLUMN traceparent text;
