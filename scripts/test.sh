#!/usr/bin/env bash
# Sets up everything the tests need (see setup.sh), then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export VK_ICD_FILENAMES=${VK_ICD_FILENAMES:-/usr/lib/chromium/vk_swiftshader_icd.json}
exec "${PYTHON:-python3}" -m pytest tests -q -p no:cacheprovider "$@"
