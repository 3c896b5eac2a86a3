"""Every SQL statement of the SQLite store, by name."""

SCHEMA_VERSION = 11

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    state            TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    worker_id        TEXT,
    reason           TEXT,
    message          TEXT,
    exit_code        INTEGER,
    stdout           TEXT NOT NULL DEFAULT '',
    stderr           TEXT NOT NULL DEFAULT '',
    stdout_truncated INTEGER NOT NULL DEFAULT 0,
    stderr_truncated INTEGER NOT NULL DEFAULT 0,
    resources        TEXT NOT NULL DEFAULT '{}',
    labels           TEXT NOT NULL,
    spec             TEXT NOT NULL,
    build_output     TEXT NOT NULL DEFAULT '',
    run              TEXT NOT NULL DEFAULT '{}',
    grade            TEXT,
    origin           TEXT,
    external_id      TEXT,
    reported_at      REAL,
    callback         TEXT,
    callback_due_at  REAL,
    output_times     TEXT,
    cancel_requested_at REAL,
    cancel_grace_s   REAL,
    placement        TEXT NOT NULL DEFAULT '{}',
    launched_at      REAL
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (priority DESC, seq) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_outbox ON jobs (origin, seq) WHERE origin IS NOT NULL AND reported_at IS NULL;
-- Items a source has taken from its master and not yet stored as jobs (see JobStore.record_claim).
CREATE TABLE IF NOT EXISTS claims (
    origin      TEXT NOT NULL,
    external_id TEXT NOT NULL,
    item        TEXT NOT NULL,
    claimed_at  REAL NOT NULL,
    worker_id   TEXT,
    PRIMARY KEY (origin, external_id)
);
CREATE INDEX IF NOT EXISTS jobs_callbacks ON jobs (callback_due_at) WHERE callback_due_at IS NOT NULL;
-- The fleet's registry (store/fleet.py): one worker on one file, with the same seam as PostgreSQL's fleet.
CREATE TABLE IF NOT EXISTS workers (
    id           TEXT PRIMARY KEY,
    address      TEXT,
    version      TEXT NOT NULL,
    slots        INTEGER NOT NULL,
    runtimes     TEXT NOT NULL DEFAULT '[]',
    profiles     TEXT NOT NULL DEFAULT '[]',
    pools        TEXT NOT NULL DEFAULT '[]',
    labels       TEXT NOT NULL DEFAULT '{}',
    started_at   REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    lease_until  REAL NOT NULL,
    generation   INTEGER NOT NULL DEFAULT 1,
    stopped_at   REAL,
    reclaimed_at REAL,
    reclaimed_by TEXT
);

-- The lifecycle event log. The database writes each event itself, by trigger, in the very statement (so the same
-- transaction) that changes a job's state: no code path can change a state without its event, and no event is
-- written for a change that did not commit. AUTOINCREMENT, so no id is ever handed out twice, even once the oldest
-- events are pruned: a client's Last-Event-ID stays meaningful.
CREATE TABLE IF NOT EXISTS events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    type      TEXT NOT NULL,
    job_id    TEXT NOT NULL,
    state     TEXT NOT NULL,
    reason    TEXT,
    worker_id TEXT,
    time      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, id);
