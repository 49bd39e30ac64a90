"""Print the README's configuration reference, generated from the code's option list.

    python scripts/options_table.py

tests/test_readme.py checks that README.md lists exactly these options and defaults.
"""

from __future__ import annotations

from typing import Any

from instrument.middleware import known_options


def default_text(value: Any) -> str:
    """How a default is written in the README."""
    if value is None or value == ():
        return "—"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, tuple):
        return "`" + ",".join(value) + "`"
    if value == "":
        return '`""`'
    return f"`{value}`"


def rows() -> list[str]:
    lines = ["| option | default | meaning |", "|---|---|---|"]
    for option in known_options():
        names = f"`{option.name}`" + "".join(f" (`{alias}`)" for alias in option.aliases)
        meaning = option.help.replace("|", "\\|")
        if option.secret:
            meaning += " Secret: never logged."
        lines.append(f"| {names} | {default_text(option.default)} | {meaning} |")
    return lines


if __name__ == "__main__":
    print("\n".join(rows()))
