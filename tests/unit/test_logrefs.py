"""The operator's log (logrefs.py, main.configure_logging): every line about an object names it, in text
and in JSON lines; no line per health probe."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest
from triton_operator.logrefs import ObjectNames, about
from triton_operator.main import configure_logging


def formatted(json_lines: bool, emit: Callable[[logging.Logger], None]) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    if json_lines:
        from kopf._core.actions.loggers import ObjectJsonFormatter

        handler.setFormatter(ObjectJsonFormatter())
    handler.addFilter(ObjectNames(json=json_lines))
    logger = logging.getLogger("triton_operator.test_logrefs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return out.getvalue()


def test_a_line_inside_an_objects_pass_names_it() -> None:
    def emit(log: logging.Logger) -> None:
        with about("TritonModel", "ns", "mnist"):
            log.info("loaded %s version %s on pod %s", "mnist", 1, "triton-a")
        log.info("outside any pass")

    lines = formatted(False, emit).splitlines()
    assert lines == ["TritonModel ns/mnist: loaded mnist version 1 on pod triton-a", "outside any pass"]


def test_a_line_that_names_its_object_already_is_left_alone() -> None:
    def emit(log: logging.Logger) -> None:
        with about("TritonServer", "ns", "triton"):
            log.info("TritonServer ns/triton: pass failed, retrying next period: boom")

    assert formatted(False, emit).splitlines() == [
        "TritonServer ns/triton: pass failed, retrying next period: boom"
    ]


def test_json_lines_carry_the_object_as_a_field_and_the_message_as_written() -> None:
    def emit(log: logging.Logger) -> None:
        with about("TritonModel", "ns", "mnist"):
            log.warning("could not post Event %s", "Loaded")

    record = json.loads(formatted(True, emit))
    assert record["message"] == "could not post Event Loaded"
    assert record["object"] == {"kind": "TritonModel", "namespace": "ns", "name": "mnist"}
    assert record["severity"] == "warn"


def test_kopfs_own_object_lines_get_the_same_prefix() -> None:
    def emit(log: logging.Logger) -> None:
        ref = {"kind": "TritonModel", "namespace": "ns", "name": "mnist", "uid": "u"}
        log.info("Handler 'delete_model' succeeded.", extra={"k8s_ref": ref})

    assert formatted(False, emit).splitlines() == ["TritonModel ns/mnist: Handler 'delete_model' succeeded."]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access = logging.getLogger("aiohttp.access").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(access)


def test_no_line_per_health_probe(restore_logging: None) -> None:
    configure_logging("text")
    probe = logging.getLogger("aiohttp.access")
    assert not probe.isEnabledFor(logging.INFO)  # aiohttp logs each request at INFO
    assert probe.isEnabledFor(logging.WARNING)


def test_an_unknown_log_format_is_refused_with_the_choices(restore_logging: None) -> None:
    with pytest.raises(ValueError, match="text, json"):
        configure_logging("yaml")
