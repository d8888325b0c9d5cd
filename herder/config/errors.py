"""Configuration errors: each names the file, the line and the key, and what was expected."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConfigError", "ConfigErrors"]


@dataclass(frozen=True, slots=True)
class ConfigError:
    """One problem in one file. ``line`` is 1-based, None when the file has no line to
    point at (it cannot be read); ``key`` is the dotted key path ("" for the whole file)."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigErrors(Exception):
    """Raised by the loader with *every* error found, across all files."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))
