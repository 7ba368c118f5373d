#!/bin/sh
# First start of the database only: the role stagehold runs as. `stagehold db init` (the migrate
# service) then grants it exactly what it needs; it owns nothing, so it cannot rewrite history.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v pw="$STAGEHOLD_DB_PASSWORD" <<'SQL'
CREATE ROLE stagehold LOGIN PASSWORD :'pw';
SQL
