#!/usr/bin/env bash
# Builds what ships (dist/cosd/): see scripts/build.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
node_modules/.bin/node scripts/build.ts
