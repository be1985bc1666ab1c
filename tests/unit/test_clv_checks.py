"""The CLV model checks against ``lifetimes`` on the CDNOW sample (an independent
implementation, a test dependency only; see tests/unit/test_clv.py), and the drift flag.

Our fit and ``lifetimes``' own fit of the same data agree to about 1e-7 in every parameter,
so per-bucket and per-cell figures are compared at a relative 1e-4: a wrong horizon, a day
put in the wrong period or a bucket off by one moves them by far more.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from lifetimes import BetaGeoFitter
from lifetimes.utils import calibration_and_holdout_data

from stream.clv import checks
from stream.clv import model as clv
from stream.clv.split import CalibrationHoldout, Incomplete, split
from stream.config import ConfigError, settings_from
from tests import cdnow

DAY = 86_400_000
CALIBRATION_END = datetime(1997, 9, 30, tzinfo=UTC)
OBSERVATION_END = datetime(1998, 6, 30, tzinfo=UTC)
REL = 1e-4


def _ms(d: datetime) -> int:
    return int(d.timestamp() * 1000)


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    t = cdnow.transactions()
    t["day"] = t["day"].dt.tz_localize(None)  # lifetimes' periods want naive dates
    t["value"] = t["value"].astype(float)
    return t


@pytest.fixture(scope="module")
def oracle_split(transactions: pd.DataFrame) -> pd.DataFrame:
    """``lifetimes``' calibration/holdout summary, in weeks, purchases counted by day, with
    its own BG/NBD fit's expectation for the holdout as ``predicted``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # monetary_value_col only because lifetimes 0.11 needs a column beside id and date
        frame = calibration_and_holdout_data(
            transactions,
            "id",
            "day",
            calibration_period_end="1997-09-30",
            observation_period_end="1998-06-30",
            freq="D",
            freq_multiplier=7,
            monetary_value_col="value",
        )
    fitter = BetaGeoFitter().fit(frame["frequency_cal"], frame["recency_cal"], frame["T_cal"])
    frame["predicted"] = fitter.conditional_expected_number_of_purchases_up_to_time(
        frame["duration_holdout"], frame["frequency_cal"], frame["recency_cal"], frame["T_cal"]
    )
    return frame


