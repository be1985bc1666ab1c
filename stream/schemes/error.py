"""The error a bad scheme file raises, and where in the file it points."""

from __future__ import annotations

__all__ = ["SchemeError", "Where"]


class SchemeError(ValueError):
    """A scheme file is invalid; the message names the scheme, the rule and the field."""

    def __init__(
        self, message: str, *, scheme: str, rule: str | None = None, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.scheme = scheme
        self.rule = rule
        self.field = field


class Where:
    """Builds error messages that always say which scheme, rule and field is wrong."""

    def __init__(self, scheme: str, index: int | None = None, rule: str | None = None) -> None:
        self.scheme, self.index, self.rule = scheme, index, rule

    def at_rule(self, index: int, rule: str | None) -> Where:
        return Where(self.scheme, index, rule)

    def error(self, fld: str | None, problem: str) -> SchemeError:
        where = f"scheme {self.scheme!r}"
        if self.index is not None:
            where += f", rule #{self.index + 1}"
            if self.rule is not None:
                where += f" {self.rule!r}"
        if fld is not None:
            where += f", field {fld!r}"
        return SchemeError(f"{where}: {problem}", scheme=self.scheme, rule=self.rule, field=fld)
