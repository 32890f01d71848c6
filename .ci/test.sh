#!/usr/bin/env bash
# `make test`: every test, with the builds overlapped:
#   1. the cached builds start in the background, at the lowest CPU priority (nice 19: the tests keep the
#      cores they need), while the unit and integration tests that need no cluster and no build run;
#   2. then the builds are waited for (a failed one stops here, with its log's last lines);
#   3. then everything else: e2e, chaos, and the integration tests that use the built binaries.
# The two pytest runs split the tests exactly in two (.ci/pytest_phases.py): none dropped, none run twice.
# Exit status: pytest's; 5 (no tests) only when neither run had a test to run.
#
# usage: .ci/test.sh PYTHON "BUILD..." [PYTEST_ARG...]
# With CI_REPORT_DIR set (.ci/run), each step's time goes to its steps.tsv and each run's JUnit XML there.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
PY=$1
BUILDS=$2
shift 2
report=${CI_REPORT_DIR:-}

now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }
seconds_since() { local us=$(( $(now_us) - $1 )); printf '%d.%d' $((us / 1000000)) $((us % 1000000 / 100000)); }
step_done() { # NAME START RESULT
  [ -z "$report" ] || printf '%s\t%s\t%s\n' "$1" "$3" "$(seconds_since "$2")" >>"$report/steps.tsv"
}
say() { echo "==> make test: $*" >&2; }

# -x, --exitfirst or --maxfail among the arguments: a failure in the first run ends the whole test run,
# as it would in one pytest run. (A cluster like -sx counts; -r's and -k's values do not.)
stops_at_failure() {
  local a
  for a in "$@"; do
    case "$a" in
      --exitfirst|--maxfail|--maxfail=*) return 0 ;;
      --*) ;;
      -[!-]*) [[ "$a" =~ ^-[^rkmpocWn]*x ]] && return 0 ;;
    esac
  done
  return 1
}

builds_pid=""
builds_out=$(mktemp "${TMPDIR:-/tmp}/make-test-builds.XXXXXX")
# shellcheck disable=SC2317,SC2329  # invoked by the trap
end_builds() { # a test run that ends early (Ctrl-C, a failure with -x) takes its builds with it
  if [ -n "$builds_pid" ] && kill -0 "$builds_pid" 2>/dev/null; then
    kill -TERM "$builds_pid" 2>/dev/null
    wait "$builds_pid" 2>/dev/null
  fi
  rm -f "$builds_out"
}
trap end_builds EXIT

start=$(now_us)
if [ -n "$BUILDS" ]; then
  say "building (or finding cached) in the background: $BUILDS"
  # What the builds say (what was built; a failure and its log's last lines) is shown once they are
  # waited for, not in the middle of the first run's output.
  # shellcheck disable=SC2086  # a list of names
  BUILDS_QUIET=1 nice -n 19 .ci/builds.sh $BUILDS 2>"$builds_out" &
  builds_pid=$!
fi

export PYTHONPATH="$PWD/.ci${PYTHONPATH:+:$PYTHONPATH}"
# The tests themselves run make targets (the sandbox's, the demo's): their builds are not this run's
# builds, so they must not add rows to its table.
unset CI_REPORT_DIR
junit() { [ -z "$report" ] || echo "--junitxml=$report/junit-$1.xml"; }

say "1/2: the unit and integration tests that need no cluster and no build"
t=$(now_us)
# shellcheck disable=SC2046  # junit prints one argument or none
"$PY" -m pytest tests sandbox/tests -p pytest_phases --phase=early $(junit early) "$@"
early=$?
step_done "tests: unit + integration (alongside the builds)" "$t" "$early"

case "$early" in
  0|1|5) ;;
  *) say "pytest stopped (exit $early): not running the rest"; exit "$early" ;;
esac
if [ "$early" = 1 ] && stops_at_failure "$@"; then
  say "a test failed and the arguments say stop at the first failure: not running the rest"
  exit 1
fi

if [ -n "$builds_pid" ]; then
  t=$(now_us)
  say "waiting for the builds"
  wait "$builds_pid"
  built=$?
  builds_pid=""
  cat "$builds_out" >&2
  step_done "waiting for the builds" "$t" "$built"
  if [ "$built" != 0 ]; then
    say "a build failed (above: which, and its log's last lines); the tests that need it cannot run"
    exit 1
  fi
fi

say "2/2: everything else (e2e, chaos, the integration tests on the built binaries)"
t=$(now_us)
# shellcheck disable=SC2046
"$PY" -m pytest tests sandbox/tests -p pytest_phases --phase=late $(junit late) "$@"
late=$?
step_done "tests: e2e, chaos and the rest" "$t" "$late"
say "done in $(seconds_since "$start")s (first run: exit $early, second run: exit $late)"

if [ "$early" = 5 ] && [ "$late" = 5 ]; then exit 5; fi
for rc in "$early" "$late"; do
  case "$rc" in 0|5) ;; *) exit "$rc" ;; esac
done
exit 0