-- Readers of the event log that must see every event (JobStore.cursor): the last event each has dealt with. Pruning
-- keeps every event after the lowest.
CREATE TABLE IF NOT EXISTS cursors (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS jobs_event_insert AFTER INSERT ON jobs
BEGIN
    INSERT INTO events (type, job_id, state, reason, worker_id, time)
    VALUES (CASE NEW.state WHEN 'queued' THEN 'job_queued' ELSE 'job_finished' END,
            NEW.id, NEW.state, NEW.reason, NEW.worker_id, (julianday('now') - 2440587.5) * 86400.0);
END;
CREATE TRIGGER IF NOT EXISTS jobs_event_update AFTER UPDATE OF state ON jobs WHEN OLD.state IS NOT NEW.state
BEGIN
    INSERT INTO events (type, job_id, state, reason, worker_id, time)
    VALUES (CASE NEW.state WHEN 'building' THEN 'job_building' WHEN 'running' THEN 'job_running'
                           WHEN 'queued' THEN 'job_requeued' ELSE 'job_finished' END,
            NEW.id, NEW.state, NEW.reason, coalesce(NEW.worker_id, OLD.worker_id),
            (julianday('now') - 2440587.5) * 86400.0);
END;
"""

# Schema version -> the statements that bring the previous version up to it.
MIGRATIONS = {
    2: [
        "ALTER TABLE jobs ADD COLUMN build_output TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE jobs ADD COLUMN run TEXT NOT NULL DEFAULT '{}'",
    ],
    3: ["ALTER TABLE jobs ADD COLUMN grade TEXT"],
    4: [
        "ALTER TABLE jobs ADD COLUMN origin TEXT",
        "ALTER TABLE jobs ADD COLUMN external_id TEXT",
        "ALTER TABLE jobs ADD COLUMN reported_at REAL",
    ],
    5: [  # a callback's delivery (JSON), and when it is next due while it is pending; the index is in SCHEMA
        "ALTER TABLE jobs ADD COLUMN callback TEXT",
        "ALTER TABLE jobs ADD COLUMN callback_due_at REAL",
    ],
    # When each line of a job's output was written; and the event log, whose table and triggers are in SCHEMA
    # (run after every migration, IF NOT EXISTS).
    6: ["ALTER TABLE jobs ADD COLUMN output_times TEXT"],
    7: [],  # the fleet's registry of workers, a table of its own in SCHEMA
    # A job's placement (the labels a worker needs to run it), and the worker each claim is kept for. A file of
    # before the claims journal gets it here, in its first shape, to be altered like the others.
    8: [
        "ALTER TABLE jobs ADD COLUMN placement TEXT NOT NULL DEFAULT '{}'",
        """CREATE TABLE IF NOT EXISTS claims (
            origin TEXT NOT NULL, external_id TEXT NOT NULL, item TEXT NOT NULL, claimed_at REAL NOT NULL,
            PRIMARY KEY (origin, external_id))""",
        "ALTER TABLE claims ADD COLUMN worker_id TEXT",
    ],
    # A stop asked of an active job (JobStore.request_cancel), with the grace the asker gave.
    9: [
        "ALTER TABLE jobs ADD COLUMN cancel_requested_at REAL",
        "ALTER TABLE jobs ADD COLUMN cancel_grace_s REAL",
    ],
    # When a job's process began to start (JobStore.mark_launching): a claimed job with it may have run.
    10: ["ALTER TABLE jobs ADD COLUMN launched_at REAL"],
    11: [],  # the event log's cursors, a table of its own in SCHEMA
}

INSERT = """
INSERT INTO jobs (id, state, priority, created_at, labels, spec, run, origin, external_id, reason, message,
    finished_at, callback, callback_due_at, placement)
VALUES (:id, :state, :priority, :created_at, :labels, :spec, :run, :origin, :external_id, :reason, :message,
    :finished_at, :callback, :callback_due_at, :placement)
ON CONFLICT (id) DO NOTHING
RETURNING *
"""

GET = "SELECT * FROM jobs WHERE id = ?"
GET_STATE = "SELECT state FROM jobs WHERE id = ?"

# A queued job whose placement the worker's labels (:labels, a JSON object) meet: none of its placement's labels is
# missing from them, or different.
_PLACED_HERE = """NOT EXISTS (
    SELECT 1 FROM json_each(jobs.placement) AS wanted
    WHERE NOT EXISTS (SELECT 1 FROM json_each(:labels) AS had
                      WHERE had.key = wanted.key AND had.value = wanted.value))"""

CLAIM_NEXT = """
UPDATE jobs SET state = 'building', worker_id = :worker_id, message = NULL
WHERE seq = (SELECT seq FROM jobs WHERE state = 'queued' ORDER BY priority DESC, seq LIMIT 1)
RETURNING *
"""

CLAIM_NEXT_PLACED = f"""
UPDATE jobs SET state = 'building', worker_id = :worker_id, message = NULL
WHERE seq = (SELECT seq FROM jobs WHERE state = 'queued' AND {_PLACED_HERE} ORDER BY priority DESC, seq LIMIT 1)
RETURNING *
"""

# The queued jobs whose placement the worker meets, best first, for it to ask which it can run; then the one taken.
CLAIM_CANDIDATES = f"SELECT seq FROM jobs WHERE state = 'queued' AND {_PLACED_HERE} ORDER BY priority DESC, seq"
CLAIM_CANDIDATE_SPEC = "SELECT spec FROM jobs WHERE seq = ? AND state = 'queued'"
CLAIM_SEQ = """
UPDATE jobs SET state = 'building', worker_id = :worker_id, message = NULL
WHERE seq = :seq AND state = 'queued'
RETURNING *
"""

MARK_RUNNING = """
UPDATE jobs SET state = 'running', started_at = :started_at, run = :run
WHERE id = :id AND state = 'building'
RETURNING *
"""

UPDATE_RESOURCES = """
UPDATE jobs SET resources = :resources WHERE id = :id AND state IN ('building', 'running')
"""

FINISH = """
UPDATE jobs SET state = :state, reason = :reason, message = :message, exit_code = :exit_code,
    stdout = :stdout, stderr = :stderr, stdout_truncated = :stdout_truncated,
    stderr_truncated = :stderr_truncated, resources = :resources, finished_at = :finished_at,
    build_output = :build_output, grade = :grade, output_times = :output_times
WHERE id = :id AND state IN ('building', 'running')
RETURNING *
"""

CANCEL = """
UPDATE jobs SET state = 'killed', reason = 'cancelled', finished_at = :finished_at,
    message = 'killed before it started'
WHERE id = :id AND state = 'queued'
RETURNING *
"""

REQUEST_CANCEL = """
UPDATE jobs SET cancel_requested_at = :requested_at, cancel_grace_s = :grace_s
WHERE id = :id AND state IN ('building', 'running') AND cancel_requested_at IS NULL
RETURNING *
"""

CANCEL_REQUESTS = """
SELECT id, cancel_grace_s FROM jobs
WHERE state IN ('building', 'running') AND worker_id = ? AND cancel_requested_at IS NOT NULL
"""

REQUEUE_LOST = """
UPDATE jobs SET state = 'queued', worker_id = NULL, started_at = NULL, launched_at = NULL
WHERE id = :id AND state IN ('building', 'running')
RETURNING *
"""

REQUEUE_UNSTARTED = """
UPDATE jobs SET state = 'queued', worker_id = NULL, message = :message, launched_at = NULL
WHERE id = :id AND state = 'building'
RETURNING *
"""

RECORD_CLAIM = """
INSERT INTO claims (origin, external_id, item, claimed_at, worker_id)
VALUES (:origin, :external_id, :item, :claimed_at, :worker_id)
ON CONFLICT (origin, external_id) DO NOTHING
"""

CLAIMS_UNNAMED = "UPDATE claims SET worker_id = :worker_id WHERE origin = :origin AND worker_id IS NULL"
CLAIMS = """
SELECT external_id, item FROM claims WHERE origin = :origin AND worker_id = :worker_id ORDER BY claimed_at, rowid
"""
ADOPT_CLAIMS = "UPDATE claims SET worker_id = :to_worker WHERE worker_id = :from_worker"

FORGET_CLAIM = "DELETE FROM claims WHERE origin = ? AND external_id = ?"

UNREPORTED = """
SELECT * FROM jobs WHERE origin = ? AND reported_at IS NULL AND state IN ('succeeded', 'failed', 'killed')
ORDER BY seq
"""

UNREPORTED_OLDEST = UNREPORTED + "LIMIT ?"

MARK_REPORTED = """
UPDATE jobs SET reported_at = :reported_at
WHERE id = :id AND reported_at IS NULL AND state IN ('succeeded', 'failed', 'killed')
RETURNING *
"""

DUE_CALLBACKS = """
SELECT * FROM jobs WHERE callback_due_at <= :now AND state IN ('succeeded', 'failed', 'killed')
ORDER BY callback_due_at, seq LIMIT :limit
"""

HOLD_CALLBACK = "UPDATE jobs SET callback_due_at = max(callback_due_at, :hold_until) WHERE id = :id"

NEXT_CALLBACK_AT = """
SELECT min(callback_due_at) FROM jobs WHERE callback_due_at > :after AND state IN ('succeeded', 'failed', 'killed')
"""

RECORD_CALLBACK = """
UPDATE jobs SET callback = :callback, callback_due_at = :callback_due_at
WHERE id = :id AND callback_due_at IS NOT NULL AND json_extract(callback, '$.attempts') = :attempts - 1
RETURNING *
"""

# The fleet's registry. Times by SQLite's clock, as the event triggers'.
NOW = "(julianday('now') - 2440587.5) * 86400.0"

REGISTER = f"""
INSERT INTO workers (id, address, version, slots, runtimes, profiles, pools, labels, started_at, heartbeat_at,
    lease_until, generation)
VALUES (:id, :address, :version, :slots, :runtimes, :profiles, :pools, :labels, {NOW}, {NOW}, {NOW} + :lease_s, 1)
ON CONFLICT (id) DO UPDATE SET address = excluded.address, version = excluded.version, slots = excluded.slots,
    runtimes = excluded.runtimes, profiles = excluded.profiles, pools = excluded.pools, labels = excluded.labels,
    started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, lease_until = excluded.lease_until,
    generation = workers.generation + 1, stopped_at = NULL, reclaimed_at = NULL, reclaimed_by = NULL
RETURNING generation
"""

RENEW_LEASE = f"""
UPDATE workers SET heartbeat_at = {NOW}, lease_until = {NOW} + :lease_s
WHERE id = :id AND generation = :generation AND reclaimed_at IS NULL AND stopped_at IS NULL
RETURNING id
"""

WORKER = "SELECT * FROM workers WHERE id = ?"

MARK_STOPPED = f"""
UPDATE workers SET stopped_at = {NOW}, lease_until = {NOW}
WHERE id = :id AND generation = :generation AND reclaimed_at IS NULL AND stopped_at IS NULL
"""

WORKERS = f"""
SELECT workers.*, {NOW} AS now,
    (SELECT count(*) FROM jobs WHERE jobs.worker_id = workers.id AND jobs.state = 'building') AS building,
    (SELECT count(*) FROM jobs WHERE jobs.worker_id = workers.id AND jobs.state = 'running') AS running
FROM workers ORDER BY id
"""

EXPIRED_WORKERS = f"""
SELECT id, generation FROM workers
WHERE lease_until < {NOW} AND reclaimed_at IS NULL AND id <> :survivor
    AND (stopped_at IS NULL OR EXISTS (SELECT 1 FROM jobs WHERE jobs.worker_id = workers.id
                                       AND jobs.state IN ('building', 'running')))
ORDER BY lease_until
"""

MARK_RECLAIMED = f"UPDATE workers SET reclaimed_at = {NOW}, reclaimed_by = :survivor WHERE id = :id"

# A lost worker's jobs (store/fleet.py `Fate`): each conditional on the state it was found in.
RECLAIM_REQUEUE = """
UPDATE jobs SET state = 'queued', worker_id = NULL, message = :message
WHERE id = :id AND state = 'building' AND launched_at IS NULL
RETURNING *
"""
RECLAIM_REGRADE = """
UPDATE jobs SET state = 'queued', worker_id = NULL, started_at = NULL, launched_at = NULL, message = :message
WHERE id = :id AND state IN ('building', 'running')
RETURNING *
"""
RECLAIM_LOST = f"""
UPDATE jobs SET state = 'failed', reason = 'worker_lost', message = :message, finished_at = {NOW}
WHERE id = :id AND state IN ('building', 'running')
RETURNING *
"""

MARK_LAUNCHING = """
UPDATE jobs SET launched_at = :launched_at
WHERE id = :id AND state = 'building'
RETURNING *
"""

ACTIVE = "SELECT * FROM jobs WHERE state IN ('building', 'running') AND worker_id = ? ORDER BY seq"

COUNTS = "SELECT state, count(*) FROM jobs WHERE state IN ('queued', 'building', 'running') GROUP BY state"

# LIST is assembled from these pieces: the filters present are AND-ed together.
# Every column but the output (stdout, stderr, build_output and its line times): a listing never reads it.
LIST_SELECT = (
    "SELECT seq, id, state, priority, created_at, started_at, finished_at, worker_id, reason, message, exit_code,"
    " stdout_truncated, stderr_truncated, resources, labels, spec, run, grade, origin, external_id, reported_at,"
    " callback FROM jobs"
)
LIST_STATE = "state = ?"
LIST_KIND = "coalesce(json_extract(spec, '$.kind'), 'job') = ?"  # specs stored before grading have no kind
LIST_LABEL = "json_extract(labels, ?) = ?"
LIST_BEFORE = "seq < ?"
LIST_ORDER = " ORDER BY seq DESC LIMIT ?"

OUTPUT_TIMES = "SELECT output_times FROM jobs WHERE id = ?"

# EVENTS_AFTER is assembled from these pieces: the filters present are AND-ed together. The kind and labels come
# from the job's row, so the trigger that writes an event stays one small INSERT on the hot path.
EVENTS_SELECT = """
SELECT events.*, json_extract(jobs.spec, '$.kind') AS kind, jobs.labels AS labels
FROM events LEFT JOIN jobs ON jobs.id = events.job_id
WHERE events.id > ?"""
EVENTS_JOB = "events.job_id = ?"
EVENTS_KIND = "json_extract(jobs.spec, '$.kind') = ?"
EVENTS_ORDER = " ORDER BY events.id LIMIT ?"

EVENTS_OLDEST = "SELECT min(id) FROM events"
EVENTS_NEWEST = "SELECT seq FROM sqlite_sequence WHERE name = 'events'"
PRUNE_EVENTS = """
DELETE FROM events WHERE id <= min((SELECT max(id) FROM events) - ?,
                                   coalesce((SELECT min(position) FROM cursors), (SELECT max(id) FROM events)))
"""

CURSOR = "SELECT position FROM cursors WHERE name = ?"
# A cursor moves only for who saw it where it stands; one that stands at 0 may not exist yet.
ADVANCE_CURSOR = "UPDATE cursors SET position = :after WHERE name = :name AND position = :before RETURNING position"
START_CURSOR = """
INSERT INTO cursors (name, position) VALUES (:name, :after)
ON CONFLICT (name) DO UPDATE SET position = excluded.position WHERE cursors.position = 0
RETURNING position
"""