@pytest.fixture(scope="module")
def our_split(transactions: pd.DataFrame) -> dict[int, CalibrationHoldout]:
    """Each customer's order times as the scorer keeps them, split at the same instants."""
    out = {}
    for cid, group in transactions.groupby("id"):
        times = [_ms(d.to_pydatetime().replace(tzinfo=UTC)) for d in group["day"]]
        days = len({at // DAY for at in times})
        row = split(times, days, min(times), _ms(CALIBRATION_END), _ms(OBSERVATION_END))
        if row is not None:
            out[int(cid)] = row
    return out


def test_split_equals_lifetimes_calibration_and_holdout_summary(
    our_split: dict[int, CalibrationHoldout], oracle_split: pd.DataFrame
) -> None:
    assert sorted(our_split) == sorted(int(i) for i in oracle_split.index)
    for row in oracle_split.itertuples():
        ours = our_split[int(row.Index)]
        assert ours.x == row.frequency_cal and ours.holdout == row.frequency_holdout
        assert abs(ours.t_x - row.recency_cal) < 1e-9 and abs(ours.T - row.T_cal) < 1e-9


def test_holdout_buckets_equal_lifetimes_on_cdnow(
    our_split: dict[int, CalibrationHoldout], oracle_split: pd.DataFrame
) -> None:
    found = checks.holdout_check(
        list(our_split.values()), _ms(CALIBRATION_END), _ms(OBSERVATION_END), 0
    )
    assert found.weeks == oracle_split["duration_holdout"].iloc[0] == 39.0
    frame = oracle_split.assign(bucket=oracle_split["frequency_cal"].clip(upper=6).astype(int))
    by_bucket = frame.groupby("bucket").agg(
        customers=("predicted", "size"),
        expected=("predicted", "mean"),
        actual=("frequency_holdout", "mean"),
    )
    assert [b.label for b in found.buckets] == ["0", "1", "2", "3", "4", "5", "6+"]
    for ours, theirs in zip(found.buckets, by_bucket.itertuples(), strict=True):
        assert ours.customers == theirs.customers
        assert ours.actual == pytest.approx(theirs.actual, abs=1e-6)
        assert ours.expected == pytest.approx(theirs.expected, rel=REL)
    assert found.customers == 2357 and found.actual_total == 1882
    assert found.expected_total == pytest.approx(frame["predicted"].sum(), rel=REL)


def test_the_cutoffs_whole_day_is_calibration() -> None:
    cutoff = 10 * DAY + 3_600_000  # 01:00 on day 10
    later_that_day = 10 * DAY + 23 * 3_600_000
    row = split([0, later_that_day, 12 * DAY, 12 * DAY + 5, 20 * DAY], 4, 0, cutoff, 15 * DAY)
    assert row is not None
    assert row.x == 1 and row.holdout == 1  # day 12 once; day 20 is after the end
    assert row.t_x == pytest.approx(later_that_day / clv.WEEK_MS)
    assert row.t_x == row.T  # the last calibration purchase came after the cutoff instant
    assert split([11 * DAY], 1, 11 * DAY, cutoff, 15 * DAY) is None  # first bought after


def test_a_customer_whose_records_left_the_window_cannot_be_split() -> None:
    with pytest.raises(Incomplete):
        split([5 * DAY], 3, 0, 4 * DAY, 9 * DAY)  # three purchase days, one record kept
    with pytest.raises(Incomplete):
        split([5 * DAY], 1, 0, 4 * DAY, 9 * DAY)  # the first order's record is gone


@pytest.fixture(scope="module")
def summary() -> pd.DataFrame:
    return pd.read_csv(cdnow.DATA / "cdnow_customers_summary_with_transactions.csv")


@pytest.fixture(scope="module")
def fits(summary: pd.DataFrame) -> tuple[clv.BgNbd, BetaGeoFitter]:
    x, t_x, age = (summary[k].to_numpy(float) for k in ("x", "t_x", "T"))
    return clv.fit_bgnbd(x, t_x, age), BetaGeoFitter().fit(x, t_x, age)


def test_period_transactions_equal_lifetimes_probabilities(
    summary: pd.DataFrame, fits: tuple[clv.BgNbd, BetaGeoFitter]
) -> None:
    ours, oracle = fits
    x, age = summary["x"].to_numpy(float), summary["T"].to_numpy(float)
    found = checks.period_transactions(ours, x, age)
    assert found.labels == ("0", "1", "2", "3", "4", "5", "6", "7+")
    assert found.actual == tuple(int((np.minimum(x, 7) == n).sum()) for n in range(8))
    expected = [
        sum(float(oracle.probability_of_n_purchases_up_to_time(t, n)) for t in age)
        for n in range(7)
    ]
    expected.append(len(x) - sum(expected))
    np.testing.assert_allclose(found.expected, expected, rtol=REL)


def test_matrices_equal_lifetimes_on_its_plotting_grid(
    summary: pd.DataFrame, fits: tuple[clv.BgNbd, BetaGeoFitter]
) -> None:
    ours, oracle = fits
    max_x, max_T = float(summary["x"].max()), float(summary["T"].max())
    expected, alive = checks.matrices(ours, max_x, max_T)
    # lifetimes' plot_frequency_recency_matrix grid: frequency 0..max, recency 0..int(max T)
    assert expected.frequencies == tuple(range(int(max_x) + 1))
    assert expected.recencies == tuple(float(r) for r in range(int(max_T) + 1))
    T = int(max_T)
    for i, recency in enumerate(range(T + 1)):
        for j, frequency in enumerate(range(int(max_x) + 1)):
            e = oracle.conditional_expected_number_of_purchases_up_to_time(
                90 / 7, frequency, recency, T
            )
            a = oracle.conditional_probability_alive(frequency, recency, T)
            assert expected.values[i][j] == pytest.approx(np.ravel(e)[0], rel=REL, abs=1e-6)
            assert alive.values[i][j] == pytest.approx(np.ravel(a)[0], rel=REL, abs=1e-6)


def test_a_long_history_is_stepped_to_at_most_61_recency_rows() -> None:
    frequencies, recencies = checks.matrix_grid(200, 500.3)
    assert len(frequencies) == 31 and recencies[-1] == 500 and len(recencies) <= 61
    assert np.all(np.diff(recencies) > 0)


BEFORE = {"r": 0.25, "alpha": 4.0, "a": 0.8, "b": 2.5, "p": 6.0, "q": 4.0, "gamma": 15.0}


def test_the_first_fit_has_nothing_to_drift_from() -> None:
    found = checks.drift(0.25, None, None, BEFORE)
    assert found == checks.Drift(0.25, None, {}, False)


def test_a_parameter_moving_more_than_the_share_is_flagged() -> None:
    after = {**BEFORE, "alpha": 5.2}  # +30 %
    found = checks.drift(0.25, 3, BEFORE, after)
    assert found.flagged and found.previous_version == 3
    assert found.moves["alpha"] == pytest.approx(0.3) and found.moves["r"] == 0


def test_moves_up_to_the_share_are_not_flagged() -> None:
    after = {**BEFORE, "alpha": 5.0, "gamma": 11.25, "r": 0.3}  # +25 %, -25 %, +20 %
    found = checks.drift(0.25, 3, BEFORE, after)
    assert not found.flagged and max(found.moves.values()) == pytest.approx(0.25)


def test_spend_parameters_count_only_when_both_fits_have_them() -> None:
    without_spend = {k: BEFORE[k] for k in ("r", "alpha", "a", "b")}
    found = checks.drift(0.25, 1, without_spend, {**BEFORE, "q": 40.0})
    assert not found.flagged and set(found.moves) == {"r", "alpha", "a", "b"}


def test_parameters_by_name() -> None:
    m, g = clv.BgNbd(1, 2, 3, 4), clv.GammaGamma(5, 6, 7)
    assert checks.parameters(m, None) == {"r": 1, "alpha": 2, "a": 3, "b": 4}
    assert checks.parameters(m, g) == {**checks.parameters(m, None), "p": 5, "q": 6, "gamma": 7}


@pytest.mark.parametrize("bad", [0, -0.1, 101, "25%", True])
def test_drift_share_setting_is_validated_by_name(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"prediction\.drift_share"):
        settings_from({}, {"prediction": {"drift_share": bad}})


def test_drift_share_setting_defaults_to_a_quarter() -> None:
    assert settings_from({}, {}).prediction.drift_share == 0.25
    assert settings_from({}, {"prediction": {"drift_share": 0.1}}).prediction.drift_share == 0.1


@pytest.mark.parametrize(
    ("value", "message"),
    [("2h", "at least one day"), ("13 weeks", "expected a duration"), ("-1d", "expected a")],
)
def test_fit_refuses_a_holdout_it_cannot_use_naming_the_option(value: str, message: str) -> None:
    from click.testing import CliRunner

    from stream.cli import main

    done = CliRunner().invoke(main, ["fit", "--holdout", value], env={"RFM_CONFIG": ""})
    assert done.exit_code == 2, done.output
    assert "--holdout" in done.output and message in done.output


def test_a_holdout_may_be_given_in_weeks() -> None:
    from stream.config.checks import parse_duration

    assert parse_duration("--holdout", "13w") == 13 * 7 * 86_400
