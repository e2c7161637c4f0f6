-- Per-client limits for ngx_http_rate_limit_module.
--
-- The module runs this itself when it connects, so a new database needs no
-- step by hand; it is shipped for review and for databases where nginx's role
-- may not create tables.  Every statement is idempotent, and an advisory lock
-- keeps two nginx nodes from running it at once.  A table that exists keeps
-- its definition: give a table made without the CHECKs below the same ones
-- with ALTER TABLE ... ADD CHECK, or nginx ignores (and logs) the rows that
-- it cannot take.
--
--   zone        a zone name of rate_limit_zone in nginx.conf: 1 to 64 of
--               A-Z a-z 0-9 _ . -, as nginx.conf and the bucket API take
--   key         the client's key, as the zone's KEY evaluates for it: up to
--               4096 bytes, as the policy file and the bucket API take
--   rate        "N r/PERIOD" as in nginx.conf ("1000r/m", "5r/30s"); "0r/s"
--               blocks the client
--   burst       the bucket's capacity; NULL means the N of rate, 0 blocks
--   updated_at  set by the trigger
--   txid        the writing transaction, set by the trigger: a sync reads the
--               rows of every transaction that had not committed when the
--               last sync ran, however long that transaction took
--
-- Deleted rows are remembered for 7 days in rate_limit_bucket_deletions, so
-- that a node that syncs incrementally sees deletions too; TRUNCATE leaves a
-- mark there that makes every node read the whole table again.  Every change
-- sends NOTIFY rate_limit_buckets, and the syncing worker of each node reads
-- the change at once.
BEGIN;
SELECT pg_advisory_xact_lock(7274627465);
CREATE TABLE IF NOT EXISTS rate_limit_buckets (
    zone        text        NOT NULL CHECK (zone ~ '^[A-Za-z0-9_.-]{1,64}$'),
    key         text        NOT NULL CHECK (key <> '' AND octet_length(key) <= 4096),
    rate        text        NOT NULL CHECK (rate ~ '^[0-9]{1,15}r/([1-9][0-9]{0,8})?(ms|s|m|h|d)$'),
    burst       bigint      CHECK (burst >= 0 AND burst <= 1000000000000000),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    txid        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (zone, key)
);
CREATE INDEX IF NOT EXISTS rate_limit_buckets_txid
    ON rate_limit_buckets (txid);
CREATE TABLE IF NOT EXISTS rate_limit_bucket_deletions (
    zone        text        NOT NULL,
    key         text        NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    txid        xid8        NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX IF NOT EXISTS rate_limit_bucket_deletions_txid
    ON rate_limit_bucket_deletions (txid);
CREATE INDEX IF NOT EXISTS rate_limit_bucket_deletions_deleted_at
    ON rate_limit_bucket_deletions (deleted_at);
CREATE OR REPLACE FUNCTION rate_limit_buckets_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rate_limit_buckets', '');
    IF TG_OP = 'DELETE' THEN
        INSERT INTO rate_limit_bucket_deletions (zone, key)
            VALUES (OLD.zone, OLD.key);
        -- now() is stable, so the index serves this once per statement
        DELETE FROM rate_limit_bucket_deletions
            WHERE deleted_at < now() - interval '7 days';
        RETURN OLD;
    END IF;
    NEW.updated_at := clock_timestamp();
    NEW.txid := pg_current_xact_id();
    RETURN NEW;
END
$$;
CREATE OR REPLACE TRIGGER rate_limit_buckets_changed
    BEFORE INSERT OR UPDATE OR DELETE ON rate_limit_buckets
    FOR EACH ROW EXECUTE FUNCTION rate_limit_buckets_changed();
-- an empty zone and key: "read the whole table again"
CREATE OR REPLACE FUNCTION rate_limit_buckets_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rate_limit_bucket_deletions (zone, key) VALUES ('', '');
    PERFORM pg_notify('rate_limit_buckets', '');
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER rate_limit_buckets_truncated
    AFTER TRUNCATE ON rate_limit_buckets
    FOR EACH STATEMENT EXECUTE FUNCTION rate_limit_buckets_truncated();
COMMIT;
