"""README.md's code blocks, for the tests that run them."""
from __future__ import annotations

import re
from pathlib import Path


def readme_python_blocks(section: str) -> list[str]:
    """The python code blocks of README.md's ``## section`` (which must exist)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    assert match, f"README.md has no section '## {section}'"
    return re.findall(r"```python\n(.*?)```", match.group(1), re.S)
