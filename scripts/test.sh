#!/usr/bin/env bash
# `make test`'s pytest run: the Swarm test beside the rest of the suite.
#
# The Swarm test (tests/swarm, root only) spends most of its ten minutes waiting on Swarm:
# health probes, update delays and monitor windows, tasks converging. It runs in a second
# pytest process started first, while this one runs everything else; its output follows the
# suite's, and the run fails if either does. With arguments, one plain pytest run of them
# (`make test ARGS="tests/unit -x"`).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTEST=.venv/bin/pytest
if [ "$#" -gt 0 ]; then
  exec "$PYTEST" "$@"
fi

swarm_log=$(mktemp /tmp/cse-swarm-test.XXXXXX)
# -p no:cacheprovider: the two runs do not share .pytest_cache
"$PYTEST" tests/swarm -p no:cacheprovider >"$swarm_log" 2>&1 &
swarm_pid=$!
trap 'kill "$swarm_pid" 2>/dev/null || true' INT TERM

suite_rc=0
"$PYTEST" --ignore=tests/swarm || suite_rc=$?

echo "---- waiting for the Swarm test (tests/swarm), started beside the suite ----"
swarm_rc=0
wait "$swarm_pid" || swarm_rc=$?
trap - INT TERM
cat "$swarm_log"
rm -f "$swarm_log"
# pytest exits 5 when it collected nothing to run (a machine without the Swarm test's tools)
[ "$swarm_rc" -eq 5 ] && swarm_rc=0
echo "suite exit $suite_rc, Swarm test exit $swarm_rc"
[ "$suite_rc" -eq 0 ] && [ "$swarm_rc" -eq 0 ]
