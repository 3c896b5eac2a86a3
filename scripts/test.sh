#!/usr/bin/env bash
# Quick start, part two: set everything up, then run the whole suite: lint, types, and the unit,
# integration and acceptance tests against the real Docker engine. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --dev
scripts/test-images.sh
scripts/profile-images.sh  # every language profile: the tests grade in each
scripts/test-registry.sh
scripts/test-redis.sh  # a real Redis for the queue-pull dialect's events (tests/redis_bus.py)
scripts/test-postgres.sh  # a real PostgreSQL for the fleet store (tests/postgres_db.py)
echo "== ruff"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "== mypy --strict"
.venv/bin/mypy src
echo "== pytest"
.venv/bin/pytest "$@"
