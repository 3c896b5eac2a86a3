#!/usr/bin/env bash
# Quick start, part one: set everything up, then run the worker on 127.0.0.1:8080 with its embedded
# defaults (SQLite under ~/.local/share/hatchway, the local Docker engine). Extra arguments go to
# `hatchway serve`, e.g. --config worker.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/test-images.sh busybox      # what the README's first job runs in
scripts/profile-images.sh python c  # what the README's grading example needs; `hatchway profiles build` for more
exec .venv/bin/hatchway serve "$@"
