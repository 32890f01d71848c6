"""README.md's command blocks, so the demo and the tests run exactly what README tells users to run.

A block is marked by an HTML comment on the line before its fence: `<!-- readme-commands: NAME -->`.
"""

from __future__ import annotations

import re

from sandbox.config import REPO_ROOT

README = REPO_ROOT / "README.md"


def readme_commands(section: str) -> list[str]:
    """The command lines of README's sh block marked `<!-- readme-commands: SECTION -->`."""
    text = README.read_text()
    match = re.search(rf"<!-- readme-commands: {re.escape(section)} -->\n```sh\n(.*?)```", text, re.S)
    if not match:
        raise LookupError(f"README.md has no sh block marked readme-commands: {section}")
    return [line for line in match.group(1).splitlines() if line.strip() and not line.startswith("#")]
