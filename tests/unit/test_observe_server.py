"""Reading Triton's own words out of a crashed container's last log lines."""

from __future__ import annotations

import pytest
from triton_operator.observe.server import MAX_ERROR_CHARS, triton_errors

TAIL = """| exit_timeout                     | 30 |
+----------------------------------+----+

I1123 18:56:54.773271 12121 server.cc:305] "Waiting for in-flight requests to complete."
E1123 18:57:00.083563 12146 model_repository_manager.cc:1415] "failed to poll model 'm': model not found"
error: creating server: Internal - failed to load all models
"""


def test_keeps_glog_errors_and_the_final_error_line_only() -> None:
    assert triton_errors(TAIL) == (
        "failed to poll model 'm': model not found; creating server: Internal - failed to load all models"
    )


@pytest.mark.parametrize("tail", ["", 'I1123 12:00:00.000000 1 server.cc:1] "ok"\n+---+\n'])
def test_nothing_to_say_without_errors(tail: str) -> None:
    assert triton_errors(tail) == ""


def test_repeats_collapse_and_long_text_is_cut() -> None:
    line = "error: " + "x" * 1000
    assert triton_errors(f"{line}\n{line}\n") == "x" * (MAX_ERROR_CHARS - 1) + "…"
