"""README.md keeps its promises: the configuration reference and the examples are true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from instrument.middleware import known_options

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
sys.path.insert(0, str(ROOT / "scripts"))
from options_table import rows  # noqa: E402


def test_configuration_reference_matches_the_code() -> None:
    table = [line for line in README.splitlines() if line.startswith("| `")]
    documented = {re.match(r"\| `([^`]+)`", line)[1]: line for line in table}  # type: ignore[index]
    generated = {re.match(r"\| `([^`]+)`", line)[1]: line for line in rows()[2:]}  # type: ignore[index]
    assert set(documented) >= set(generated), "options missing from README.md"
    for name, line in generated.items():
        assert documented[name] == line, f"README row for {name} is out of date"


def test_every_option_has_help_and_a_unique_name() -> None:
    names = [name for option in known_options() for name in option.names]
    assert all(option.help for option in known_options())
    assert len(names) == len(set(names)) + names.count("transport_url") - 1


PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.mark.parametrize(
    "block", PYTHON_BLOCKS, ids=[f"block{i}" for i in range(len(PYTHON_BLOCKS))]
)
def test_readme_python_examples_run(block: str) -> None:
    """Each ```python block runs on its own; the blocks assert what they claim."""
    assert "assert " in block, "a README example must check what it claims"
    result = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
