// Package audit keeps the record of every rollback, promotion, drill and
// refusal: an append-only Postgres table (audit_events), fed from an etcd
// outbox so that recording never blocks or fails a rollback.
//
// The first event of an op is written into etcd in the same transaction as
// the flip it describes (OutboxOp builds that operation); a shipper moves
// events to Postgres idempotently (event_id is unique) and deletes them from
// etcd only after the insert committed. Postgres may be down during an
// incident: events wait in etcd.
//
// The package must not change routing, must never UPDATE or DELETE audit
// rows (the database refuses it anyway), and must not drop an event
// silently: a malformed outbox value is quarantined and logged. It holds no
// package-level mutable state.
package audit
