"""The PostgreSQL store's schema and its migrations, in one place (docs/fleet-plan.md).

Columns mirror SQLite's (store/queries.py), so rows convert to jobs the same way; epoch seconds as double
precision. `schema_migrations` records each applied version; the store applies what is missing under an
advisory lock in one transaction, so workers that start together migrate once.
"""

from __future__ import annotations

MIGRATION_LOCK = 0x68617463  # any constant shared by every worker: the advisory lock taken while migrating
EVENTS_LOCK = 0x68617464  # held from drawing an event's id to the commit: events commit in id order

QUEUE_CHANNEL = "hatchway_queue"
EVENTS_CHANNEL = "hatchway_events"
CANCEL_CHANNEL = "hatchway_cancel"

# Version -> the statements that bring the previous version up to it. Never edit an applied entry: add one.
FINAL_STATES = "('succeeded', 'failed', 'killed')"
"""The states of an ended job, as SQL (`state IN …`)."""
ACTIVE_STATES = "('building', 'running')"
"""The states of a job a worker holds, as SQL."""

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """
        CREATE TABLE jobs (
            seq              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id               text NOT NULL UNIQUE,
            state            text NOT NULL,
            priority         integer NOT NULL,
            created_at       double precision NOT NULL,
            started_at       double precision,
            finished_at      double precision,
            worker_id        text,
            reason           text,
            message          text,
            exit_code        integer,
            stdout           text NOT NULL DEFAULT '',
            stderr           text NOT NULL DEFAULT '',
            stdout_truncated boolean NOT NULL DEFAULT false,
            stderr_truncated boolean NOT NULL DEFAULT false,
            resources        text NOT NULL DEFAULT '{}',
            labels           jsonb NOT NULL,
            spec             text NOT NULL,
            build_output     text NOT NULL DEFAULT '',
            run              text NOT NULL DEFAULT '{}',
            grade            text,
            origin           text,
            external_id      text,
            reported_at      double precision,
            callback         text,
            callback_due_at  double precision,
            output_times     text,
            kind             text GENERATED ALWAYS AS (coalesce(spec::jsonb ->> 'kind', 'job')) STORED
        )
        """,
        "CREATE INDEX jobs_queue ON jobs (priority DESC, seq) WHERE state = 'queued'",
        "CREATE INDEX jobs_state ON jobs (state, seq)",
        "CREATE INDEX jobs_outbox ON jobs (origin, seq) WHERE origin IS NOT NULL AND reported_at IS NULL",
        "CREATE INDEX jobs_callbacks ON jobs (callback_due_at) WHERE callback_due_at IS NOT NULL",
        """
        CREATE TABLE claims (
            origin      text NOT NULL,
            external_id text NOT NULL,
            item        text NOT NULL,
            claimed_at  double precision NOT NULL,
            seq         bigint GENERATED ALWAYS AS IDENTITY,
            PRIMARY KEY (origin, external_id)
        )
        """,
        # The lifecycle event log, written by trigger in the transaction that changes a job's state (as SQLite's).
        """
        CREATE TABLE events (
            id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            type      text NOT NULL,
            job_id    text NOT NULL,
            state     text NOT NULL,
            reason    text,
            worker_id text,
            time      double precision NOT NULL
        )
        """,
        "CREATE INDEX events_job ON events (job_id, id)",
        """
        CREATE FUNCTION jobs_event() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' AND OLD.state IS NOT DISTINCT FROM NEW.state THEN
                RETURN NULL;
            END IF;
            INSERT INTO events (type, job_id, state, reason, worker_id, time)
            VALUES (CASE
                        WHEN TG_OP = 'INSERT' THEN
                            CASE NEW.state WHEN 'queued' THEN 'job_queued' ELSE 'job_finished' END
                        ELSE CASE NEW.state WHEN 'building' THEN 'job_building' WHEN 'running' THEN 'job_running'
                                            WHEN 'queued' THEN 'job_requeued' ELSE 'job_finished' END
                    END,
                    NEW.id, NEW.state, NEW.reason,
                    CASE WHEN TG_OP = 'INSERT' THEN NEW.worker_id ELSE coalesce(NEW.worker_id, OLD.worker_id) END,
                    extract(epoch FROM clock_timestamp()));
            RETURN NULL;
        END
        $$
        """,
        "CREATE TRIGGER jobs_event AFTER INSERT OR UPDATE OF state ON jobs FOR EACH ROW EXECUTE FUNCTION jobs_event()",
    ],
}

