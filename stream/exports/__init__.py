"""The storefronts' own order exports (CSV) as SPEC order events, for back-fill
(`rfm import FILE --preset shopify-orders`): one module per platform's file, the order
model and event rule they share (``order``), and the walk from rows to outcomes
(``preset``). Pure: the importer reads the file and publishes."""

from __future__ import annotations

from stream.exports import shopify, shopline, woocommerce
from stream.exports.preset import (
    Outcome,
    Preset,
    Published,
    Rejected,
    Row,
    Skipped,
    Tally,
    outcomes,
)

PRESETS: dict[str, Preset] = {
    p.name: p for p in (shopify.PRESET, shopline.PRESET, woocommerce.PRESET)
}

__all__ = [
    "PRESETS",
    "Outcome",
    "Preset",
    "Published",
    "Rejected",
    "Row",
    "Skipped",
    "Tally",
    "outcomes",
]
