#!/usr/bin/env bash
# Run the test suite. With DATABASE_URL / REDIS_URL set (as CI does) the tests
# use that PostgreSQL and Redis; without them, a SQLite file and the ORM broker.
set -euo pipefail
export ORCHESTRATOR_DEV=${ORCHESTRATOR_DEV:-1}
cd "$(dirname "$0")/.."
echo "database: ${DATABASE_URL:-SQLite file (set DATABASE_URL for PostgreSQL)}"
echo "broker:   ${REDIS_URL:-django-q2 ORM broker (set REDIS_URL for Redis)}"
# The dashboard's browser tests drive Debian's chromium through its driver
# (never a browser downloaded by the test tool).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt-get update -qq && apt-get install -y -qq chromium chromium-driver
fi
exec .venv/bin/python -m pytest "$@"
