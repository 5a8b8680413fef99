#!/usr/bin/env bash
# Starts the embedded Airflow (`airflow standalone`: SQLite, LocalExecutor, API server + UI,
# scheduler, dag-processor, triggerer) for UIG on this machine, sized for a small laptop.
#
#   bash infra/airflow-standalone.sh            # UI on http://127.0.0.1:8080
#   UIG_DATA_ROOT=/srv/uig UIG_AIRFLOW_PORT=8081 bash infra/airflow-standalone.sh
#
# Everything lives under the data root: AIRFLOW_HOME=<data root>/airflow (metadata DB, logs,
# generated admin password). Ctrl-C stops it and all its parts.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

[[ -x "$ROOT/.venv/bin/airflow" ]] || { echo "no .venv/bin/airflow: run 'bash infra/bootstrap.sh' first" >&2; exit 1; }

DATA_ROOT="${UIG_DATA_ROOT:-$ROOT/data}"
mkdir -p "$DATA_ROOT"
DATA_ROOT="$(cd "$DATA_ROOT" && pwd)"  # absolute: task processes do not share our working directory
export UIG_DATA_ROOT="$DATA_ROOT"      # tasks whose data_root param is empty use it

# standalone starts its parts by the bare name `airflow`: without the venv on PATH they all die
# while the parent keeps running.
export PATH="$ROOT/.venv/bin:$PATH"
export AIRFLOW_HOME="$DATA_ROOT/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False              # default shows ~115 example DAGs
export AIRFLOW__CORE__PARALLELISM="${UIG_AIRFLOW_PARALLELISM:-2}"  # default 32 worker processes
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__API__HOST=127.0.0.1                    # 0.0.0.0 triggers the "production" warning
export AIRFLOW__API__PORT="${UIG_AIRFLOW_PORT:-8080}"
export SPARK_LOCAL_IP=127.0.0.1                        # Spark tasks: no loopback-hostname warning
mkdir -p "$AIRFLOW_HOME"
# The generated default JWT key is 24 bytes (PyJWT warns: < 64 for SHA512); keep a 64-byte one,
# created once per AIRFLOW_HOME, readable only by its owner.
if [[ -z "${AIRFLOW__API_AUTH__JWT_SECRET:-}" ]]; then
  SECRET_FILE="$AIRFLOW_HOME/.jwt_secret"
  [[ -s "$SECRET_FILE" ]] || (umask 077 && "$ROOT/.venv/bin/python" -c 'import secrets; print(secrets.token_hex(32))' >"$SECRET_FILE")
  AIRFLOW__API_AUTH__JWT_SECRET="$(cat "$SECRET_FILE")"
  export AIRFLOW__API_AUTH__JWT_SECRET
fi

PASSWORDS="$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
cat >&2 <<EOF
[uig] Airflow standalone
[uig]   UI / API:        http://127.0.0.1:$AIRFLOW__API__PORT   (health: /api/v2/monitor/health)
[uig]   AIRFLOW_HOME:    $AIRFLOW_HOME
[uig]   DAGs folder:     $AIRFLOW__CORE__DAGS_FOLDER
[uig]   data root:       $UIG_DATA_ROOT
[uig]   admin password:  printed once below at first start, and kept in
[uig]                    $PASSWORDS   (user "admin")
EOF

# Model tasks (encode, train, evaluate, refresh) run in the `gpu` pool: one slot here, so two
# trainings never share a machine; a deployment sizes it to its GPU workers. The other tasks that
# write Delta tables (ingest, aggregate) share `uig_writer`, one slot everywhere: one writer at a
# time (dags/pools.py; the writer lock in uig_tasks/locking.py serialises across the two pools).
airflow db migrate >/dev/null
airflow pools set gpu "${UIG_GPU_POOL_SLOTS:-1}" "UIG model tasks (torch; GPU when one exists)" >/dev/null
airflow pools set uig_writer 1 "UIG tasks that write Delta tables: one at a time" >/dev/null

exec airflow standalone
