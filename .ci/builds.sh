#!/usr/bin/env bash
# Builds (or finds in the cache) what an entry point runs, all at once. Each build is its own script, which
# exits at once when its cache is complete, so a warm machine pays milliseconds here.
# Running them concurrently is safe: Go's module cache is safe for concurrent go commands (downloads are
# locked; go.dev/ref/mod#module-cache) and so is its build cache (k8s and helm share the default one,
# gateway and argocd use private ones); each script has a work dir of its own (k8s: $CACHE_ROOT/build,
# gateway: $DEST.tmp, argocd: a mktemp dir, helm: go install) and a lock against a second copy of itself.
# On a cold machine one build's module downloads overlap another's compiling.
#
# usage: .ci/builds.sh NAME...          build them; exit 1 (with the failed one's last log lines) if one fails
#        .ci/builds.sh --cold NAME...   print the names that are not cached, one a line; builds nothing
#   NAME  venv (.ci/ensure-venv.sh), k8s (sandbox/build-binaries.sh: etcd, kube-*, kubectl, kwok),
#         gateway (sandbox/build-gateway.sh), argocd (sandbox/build-argocd.sh), helm (.ci/build-helm.sh),
#         router (.ci/build-router.sh: the native traffic router, a Triton backend in C++),
#         prometheus (.ci/build-prometheus.sh), prometheus-operator (.ci/build-prometheus-operator.sh: the
#         Operator and its config reloader, for the sandbox's monitoring stack, sandbox/monitoring.py),
#         keda (.ci/build-keda.sh: KEDA's operator and metrics apiserver, for sandbox/keda.py)
# Environment:
#   BUILDS_QUIET=1    nothing on stderr but the outcome (make test runs the builds behind its first tests);
#                     otherwise the scripts' own progress lines (build-*: ...) are shown as they come
#   BUILDS_SERIAL=1   one after another (a machine short of memory; or to compare timings)
#   CI_REPORT_DIR     keep the logs there (build-NAME.log), and append `NAME<TAB>cached|built|failed<TAB>seconds`
#                     lines to its builds.tsv (.ci/run's table); without it the logs go to a temporary dir,
#                     kept only when a build fails
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

declare -A SCRIPT=(
  [venv]=.ci/ensure-venv.sh
  [k8s]=sandbox/build-binaries.sh
  [gateway]=sandbox/build-gateway.sh
  [argocd]=sandbox/build-argocd.sh
  [helm]=.ci/build-helm.sh
  [promtool]=.ci/build-promtool.sh
  [prometheus-crds]=.ci/fetch-prometheus-crds.sh
  [prometheus]=.ci/build-prometheus.sh
  [prometheus-operator]=.ci/build-prometheus-operator.sh
  [router]=.ci/build-router.sh
  [keda]=.ci/build-keda.sh
)
mode=build
case "${1:-}" in
  --cold) mode=cold; shift ;;
  --one) mode=one; shift ;;  # internal: one build, in a session of its own (see below)
esac
for name in "$@"; do
  [ -n "${SCRIPT[$name]+x}" ] || { echo "builds: unknown build '$name' (known: ${!SCRIPT[*]})" >&2; exit 2; }
done
if [ "$mode" = cold ]; then
  for name in "$@"; do
    bash "${SCRIPT[$name]}" --cached || echo "$name"
  done
  exit 0
fi
[ $# -gt 0 ] || exit 0

CACHE_ROOT="${TRITON_SANDBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/triton-operator-sandbox}"

now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }
seconds_since() { local us=$(( $(now_us) - $1 )); printf '%d.%d' $((us / 1000000)) $((us % 1000000 / 100000)); }

run_one() { # NAME: runs its script; writes "state seconds exit-status" to its .result file
  local name=$1 log="$BUILDS_LOG_DIR/build-$1.log" start state rc
  start=$(now_us)
  if bash "${SCRIPT[$name]}" --cached; then state=cached; else state=built; fi
  if [ "$state" = cached ] || [ "${BUILDS_QUIET:-0}" = 1 ]; then
    bash "${SCRIPT[$name]}" </dev/null >"$log" 2>&1
    rc=$?
  else
    echo "builds: building $name (log: $log)" >&2
    # The scripts' own lines say what is being built and how long it takes; Go's output stays in the log.
    bash "${SCRIPT[$name]}" </dev/null 2>&1 >/dev/null | tee "$log" \
      | { grep --line-buffered -E '^(build-[a-z]+|ensure-venv): ' >&2 || true; }
    rc=${PIPESTATUS[0]}
  fi
  [ "$rc" = 0 ] || state=failed
  echo "$state $(seconds_since "$start") $rc" >"$BUILDS_LOG_DIR/build-$name.result"
}
if [ "$mode" = one ]; then
  run_one "$1"
  exit 0
fi

if [ -n "${CI_REPORT_DIR:-}" ]; then
  BUILDS_LOG_DIR="$CI_REPORT_DIR"; keep_logs=1
else
  mkdir -p "$CACHE_ROOT"
  BUILDS_LOG_DIR=$(mktemp -d "$CACHE_ROOT/build-logs.XXXXXX"); keep_logs=0
fi
mkdir -p "$BUILDS_LOG_DIR"
export BUILDS_LOG_DIR
log_dir=$BUILDS_LOG_DIR

pids=()
# shellcheck disable=SC2317,SC2329  # invoked by the trap
stop() { # a signal (Ctrl-C here; TERM from make test's script): end every build, each a session of its own
  trap - INT TERM HUP
  local p
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
  [ "$keep_logs" = 1 ] || rm -rf "$log_dir"
  exit 130
}
trap stop INT TERM HUP
if [ "${BUILDS_SERIAL:-0}" = 1 ]; then
  for name in "$@"; do run_one "$name"; done
else
  # setsid: each build and its go processes in a session (so a process group) of their own, which `stop`
  # ends as a whole (a background job of a script would ignore SIGINT). setsid does not fork here: the
  # job is no group leader, so $! is the group's id.
  for name in "$@"; do
    setsid "$PWD/.ci/builds.sh" --one "$name" &
    pids+=("$!")
  done
  for p in "${pids[@]}"; do wait "$p"; done
fi

failed=0
summary=()
for name in "$@"; do
  read -r state secs rc <"$log_dir/build-$name.result" 2>/dev/null || { state=failed; secs=0; rc="?"; }
  rm -f "$log_dir/build-$name.result"
  [ -z "${CI_REPORT_DIR:-}" ] || printf '%s\t%s\t%s\n' "$name" "$state" "$secs" >>"$CI_REPORT_DIR/builds.tsv"
  case "$state" in
    cached) summary+=("$name cached") ;;
    built) summary+=("$name built in ${secs}s") ;;
    *)
      failed=1
      echo "builds: $name FAILED after ${secs}s (exit $rc); the last lines of $log_dir/build-$name.log:" >&2
      tail -n 15 "$log_dir/build-$name.log" 2>/dev/null | sed 's/^/  /' >&2 ;;
  esac
done
if [ "$failed" = 1 ]; then
  exit 1
fi
# Quiet when everything was cached; one line when something was built.
case " ${summary[*]} " in
  *" built in "*) printf -v joined '%s; ' "${summary[@]}"; echo "builds: ${joined%; }" >&2 ;;
esac
[ "$keep_logs" = 1 ] || rm -rf "$log_dir"
exit 0
