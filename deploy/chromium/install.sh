#!/usr/bin/env bash
# Debian's chromium for the staff-console browser test (Playwright drives it through its
# executable path; Playwright's own browser download is not used). Idempotent.
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
    exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium
/usr/bin/chromium --version
