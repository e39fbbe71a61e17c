#!/usr/bin/env bash
# Runs the project's test command in the VM, as root, with the virtualenv provision.sh made.
# Usage: run-tests.sh <project dir> [pytest args...]
set -euo pipefail
src=${1:?usage: run-tests.sh <project dir> [pytest args...]}
shift
cd "$src"
bash ci/setup
GRAPHDRIVER_VENV=/opt/graphdriver-venv exec ci/test "$@"
