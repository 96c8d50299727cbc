#!/usr/bin/env bash
# Install Prometheus and promtool (Debian's `prometheus` package) if they are not on PATH.
# Idempotent: does nothing when both are present. Needs root (or sudo) and the Debian mirrors.
# Used by deploy/check.sh and, when missing, by tests/observability (promtool tests, the proof).
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

export DEBIAN_FRONTEND=noninteractive
# The package's own service is not wanted (tests start Prometheus themselves): no recommends
# (node exporter), and no service start where policy-rc.d is honoured.
if ! apt-cache show prometheus >/dev/null 2>&1; then
  $SUDO apt-get update -qq
fi
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null

command -v prometheus >/dev/null && command -v promtool >/dev/null
prometheus --version 2>&1 | head -n 1
