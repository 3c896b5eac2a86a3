"""Every SQL statement of the SQLite store, by name."""

SCHEMA_VERSION = 5

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
    callback_due_at  REAL
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (priority DESC, seq) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_outbox ON jobs (origin, seq) WHERE origin IS NOT NULL AND reported_at IS NULL;
CREATE INDEX IF NOT EXISTS jobs_callbacks ON jobs (callback_due_at) WHERE callback_due_at IS NOT NULL;
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
}

INSERT = """
INSERT INTO jobs (id, state, priority, created_at, labels, spec, run, origin, external_id, reason, message,
    finished_at, callback, callback_due_at)
VALUES (:id, :state, :priority, :created_at, :labels, :spec, :run, :origin, :external_id, :reason, :message,
    :finished_at, :callback, :callback_due_at)
ON CONFLICT (id) DO NOTHING
RETURNING *
"""

GET = "SELECT * FROM jobs WHERE id = ?"

CLAIM_NEXT = """
UPDATE jobs SET state = 'building', worker_id = :worker_id, message = NULL
WHERE seq = (SELECT seq FROM jobs WHERE state = 'queued' ORDER BY priority DESC, seq LIMIT 1)
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
    build_output = :build_output, grade = :grade
WHERE id = :id AND state IN ('building', 'running')
RETURNING *
"""

CANCEL = """
UPDATE jobs SET state = 'killed', reason = 'cancelled', finished_at = :finished_at,
    message = 'killed before it started'
WHERE id = :id AND state = 'queued'
RETURNING *
"""

REQUEUE_LOST = """
UPDATE jobs SET state = 'queued', worker_id = NULL, started_at = NULL
WHERE id = :id AND state IN ('building', 'running')
RETURNING *
"""

REQUEUE_UNSTARTED = """
UPDATE jobs SET state = 'queued', worker_id = NULL, message = :message
WHERE id = :id AND state = 'building'
RETURNING *
"""

UNREPORTED = """
SELECT * FROM jobs WHERE origin = ? AND reported_at IS NULL AND state IN ('succeeded', 'failed', 'killed')
ORDER BY seq
"""

MARK_REPORTED = """
UPDATE jobs SET reported_at = :reported_at
WHERE id = :id AND reported_at IS NULL AND state IN ('succeeded', 'failed', 'killed')
RETURNING *
"""

DUE_CALLBACKS = """
SELECT * FROM jobs WHERE callback_due_at <= :now AND state IN ('succeeded', 'failed', 'killed')
ORDER BY callback_due_at, seq LIMIT :limit
"""

NEXT_CALLBACK_AT = """
SELECT min(callback_due_at) FROM jobs WHERE callback_due_at > :after AND state IN ('succeeded', 'failed', 'killed')
"""

RECORD_CALLBACK = """
UPDATE jobs SET callback = :callback, callback_due_at = :callback_due_at
WHERE id = :id AND callback_due_at IS NOT NULL
RETURNING *
"""

ACTIVE = "SELECT * FROM jobs WHERE state IN ('building', 'running') AND worker_id = ? ORDER BY seq"

COUNTS = "SELECT state, count(*) FROM jobs WHERE state IN ('queued', 'building', 'running') GROUP BY state"

# LIST is assembled from these pieces: the filters present are AND-ed together.
LIST_SELECT = "SELECT * FROM jobs"
LIST_STATE = "state = ?"
LIST_KIND = "coalesce(json_extract(spec, '$.kind'), 'job') = ?"  # specs stored before grading have no kind
LIST_LABEL = "json_extract(labels, ?) = ?"
LIST_BEFORE = "seq < ?"
LIST_ORDER = " ORDER BY seq DESC LIMIT ?"