# Version 2: the fleet. Workers register with a lease; claims and jobs remember which worker (and which of its
# lives, the lease generation) holds them; a DELETE of a job another worker runs is marked on the row; and every
# change that another worker may be waiting for is announced with NOTIFY (delivered at commit):
#   hatchway_queue  (payload: the job's priority)  a job was queued or put back in the queue;
#   hatchway_events (payload: the event's id)      a lifecycle event was recorded;
#   hatchway_cancel (payload: the job's id)        a running job was asked to stop.
# Events are numbered in commit order: the trigger takes EVENTS_LOCK (held to the end of the transaction) before
# it draws an id, so a reader that has seen id N never later finds a smaller one committed. A transaction that
# changes the state of several jobs must therefore lock all their rows first (SELECT … FOR UPDATE), or two such
# transactions could each hold what the other waits for.
MIGRATIONS[2] = [
    """
    CREATE TABLE workers (
        id           text PRIMARY KEY,
        address      text,
        version      text NOT NULL,
        slots        integer NOT NULL,
        runtimes     jsonb NOT NULL DEFAULT '[]',
        profiles     jsonb NOT NULL DEFAULT '[]',
        pools        jsonb NOT NULL DEFAULT '[]',
        labels       jsonb NOT NULL DEFAULT '{}',
        started_at   double precision NOT NULL,
        heartbeat_at double precision NOT NULL,
        lease_until  double precision NOT NULL,
        generation   bigint NOT NULL DEFAULT 1,
        stopped_at   double precision
    )
    """,
    "ALTER TABLE claims ADD COLUMN worker_id text",
    "ALTER TABLE jobs ADD COLUMN lease_generation bigint",
    "ALTER TABLE jobs ADD COLUMN cancel_requested_at double precision",
    f"""
    CREATE OR REPLACE FUNCTION jobs_event() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        event_id bigint;
    BEGIN
        IF TG_OP = 'UPDATE' AND OLD.state IS NOT DISTINCT FROM NEW.state THEN
            RETURN NULL;
        END IF;
        PERFORM pg_advisory_xact_lock({EVENTS_LOCK});
        INSERT INTO events (type, job_id, state, reason, worker_id, time)
        VALUES (CASE
                    WHEN TG_OP = 'INSERT' THEN
                        CASE NEW.state WHEN 'queued' THEN 'job_queued' ELSE 'job_finished' END
                    ELSE CASE NEW.state WHEN 'building' THEN 'job_building' WHEN 'running' THEN 'job_running'
                                        WHEN 'queued' THEN 'job_requeued' ELSE 'job_finished' END
                END,
                NEW.id, NEW.state, NEW.reason,
                CASE WHEN TG_OP = 'INSERT' THEN NEW.worker_id ELSE coalesce(NEW.worker_id, OLD.worker_id) END,
                extract(epoch FROM clock_timestamp()))
        RETURNING id INTO event_id;
        PERFORM pg_notify('hatchway_events', event_id::text);
        IF NEW.state = 'queued' THEN
            PERFORM pg_notify('hatchway_queue', NEW.priority::text);
        END IF;
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE FUNCTION jobs_cancel_requested() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('hatchway_cancel', NEW.id);
        RETURN NULL;
    END
    $$
    """,
    """
    CREATE TRIGGER jobs_cancel_requested AFTER UPDATE OF cancel_requested_at ON jobs FOR EACH ROW
    WHEN (OLD.cancel_requested_at IS NULL AND NEW.cancel_requested_at IS NOT NULL)
    EXECUTE FUNCTION jobs_cancel_requested()
    """,
]

# Version 3: a worker's lease taken over (store/fleet.py), and the index that finds a worker's active jobs.
MIGRATIONS[3] = [
    "ALTER TABLE workers ADD COLUMN reclaimed_at double precision",
    "ALTER TABLE workers ADD COLUMN reclaimed_by text",
    "CREATE INDEX jobs_held ON jobs (worker_id, seq) WHERE state IN ('building', 'running')",
]

# Version 4: a job's placement, the labels a worker must have to claim it, beside its spec where `claim_next`
# filters on it (`placement <@ the worker's labels`) without reading the spec.
MIGRATIONS[4] = ["ALTER TABLE jobs ADD COLUMN placement jsonb NOT NULL DEFAULT '{}'"]

# Version 5: the grace a DELETE gave the stop it asked of a job another worker runs (cancel_requested_at).
MIGRATIONS[5] = ["ALTER TABLE jobs ADD COLUMN cancel_grace_s double precision"]

# Version 6: when a job's process began to start (JobStore.mark_launching): a claimed job with it may have run.
MIGRATIONS[6] = ["ALTER TABLE jobs ADD COLUMN launched_at double precision"]

# Version 7: readers of the event log that must see every event (JobStore.cursor), each at the last it dealt with;
# pruning keeps every event after the lowest.
MIGRATIONS[7] = ["CREATE TABLE cursors (name text PRIMARY KEY, position bigint NOT NULL)"]

SCHEMA_VERSION = max(MIGRATIONS)

CREATE_VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
