"""The entry points' first step: .ci/prereqs.sh names each missing program in one line with the command
that installs it, or installs it (one apt-get update at most); .ci/builds.sh says what is cold without
building; .ci/pytest_phases.py splits `make test` in two with no test lost or run twice; .ci/report.py
prints the table. Each script runs on a PATH of stubs, so nothing here depends on (or changes) what this
machine has installed, and nothing is built."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PREREQS = ROOT / ".ci" / "prereqs.sh"
BUILDS = ROOT / ".ci" / "builds.sh"
# What the scripts themselves run (coreutils and friends): the real ones, linked into the stub PATH.
SCRIPT_TOOLS = (
    "bash", "env", "dirname", "sort", "sed", "tail", "mktemp", "mkdir", "rm", "id", "cat", "cut", "sha256sum",
    "setsid", "grep", "tee", "touch", "chmod",
)  # fmt: skip
SANDBOX = ("openssl", "ip", "nsenter", "unshare", "flock", "nft")


def stub_path(tmp_path: Path, programs: tuple[str, ...], python: str | None = sys.executable) -> Path:
    """A bin dir with the scripts' tools, `python3` (the given interpreter) and a stub for each program."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in SCRIPT_TOOLS:
        real = shutil.which(tool)
        assert real, f"{tool} is needed to run the scripts"
        (bin_dir / tool).symlink_to(real)
    if python:
        (bin_dir / "python3").symlink_to(python)
    for program in programs:
        stub = bin_dir / program
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    return bin_dir


