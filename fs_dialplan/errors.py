"""fs_dialplan's exception tree.

::

    DialplanError
     ├── ConfigError    the YAML is invalid; carries every ConfigIssue found, not only the first
     └── RenderError    rendered output failed its own structural re-check (a bug here)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DialplanError", "ConfigIssue", "ConfigError", "RenderError"]


class DialplanError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class ConfigError(DialplanError):
    def __init__(self, issues: list[ConfigIssue] | tuple[ConfigIssue, ...]) -> None:
        super().__init__(issues)
        self.issues = tuple(issues)

    def __str__(self) -> str:
        n = len(self.issues)
        head = f"{n} error{'s' if n != 1 else ''} in config"
        return head + "\n" + "\n".join(str(i) for i in self.issues)


class RenderError(DialplanError):
    pass
