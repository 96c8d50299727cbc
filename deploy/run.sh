#!/usr/bin/env bash
# The README's main command: install what is needed, then run remsguard in embedded mode (one
# process, no Kafka or PostgreSQL) with the clinic simulator feeding it, and print its URL.
#
#   bash deploy/run.sh                      # data in .local/remsguard, http://127.0.0.1:8400
#   bash deploy/run.sh --port 8500 --speed 60 --data-dir /tmp/rg
#
# Ctrl-C stops it cleanly; run it again and it carries on from what is on disk. The admin and
# device tokens are in DATA_DIR/first-run-tokens.txt (mode 0600).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check 'uv==0.13.9'
# --inexact: keep packages a developer installed (e.g. the test extra); add what is missing.
python3 -m uv sync --frozen --inexact --quiet

has_data_dir=false
for arg in "$@"; do
  case "$arg" in --data-dir|--data-dir=*) has_data_dir=true ;; esac
done
args=(--simulate)
$has_data_dir || args+=(--data-dir "${REMSGUARD_DATA_DIR:-.local/remsguard}")
exec python3 -m uv run --frozen --no-sync remsguard up "${args[@]}" "$@"
