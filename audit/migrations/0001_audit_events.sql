-- The audit log of the external contract. Append-only: 0002 adds the
-- triggers that refuse UPDATE, DELETE and TRUNCATE, and the runtime role.
CREATE TABLE audit_events (
    id                bigserial   PRIMARY KEY,
    event_id          uuid        NOT NULL UNIQUE,
    op_id             uuid        NOT NULL,
    kind              text        NOT NULL,
    route             text        NOT NULL,
    from_version      text,
    to_version        text,
    actor             text        NOT NULL,
    actor_name        text,
    channel           text,
    reason            text,
    outcome           text,
    affected_requests int,
    timings           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    etcd_revision     bigint,
    details           jsonb       NOT NULL DEFAULT '{}'::jsonb,
    schema_version    int         NOT NULL,
    occurred_at       timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);
