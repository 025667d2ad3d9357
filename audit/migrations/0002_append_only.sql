-- Append-only, enforced by the database rather than by whoever connects:
-- row triggers refuse UPDATE and DELETE, a statement trigger refuses
-- TRUNCATE (which fires no row triggers). They bind the owner too; only
-- the owner or a superuser could drop or disable them, and the bot never
-- connects as either.
CREATE FUNCTION audit_events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'audit events are never changed or removed; record a new event instead';
END
$$;

CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_refuse_change();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_refuse_change();

-- /rollback history [<route>]: newest first, per route or across routes.
CREATE INDEX audit_events_route_occurred_at ON audit_events (route, occurred_at DESC);
CREATE INDEX audit_events_occurred_at ON audit_events (occurred_at DESC);
-- One op with all its events, in the order they happened.
CREATE INDEX audit_events_op_occurred_at ON audit_events (op_id, occurred_at);

-- The role the bot uses: it may add and read events, nothing else. It is a
-- NOLOGIN group role; a deployment grants it to the login role the bot
-- connects as. Roles are cluster-wide, so it may exist already (another
-- database of the cluster, or created by an administrator so that the
-- migrating role needs no CREATEROLE); a concurrent creation is tolerated.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'backflip_runtime') THEN
        BEGIN
            CREATE ROLE backflip_runtime NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

REVOKE ALL ON audit_events FROM PUBLIC;
REVOKE ALL ON audit_events FROM backflip_runtime;
GRANT SELECT, INSERT ON audit_events TO backflip_runtime;
REVOKE ALL ON SEQUENCE audit_events_id_seq FROM PUBLIC;
GRANT USAGE ON SEQUENCE audit_events_id_seq TO backflip_runtime;
