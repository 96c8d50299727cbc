#!/usr/bin/env bash
# Install everything, start a real Kafka and PostgreSQL (unless given or Docker can), run ruff, mypy, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check 'uv==0.13.9'
python3 -m uv sync --frozen --extra test --quiet

# Tools the tests drive for real: promtool/Prometheus (observability) and Chromium (console).
bash deploy/prometheus/install.sh >&2
bash deploy/chromium/install.sh >&2
bash deploy/poppler/install.sh >&2  # pdftoppm: the form and report PDFs rendered for docs/

docker_answers() { command -v docker >/dev/null 2>&1 && timeout 5 docker info >/dev/null 2>&1; }

if [ -z "${REMSGUARD_KAFKA_BOOTSTRAP:-}" ] && ! docker_answers; then
  REMSGUARD_KAFKA_BOOTSTRAP="$(bash deploy/kafka/kafka.sh start | tail -n 1)"
  export REMSGUARD_KAFKA_BOOTSTRAP
fi
if [ -z "${REMSGUARD_DATABASE_URL:-}" ] && ! docker_answers; then
  REMSGUARD_DATABASE_URL="$(bash deploy/postgres/postgres.sh start | tail -n 1)"
  export REMSGUARD_DATABASE_URL
fi

echo "== ruff"; python3 -m uv run --frozen ruff check services tests bench
echo "== mypy"; python3 -m uv run --frozen mypy
echo "== pytest"; python3 -m uv run --frozen pytest "$@"
