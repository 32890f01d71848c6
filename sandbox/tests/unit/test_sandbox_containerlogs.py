"""The sandbox pod runner's container logs for `kubectl logs`: the raw output a container writes, copied
into CRI log files (what kwok's kubelet server reads), the previous instance's kept for --previous."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sandbox.containerlogs import MAX_RECORD, PARTIAL_AFTER_S, ContainerLog, cri_timestamp, logs_object

pytestmark = pytest.mark.unit

RECORD = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (stdout|stderr) ([PF]) (.*)$")


def records(path: Path) -> list[tuple[bytes, bytes]]:
    """(tag, content) of each CRI record; every line must be one."""
    out = []
    for line in path.read_bytes().splitlines():
        m = RECORD.match(line)
        assert m, line
        out.append((m.group(3), m.group(4)))
    return out


def shown(path: Path) -> bytes:
    """What `kubectl logs` prints for the file: partial records joined to the next, full ones end a line."""
    return b"".join(content + (b"\n" if tag == b"F" else b"") for tag, content in records(path))


def test_timestamp_is_rfc3339_with_nanoseconds() -> None:
    assert cri_timestamp(0.5) == b"1970-01-01T00:00:00.500000000Z"
    assert cri_timestamp(1.9999999999) == b"1970-01-01T00:00:02.000000000Z"


def test_lines_are_copied_as_full_records_and_a_line_in_progress_waits(tmp_path: Path) -> None:
    log = ContainerLog(tmp_path, "main")
    log.prepare()
    assert log.current.read_bytes() == b""
    log.begin()
    log.raw.write_bytes(b"starting\nlistening on 8000")
    log.pump(now=100.0)
    assert records(log.current) == [(b"F", b"starting")]
    with open(log.raw, "ab") as f:
        f.write(b" and 8001\n")
    log.pump(now=100.2)
    assert shown(log.current) == b"starting\nlistening on 8000 and 8001\n"


def test_a_line_left_unended_is_written_as_partial_then_continued(tmp_path: Path) -> None:
    log = ContainerLog(tmp_path, "main")
    log.begin()
    log.raw.write_bytes(b"password: ")
    log.pump(now=10.0)
    assert records(log.current) == []
    log.pump(now=10.0 + PARTIAL_AFTER_S)
    assert records(log.current) == [(b"P", b"password: ")]
    with open(log.raw, "ab") as f:
        f.write(b"ok\n")
    log.pump(now=12.0)
    assert shown(log.current) == b"password: ok\n"


def test_an_unended_line_starts_its_wait_when_it_begins(tmp_path: Path) -> None:
    log = ContainerLog(tmp_path, "main")
    log.begin()
    log.raw.write_bytes(b"a")
    log.pump(now=0.0)
    with open(log.raw, "ab") as f:
        f.write(b"\nb")  # 'b' begins now: not partial merely because 'a' began long ago
    log.pump(now=5.0)
    assert records(log.current) == [(b"F", b"a")]


def test_long_lines_are_split_as_a_runtime_splits_them(tmp_path: Path) -> None:
    log = ContainerLog(tmp_path, "main")
    log.begin()
    log.raw.write_bytes(b"x" * (MAX_RECORD + 10) + b"\n")
    log.pump(now=1.0)
    assert [(tag, len(c)) for tag, c in records(log.current)] == [(b"P", MAX_RECORD), (b"F", 10)]


def test_a_restart_keeps_the_last_instance_as_previous(tmp_path: Path) -> None:
    log = ContainerLog(tmp_path, "main")
    log.begin()
    log.raw.write_bytes(b"first run\nfatal: no credentials")  # the last line has no newline
    log.begin()  # the runner restarts the container: what it wrote last is kept, ended
    assert shown(log.previous) == b"first run\nfatal: no credentials\n"
    assert log.current.read_bytes() == b""
    with open(log.raw, "ab") as f:
        f.write(b"second run\n")
    log.pump(final=True)
    assert shown(log.current) == b"second run\n"
    # The raw log keeps both runs (tests read it), and a third run makes the second one previous.
    assert log.raw.read_bytes() == b"first run\nfatal: no credentials" + b"second run\n"
    log.begin()
    assert shown(log.previous) == b"second run\n"


def test_nothing_is_copied_before_the_container_starts(tmp_path: Path) -> None:
    log = ContainerLog(tmp_path, "main")
    log.prepare()
    log.pump(final=True)
    assert log.current.read_bytes() == b""


def test_the_logs_object_names_each_containers_files_and_is_owned_by_the_pod(tmp_path: Path) -> None:
    pod = {"metadata": {"name": "triton-0", "namespace": "ml", "uid": "u-1"}}
    logs = [(name, ContainerLog(tmp_path, name)) for name in ("init", "tritonserver")]
    body = logs_object(pod, logs)
    assert body["apiVersion"] == "kwok.x-k8s.io/v1alpha1" and body["kind"] == "Logs"
    assert (body["metadata"]["name"], body["metadata"]["namespace"]) == ("triton-0", "ml")
    assert body["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "triton-0", "uid": "u-1"}
    ]
    (init, main) = body["spec"]["logs"]
    assert init["containers"] == ["init"] and main["containers"] == ["tritonserver"]
    assert main["logsFile"] == str(tmp_path / "logs" / "tritonserver" / "current.log")
    assert main["previousLogsFile"] == str(tmp_path / "logs" / "tritonserver" / "previous.log")
