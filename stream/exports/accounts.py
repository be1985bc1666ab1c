"""A customers export as a map from e-mail to the platform's account id.

Shopify's and SHOPLINE's order exports name the buyer by e-mail only, while their webhooks
name a registered buyer by account id. Read beside the orders (``rfm import --preset ...
--customers customers_export.csv``), the shop's customers export puts each registered
buyer's back-filled orders under the account id the webhooks use, so history and live
orders are one customer. E-mails of guests (no account) stay keyed by their keyed hash.

The map lives in memory for the import only; no address is written anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from stream.collect.guest import normal_email
from stream.collect.outgoing import PayloadError, identifier
from stream.exports.preset import Row

# As Shopify heads it. A bare "Id" is not taken: in an orders export it is the order's.
ID_COLUMNS = ("Customer ID", "Customer Id")
EMAIL_COLUMNS = ("Email", "E-mail", "Email Address")


class AccountsError(ValueError):
    """The file is not a customers export this reader understands; names the columns."""


@dataclass
class Accounts:
    """E-mail (normalised) -> account id; e-mails held by two accounts map to neither."""

    by_email: dict[str, str] = field(default_factory=dict)
    ambiguous: set[str] = field(default_factory=set)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (line, reason)

    def account(self, email: str) -> str | None:
        return self.by_email.get(normal_email(email))

    def summary(self) -> str:
        return (
            f"{len(self.by_email)} accounts by e-mail, {len(self.ambiguous)} e-mails on two "
            f"accounts left as guests, {len(self.rejected)} rows rejected"
        )


def columns(header: Sequence[str]) -> tuple[str, str]:
    """(id column, e-mail column) of a customers export's header."""
    present = {name.strip() for name in header}
    found_id = next((c for c in ID_COLUMNS if c in present), None)
    found_email = next((c for c in EMAIL_COLUMNS if c in present), None)
    if found_id is None or found_email is None:
        raise AccountsError(
            "a customers export needs an id column (one of "
            f"{', '.join(map(repr, ID_COLUMNS))}) and an e-mail column (one of "
            f"{', '.join(map(repr, EMAIL_COLUMNS))}); rename a header that says it otherwise"
        )
    return found_id, found_email


def accounts(rows: Iterable[Row], id_column: str, email_column: str) -> Accounts:
    """The map from the export's rows. Shopify writes ids with a leading apostrophe (so
    spreadsheets keep every digit); it goes. Rows without an e-mail have nothing to join."""
    out = Accounts()
    for line, cells in rows:
        email = normal_email(_cell(cells, email_column))
        raw = _cell(cells, id_column).strip().removeprefix("'")
        if not email:
            continue
        try:
            account = identifier(raw, id_column)
        except PayloadError as exc:
            out.rejected.append((line, str(exc)))
            continue
        if email in out.ambiguous:
            continue
        known = out.by_email.setdefault(email, account)
        if known != account:
            del out.by_email[email]
            out.ambiguous.add(email)
    return out


def _cell(cells: Mapping[str, str | None], column: str) -> str:
    value = cells.get(column)
    return value if isinstance(value, str) else ""
