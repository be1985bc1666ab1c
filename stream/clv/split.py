"""A customer's purchases cut into a calibration period and a holdout period. Pure.

The lifetime aggregates the scorer keeps (purchase days, first and last order) fold every
order time together, so they cannot say how many purchases came before a given instant.
The split therefore reads the customer's order records (``Customer.orders``: one per
completed order, each with its time). Those are kept only inside ``scoring.window_days``
(for life when it is 0), so a customer whose records no longer cover every purchase day
cannot be split and is counted as such instead of being guessed at.

The cut is by UTC day, the unit ``x`` counts in: the cutoff's whole day belongs to the
calibration period, so no purchase day is ever split between the two periods.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from stream.clv.model import WEEK_MS
from stream.core.customer import day


@dataclass(frozen=True, slots=True)
class CalibrationHoldout:
    """One customer's calibration summary (weeks) and its purchase days in the holdout."""

    x: int  # repeat purchase days up to the cutoff's day
    t_x: float  # first purchase -> last one in the calibration period
    T: float  # first purchase -> cutoff
    holdout: int  # purchase days after the cutoff's day, up to the end


class Incomplete(ValueError):
    """The order records no longer cover every purchase day (older ones left the window)."""


def split(
    order_times: Iterable[int], purchase_days: int, first_order_at: int, cutoff: int, end: int
) -> CalibrationHoldout | None:
    """None for a customer whose first purchase comes after the cutoff's day (the model is
    fitted on calibration customers only); ``Incomplete`` when the records cannot tell."""
    times = sorted(order_times)
    if len({day(at) for at in times}) != purchase_days or not times or times[0] != first_order_at:
        raise Incomplete(f"{purchase_days} purchase days, {len(times)} order records kept")
    last_day = day(cutoff)
    calibration = [at for at in times if day(at) <= last_day]
    if not calibration:
        return None
    first = calibration[0]
    t_x = (calibration[-1] - first) / WEEK_MS
    return CalibrationHoldout(
        x=len({day(at) for at in calibration}) - 1,
        t_x=t_x,
        T=max(t_x, (cutoff - first) / WEEK_MS),
        holdout=len({day(at) for at in times if day(at) > last_day and at <= end}),
    )
