#!/usr/bin/env bash
# Debian's poppler-utils: `pdftoppm` renders the Patient Monitoring Form and the compliance
# report PDFs to PNG for docs/ (tests/api/test_form_pdf.py, test_compliance_report.py).
# Idempotent.
set -euo pipefail
if command -v pdftoppm >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends poppler-utils
pdftoppm -v 2>&1 | head -1