def run(
    script: Path, *args: str, bin_dir: Path, tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    environ = {
        "PATH": str(bin_dir),
        "HOME": str(tmp_path / "home"),
        "TRITON_SANDBOX_CACHE": str(tmp_path / "cache"),  # empty: every build is cold
        "PREREQS_INSTALL": "0",
        "TMPDIR": str(tmp_path),
        **env,
    }
    return subprocess.run(
        [str(bin_dir / "bash"), str(script), *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the sandbox's entry points check for root: run as root to test the full list")


def test_a_machine_with_everything_passes_silently(tmp_path: Path) -> None:
    needs_root()
    bin_dir = stub_path(tmp_path, (*SANDBOX, "git", "redis-server", "curl"))
    done = run(
        PREREQS, "--for", "make test", "root", "python", "sandbox", "git", "redis-server", "curl",
        bin_dir=bin_dir, tmp_path=tmp_path,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")


def test_each_missing_program_is_one_line_naming_it_and_its_package(tmp_path: Path) -> None:
    needs_root()
    bin_dir = stub_path(tmp_path, ("openssl", "ip", "nsenter", "unshare", "flock", "git"))
    done = run(
        PREREQS, "--for", "make test", "root", "python", "sandbox", "git", "redis-server",
        bin_dir=bin_dir, tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "make test needs nft (kube-proxy's nftables mode): apt-get install nftables",
        "make test needs redis-server (Argo CD's cache, for the Argo CD tests): apt-get install redis-server",
    ]


def test_an_old_python_is_named_with_what_to_do(tmp_path: Path) -> None:
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\necho 3.9 /usr/bin/python3.9\n")
    old.chmod(0o755)
    bin_dir = stub_path(tmp_path, (), python=str(old))
    done = run(PREREQS, "--for", "make lint", "python", bin_dir=bin_dir, tmp_path=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("make lint needs Python >= 3.11, python3 is 3.9: ")
    assert len(done.stderr.splitlines()) == 1


def test_go_is_needed_only_while_a_build_is_cold(tmp_path: Path) -> None:
    bin_dir = stub_path(tmp_path, ())  # no go
    cold = run(PREREQS, "--for", "make demo", "--builds", "k8s helm", bin_dir=bin_dir, tmp_path=tmp_path)
    assert cold.returncode == 1
    assert cold.stderr.splitlines() == [
        "make demo needs go >= 1.26 (to build: k8s helm): install it from https://go.dev/dl/ "
        "(Debian's golang package is too old)"
    ]
    helm = tmp_path / "cache" / "helm-v3.22.0" / "helm"  # a warm cache: helm is there
    helm.parent.mkdir(parents=True)
    helm.write_text("")
    helm.chmod(0o755)
    warm = run(PREREQS, "--for", "make demo", "--builds", "helm", bin_dir=bin_dir, tmp_path=tmp_path)
    assert (warm.returncode, warm.stderr) == (0, "")


def test_a_shared_library_is_found_by_the_linker_cache_or_named_with_its_package(tmp_path: Path) -> None:
    bin_dir = stub_path(tmp_path, ())
    (bin_dir / "awk").symlink_to(shutil.which("awk") or "/usr/bin/awk")
    listed = tmp_path / "ldconfig-output"
    ldconfig = bin_dir / "ldconfig"
    ldconfig.write_text(f"#!/bin/sh\ncat {listed}\n")
    ldconfig.chmod(0o755)
    # libb64.so.0 is another library: only the exact name counts.
    listed.write_text("3 libs found in cache\n\tlibb64.so.0 (libc6,x86-64) => /lib/libb64.so.0\n")
    missing = run(PREREQS, "--for", "make bench", "libb64.so.0d", bin_dir=bin_dir, tmp_path=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        "make bench needs libb64.so.0d (perf_analyzer, make bench's router part): apt-get install libb64-0d"
    ]
    listed.write_text(
        listed.read_text() + "\tlibb64.so.0d (libc6,x86-64) => /lib/x86_64-linux-gnu/libb64.so.0d\n"
    )
    found = run(PREREQS, "--for", "make bench", "libb64.so.0d", bin_dir=bin_dir, tmp_path=tmp_path)
    assert (found.returncode, found.stderr) == (0, "")


def test_the_native_router_needs_a_cpp_compiler_not_go_while_it_is_cold(tmp_path: Path) -> None:
    bin_dir = stub_path(tmp_path, ("cargo",))  # no g++, no go
    for tool in ("head", "cmp"):
        (bin_dir / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    cold = run(PREREQS, "--for", "make bench", "--builds", "router", bin_dir=bin_dir, tmp_path=tmp_path)
    assert cold.returncode == 1
    assert cold.stderr.splitlines() == [
        "make bench needs g++ (to build the native traffic router): apt-get install g++"
    ]


def test_as_root_with_apt_get_it_installs_with_one_update_at_most(tmp_path: Path) -> None:
    needs_root()
    bin_dir = stub_path(tmp_path, ("openssl", "ip", "nsenter", "unshare", "flock"))
    calls = tmp_path / "apt-calls"
    # A fresh machine's apt-get: no package lists until `update`; then `install` provides nft.
    fake_apt = bin_dir / "apt-get"
    fake_apt.write_text(
        textwrap.dedent(f"""\
        #!/bin/sh
        echo "$*" >> {calls}
        case "$1" in
          update) touch {tmp_path}/lists ;;
          install) [ -e {tmp_path}/lists ] || exit 100
                   printf '#!/bin/sh\\nexit 0\\n' > {bin_dir}/nft; chmod +x {bin_dir}/nft ;;
        esac
        """)
    )
    fake_apt.chmod(0o755)
    done = run(
        PREREQS, "--for", "make sandbox-up", "root", "sandbox",
        bin_dir=bin_dir, tmp_path=tmp_path, PREREQS_INSTALL="1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == "prereqs: installing nftables (apt-get) for make sandbox-up\n"
    assert calls.read_text().splitlines() == [
        "install -y -q --no-install-recommends nftables",
        "update -q",
        "install -y -q --no-install-recommends nftables",
    ]
    calls.unlink()
    again = run(PREREQS, "root", "sandbox", bin_dir=bin_dir, tmp_path=tmp_path, PREREQS_INSTALL="1")
    assert (again.returncode, again.stderr, calls.exists()) == (0, "", False)


def test_builds_cold_lists_what_a_run_would_build_and_builds_nothing(tmp_path: Path) -> None:
    bin_dir = stub_path(tmp_path, ("flock",))
    done = run(BUILDS, "--cold", "k8s", "gateway", "argocd", "helm", bin_dir=bin_dir, tmp_path=tmp_path)
    assert (done.returncode, done.stdout.split(), done.stderr) == (
        0,
        ["k8s", "gateway", "argocd", "helm"],
        "",
    )
    assert not (tmp_path / "cache").exists()
    unknown = run(BUILDS, "--cold", "kubernetes", bin_dir=bin_dir, tmp_path=tmp_path)
    assert unknown.returncode == 2


def test_a_failed_build_is_named_with_its_log_and_the_others_finish(tmp_path: Path) -> None:
    bin_dir = stub_path(tmp_path, ("flock",))  # no go: the k8s build stops at its first check
    helm = tmp_path / "cache" / "helm-v3.22.0" / "helm"
    helm.parent.mkdir(parents=True)
    helm.write_text("")
    helm.chmod(0o755)
    report = tmp_path / "report"
    done = run(BUILDS, "k8s", "helm", bin_dir=bin_dir, tmp_path=tmp_path, CI_REPORT_DIR=str(report))
    assert done.returncode == 1
    log = report / "build-k8s.log"
    lines = done.stderr.splitlines()
    assert lines[0] == f"builds: building k8s (log: {log})"
    assert re.fullmatch(rf"builds: k8s FAILED after [0-9.]+s \(exit 1\); the last lines of {log}:", lines[-2])
    assert "build-binaries: Go is not installed" in done.stderr
    states = [line.split("\t")[:2] for line in (report / "builds.tsv").read_text().splitlines()]
    assert states == [["k8s", "failed"], ["helm", "cached"]]


def write_tree(root: Path) -> None:
    """A small tests/ tree: markers by folder, as the root conftest.py sets them."""
    (root / "tests").mkdir()
    shutil.copy(ROOT / "conftest.py", root / "conftest.py")
    files = {
        "unit/test_pure.py": "def test_a(): pass\ndef test_b(): pass\n",
        "integration/test_process.py": "def test_c(): pass\n",
        "integration/test_on_binaries.py": "def ensure_binaries(): pass\ndef test_d(): pass\n",
        "integration/test_on_gateway.py": "def ensure_gateway_binaries(): pass\ndef test_e(): pass\n",
        "e2e/test_cluster.py": "def test_f(): pass\n",
        "chaos/test_faults.py": "def test_g(): pass\n",
    }
    for rel, text in files.items():
        path = root / "tests" / rel
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    (root / "pytest.ini").write_text("[pytest]\nmarkers =\n  unit\n  integration\n  e2e\n")


def collected(root: Path, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests", *args],
        cwd=root,
        # Only the plugin under test: no third-party plugin to load makes each run a fraction of a second.
        env={**os.environ, "PYTHONPATH": str(ROOT / ".ci"), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode in (0, 5), done.stdout + done.stderr
    return sorted(line.split("::")[-1] for line in done.stdout.splitlines() if "::" in line)


def test_the_two_phases_split_the_tests_exactly(tmp_path: Path) -> None:
    write_tree(tmp_path)
    everything = collected(tmp_path)
    early = collected(tmp_path, "-p", "pytest_phases", "--phase=early")
    late = collected(tmp_path, "-p", "pytest_phases", "--phase=late")
    assert early == ["test_a", "test_b", "test_c"]  # no cluster, no build
    assert late == ["test_d", "test_e", "test_f", "test_g"]
    assert sorted(early + late) == everything
    # Other selections apply within each phase.
    assert collected(tmp_path, "-p", "pytest_phases", "--phase=late", "-m", "e2e") == ["test_f"]


def test_the_report_prints_the_steps_the_builds_and_the_slowest_tests(tmp_path: Path) -> None:
    (tmp_path / "steps.tsv").write_text(
        "prerequisites\t0\t0.1\nmake lint\t0\t40.0\n"
        "tests: unit + integration (alongside the builds)\t0\t300.0\n"
        "waiting for the builds\t0\t12.5\ntests: e2e, chaos and the rest\t1\t900.0\nmake test\t2\t1213.0\n"
    )
    (tmp_path / "builds.tsv").write_text("k8s\tbuilt\t800.0\nargocd\tcached\t0.0\n")
    (tmp_path / "junit-late.xml").write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.e2e.test_x" name="test_slow" time="120.5"><failure/></testcase>'
        '<testcase classname="tests.e2e.test_x.TestY" name="test_z" time="3.0"/>'
        '<testcase classname="tests.chaos.test_chaos" name="test_kills" time="200.0"/>'
        "</testsuite></testsuites>"
    )
    done = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "report.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    text = done.stdout
    assert "  build k8s (built; in the background)" in text
    assert "FAILED (2)" in text
    order = [text.index(s) for s in ("make lint", "make test", "build k8s", "tests: unit", "tests: e2e")]
    assert order == sorted(order)
    groups = {line.split()[0]: line.split()[1:] for line in text.splitlines() if re.search(r" tests? ", line)}
    assert groups["e2e"] == ["2", "tests", "123.5", "s", "1", "failed"]
    assert groups["chaos"] == ["1", "test", "200.0", "s"]
    slowest = text[text.index("slowest tests:") :].splitlines()[1:4]
    assert [line.split("  ")[-1].strip() for line in slowest[:1]] == ["tests/chaos/test_chaos.py::test_kills"]
    assert "tests/e2e/test_x.py::test_slow  (failed)" in slowest[1]
    assert "tests/e2e/test_x.py::TestY::test_z" in slowest[2]
