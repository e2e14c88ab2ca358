"""Library errors. Each names the thing that is wrong and how to fix it; the CLI turns every one of
them into a one-line message and a non-zero exit in one place (cli.py)."""
from __future__ import annotations


class GptError(Exception):
    """An error a user can act on: `what` is wrong, `hint` says how to fix it."""

    exit_code = 1

    def __init__(self, what: str, hint: str = ""):
        self.what = what
        self.hint = hint
        super().__init__(self.line())

    def line(self) -> str:
        return f"{self.what}: {self.hint}" if self.hint else self.what


class NotATrace(GptError):
    pass


class NewerFormat(GptError):
    pass


class QueryError(GptError):
    pass


class PermissionProblem(GptError):
    pass
