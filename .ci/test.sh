#!/usr/bin/env bash
# `make test`: every test, with the builds overlapped:
#   1. the cached builds start in the background, at the lowest CPU priority (nice 19: the tests keep the
#      cores they need), while the unit and integration tests that need no cluster and no build run;
#   2. then the builds are waited for (a failed one stops here, with its log's last lines);
#   3. then everything else (e2e, chaos, and the integration tests that use the built binaries), on ONE
#      sandbox started once: first the tests that may share it, E2E_WORKERS (3) pytest-xdist workers at once,
#      a test module to a worker (they wait far more than they compute; at most E2E_SANDBOX_LANES (2) of them
#      on the sandbox's modules: its GPUs; .ci/pytest_phases.py); then those marked `alone`, one at a time.
# The pytest runs split the tests exactly (.ci/pytest_phases.py): none dropped, none run twice.
# Exit status: pytest's; 5 (no tests) only when no run had a test to run.
#
# usage: .ci/test.sh PYTHON "BUILD..." [PYTEST_ARG...]
# With CI_REPORT_DIR set (.ci/run), each step's time goes to its steps.tsv and each run's JUnit XML and
# timeline (each test's start and end, for the table's wall-clock column) there.
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
# The e2e runs keep the sandbox between them (SANDBOX_KEEP=1 for all but the last); the last run's session
# stops it. Until that run has ended, an exit stops it here, unless the caller asked to keep it.
user_keep=${SANDBOX_KEEP:-}
sandbox_held=""
# shellcheck disable=SC2317,SC2329  # invoked by the trap
end_run() { # a test run that ends early (Ctrl-C, a failure with -x) takes its builds and sandbox with it
  if [ -n "$builds_pid" ] && kill -0 "$builds_pid" 2>/dev/null; then
    kill -TERM "$builds_pid" 2>/dev/null
    wait "$builds_pid" 2>/dev/null
  fi
  rm -f "$builds_out"
  if [ -n "$sandbox_held" ] && [ "$user_keep" != 1 ]; then
    "$PY" -m sandbox down --name "${E2E_SANDBOX:-test}" >&2 || say "could not stop the sandbox"
  fi
}
trap end_run EXIT

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
timeline() { [ -z "$report" ] || echo "--timeline=$report/timeline-$1.tsv"; }

say "1/3: the unit and integration tests that need no cluster and no build"
t=$(now_us)
# shellcheck disable=SC2046  # junit prints one argument or none
"$PY" -m pytest tests sandbox/tests -p pytest_phases --phase=early $(junit early) $(timeline early) "$@"
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

workers=${E2E_WORKERS:-3}
lanes=${E2E_SANDBOX_LANES:-2}
for n in "$workers" "$lanes"; do
  case "$n" in ''|*[!0-9]*|0) say "E2E_WORKERS and E2E_SANDBOX_LANES must be 1 or more, not '$n'"; exit 2 ;; esac
done
xdist=()
# --sandbox-lanes: at most that many workers on the sandbox's modules, the others on the rest (the bench's
# smoke run on its own sandbox, the integration tests). --no-loadscope-reorder: modules go out in
# collection order (xdist would send the one-test modules, like that smoke run, last: a long tail).
[ "$workers" = 1 ] || xdist=(-n "$workers" --dist loadfile --no-loadscope-reorder --sandbox-lanes="$lanes")
say "2/3: e2e and the rest that may share the sandbox, $workers test modules at once"
t=$(now_us)
sandbox_held=1
# shellcheck disable=SC2046
SANDBOX_KEEP=1 "$PY" -m pytest tests sandbox/tests -p pytest_phases --phase=together "${xdist[@]}" \
  $(junit together) $(timeline together) "$@"
together=$?
step_done "tests: e2e and the rest, $workers at once on one sandbox" "$t" "$together"
case "$together" in
  0|1|5) ;;
  *) say "pytest stopped (exit $together): not running the rest"; exit "$together" ;;
esac
if [ "$together" = 1 ] && stops_at_failure "$@"; then
  say "a test failed and the arguments say stop at the first failure: not running the rest"
  exit 1
fi

say "3/3: the tests marked alone (chaos, operator restarts, timing bounds), one at a time on the sandbox"
t=$(now_us)
# shellcheck disable=SC2046
SANDBOX_KEEP=$user_keep "$PY" -m pytest tests sandbox/tests -p pytest_phases --phase=alone \
  $(junit alone) $(timeline alone) "$@"
alone=$?
# Its session stopped the sandbox, unless it had no test to run (or the caller keeps it).
[ "$alone" = 5 ] || sandbox_held=""
step_done "tests: alone on the sandbox, one at a time" "$t" "$alone"
say "done in $(seconds_since "$start")s (exits: early $early, together $together, alone $alone)"

if [ "$early" = 5 ] && [ "$together" = 5 ] && [ "$alone" = 5 ]; then exit 5; fi
for rc in "$early" "$together" "$alone"; do
  case "$rc" in 0|5) ;; *) exit "$rc" ;; esac
done
exit 0
