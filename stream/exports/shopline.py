"""SHOPLINE's order export, read as Shopify's (an assumption: see below).

SHOPLINE documents how to export orders but not the file's columns: its admin lets the
merchant pick and order the columns of the order report, and no list of their headers was
found. Its order model follows Shopify's (the Open API's orders carry the same fields,
which is why the collector maps SHOPLINE webhooks with the Shopify mapping), so this preset
reads the Shopify layout: one row per line item, the order's columns on its first row,
headers ``Name``, ``Id``, ``Email``, ``Financial Status``, ``Currency``, ``Total``,
``Refunded Amount``, ``Created at``, ``Cancelled at`` (and ``Paid at``, ``Source`` when
present); statuses are read case-blind with spaces as underscores ("Partially refunded").
A file whose headers differ is refused, naming the missing ones; ``rfm import --column
"Total=<the file's header>"`` maps each to the file's own.

The event ids say ``shopline``, as the collector's do for SHOPLINE webhooks.
"""

from __future__ import annotations

from stream.exports.shopify import preset

PRESET = preset("shopline-orders", "shopline")
