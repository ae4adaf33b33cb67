"""The one exception type t5lab raises for a user's mistake.

The CLI prints a `T5LabError` as a single line and exits non-zero; anything else is a bug and keeps its
traceback. Messages name the file, field or tensor at fault and what was expected.
"""

from collections.abc import Callable


class T5LabError(Exception):
    """A problem with the user's input (a file, a name, a config field), not a bug in t5lab."""


def field_checker(config: object, kind: str) -> Callable[[bool, str, str], None]:
    """`need(ok, field, expected)` for validating `config`'s fields: a failed check raises one line,
    "<kind> '<field>'=<value>: expected <expected>" (e.g. kind "train config field")."""

    def need(ok: bool, field: str, expected: str) -> None:
        if not ok:
            raise T5LabError(f"{kind} '{field}'={getattr(config, field)!r}: expected {expected}")

    return need
