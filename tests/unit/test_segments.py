"""Segment schemes (SPEC section 5): presets, first-match classification, validation."""

from __future__ import annotations

import tomllib
from fractions import Fraction
from itertools import product
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from stream.core.scheme import Profile, Scheme, SegmentRule, fm_score
from stream.schemes import PRESETS, SchemeError, load_scheme, parse_scheme

FAST = settings(max_examples=200, deadline=None)
SCORES = range(1, 6)
ORDER_COUNTS = (0, 1, 2, 3, 5, 100, 1023, 1024, 1025, 10**6)


def first_match(rules: tuple[SegmentRule, ...], p: Profile) -> SegmentRule:
    matching = [r for r in rules if r.matches(p)]
    assert matching, f"no rule matches {p}"
    return matching[0]


def all_profiles() -> list[Profile]:
    """Every consistent profile: R/F/M scored iff has_orders, I scored iff has_interactions."""
    out: list[Profile] = []
    for has_i, i in [(False, None), *((True, v) for v in SCORES)]:
        out.append(Profile(None, None, None, i, 0, False, has_i))  # no completed order
        for r, f, m, orders in product(SCORES, SCORES, SCORES, ORDER_COUNTS):
            out.append(Profile(r, f, m, i, orders, True, has_i))
    return out


PROFILES = all_profiles()


@pytest.fixture(scope="module", params=PRESETS)
def preset(request: pytest.FixtureRequest) -> Scheme:
    return load_scheme(request.param, 5)


def test_presets_are_the_spec_three() -> None:
    assert set(PRESETS) == {"rfm-classic", "rfim", "simple"}


def test_preset_loads(preset: Scheme) -> None:
    assert preset.id in PRESETS
    assert preset.buckets == 5
    assert preset.rules[-1].is_catch_all
    assert not any(r.is_catch_all for r in preset.rules[:-1])
    for rule in preset.rules:
        assert rule.name.en and rule.name.zh_tw, rule.id
        assert rule.name.get("zh-TW") == rule.name.zh_tw
        assert rule.description.en and rule.action.en
    assert len(set(preset.ids)) == len(preset.ids)


def test_preset_classifies_every_profile_like_first_match(preset: Scheme) -> None:
    reached: set[str] = set()
    for p in PROFILES:
        got = preset.classify(p)
        assert got is first_match(preset.rules, p), p
        reached.add(got.id)
    # the loader proves every rule reachable; the enumeration agrees
    assert reached == set(preset.ids)


@FAST
@given(
    r=st.integers(1, 5),
    f=st.integers(1, 5),
    m=st.integers(1, 5),
    i=st.none() | st.integers(1, 5),
    orders=st.integers(0, 10**9),
    name=st.sampled_from(PRESETS),
)
def test_classify_matches_slow_path_any_order_count(
    r: int, f: int, m: int, i: int | None, orders: int, name: str
) -> None:
    scheme = load_scheme(name, 5)
    p = Profile(r, f, m, i, orders, True, i is not None)
    assert scheme.classify(p) is first_match(scheme.rules, p)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("i", SCORES)
def test_interacting_without_orders_gets_a_segment(name: str, i: int) -> None:
    scheme = load_scheme(name, 5)
    rule = scheme.classify(Profile(None, None, None, i, 0, False, True))
    assert rule.id in scheme.ids
    if name in ("rfm-classic", "rfim"):
        assert rule.id == "interacting"


def test_rfm_classic_is_the_r_by_fm_map() -> None:
    scheme = load_scheme("rfm-classic", 5)
    eleven = {
        "champions",
        "loyal",
        "potential_loyalist",
        "new_customers",
        "promising",
        "need_attention",
        "about_to_sleep",
        "at_risk",
        "cant_lose_them",
        "hibernating",
        "lost",
    }
    assert eleven <= set(scheme.ids)
    names = {scheme.rule(x).name.en for x in eleven}
    assert {"Champions", "At Risk", "Can't Lose Them", "Lost", "Hibernating"} <= names
    seen = set()
    for r, f, m, has_i in product(SCORES, SCORES, SCORES, (False, True)):
        rule = scheme.classify(Profile(r, f, m, 3 if has_i else None, 2, True, has_i))
        assert rule.id in eleven, (r, f, m)  # buyers always land in the R x FM map
        seen.add(rule.id)
    assert seen == eleven
    cell = {
        (5, 5): "champions",
        (1, 1): "lost",
        (1, 5): "cant_lose_them",
        (5, 1): "new_customers",
        (2, 4): "at_risk",
        (3, 3): "need_attention",
    }
    for (r, fm), want in cell.items():
        assert scheme.classify(Profile(r, fm, fm, None, 1, True, False)).id == want


def test_rfim_has_nine_segments_and_uses_interaction() -> None:
    scheme = load_scheme("rfim", 5)
    assert len(scheme.rules) == 9
    assert any(r.i is not None for r in scheme.rules)
    top = Profile(5, 5, 5, 5, 20, True, True)
    no_i = Profile(5, 5, 5, None, 20, True, False)
    assert scheme.classify(top).id != scheme.classify(no_i).id


def test_simple_has_three_groups() -> None:
    assert len(load_scheme("simple", 5).rules) == 3


def test_fm_score_is_rounded_mean() -> None:
    for f, m in product(range(1, 11), repeat=2):
        assert fm_score(f, m) == int((f + m) / 2 + 0.5)


def test_classify_rejects_out_of_range_profile() -> None:
    scheme = load_scheme("simple", 5)
    with pytest.raises(ValueError):
        scheme.classify(Profile(6, 1, 1, None, 1, True, False))


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("buckets", range(3, 11))
def test_presets_project_other_bucket_counts(preset: str, buckets: int) -> None:
    """Written for B=5, a preset scores any B in 3..10 by projecting scores onto 1..5."""
    scheme = load_scheme(preset, buckets)
    # projection: 1 + round-half-up((s - 1) * 4 / (B - 1)), endpoints fixed, monotone
    expect = [
        1 + int(Fraction((s - 1) * 4, buckets - 1) + Fraction(1, 2)) for s in range(1, buckets + 1)
    ]
    assert [scheme.project(s) for s in range(1, buckets + 1)] == expect
    assert scheme.project(None) is None
    for p in _profiles(buckets, {0, 1, 2, 7}):
        assert scheme.classify(p) == first_match(scheme.rules, scheme.projected(p))


def test_unknown_scheme_name() -> None:
    with pytest.raises(SchemeError, match="not a preset"):
        load_scheme("no-such-scheme", 5)


def test_scheme_file_by_path(tmp_path: Path) -> None:
    from importlib import resources

    blob = (resources.files("stream") / "schemes" / "simple.toml").read_bytes()
    path = tmp_path / "mine.toml"
    path.write_bytes(blob)
    scheme = load_scheme(str(path), 5)
    assert scheme.ids == load_scheme("simple", 5).ids
    assert tomllib.loads(blob.decode())["id"] == scheme.id


# -- validation -------------------------------------------------------------------------------


def rule(rule_id: str, **cond: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": rule_id,
        "name": {"en": f"Rule {rule_id}", "zh-TW": "測試"},
        "description": "d",
        "action": "a",
    }
    out.update(cond)
    return out


def scheme_doc(*rules: dict[str, Any], **top: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "test",
        "name": {"en": "Test", "zh-TW": "測試"},
        "buckets": 5,
        "rules": list(rules),
    }
    doc.update(top)
    return doc


def error_for(doc: dict[str, Any], buckets: int = 5) -> SchemeError:
    with pytest.raises(SchemeError) as info:
        parse_scheme(doc, buckets)
    err = info.value
    assert "\n" not in str(err)
    return err


def test_valid_custom_scheme() -> None:
    s = parse_scheme(
        scheme_doc(
            rule("vip", r=[4, 5], fm=[4, 5]),
            rule("one_timer", orders=[1, 1]),
            rule("many", orders={"min": 2}),
            rule("fans", has_interactions=True, i=[3, 5]),
            rule("rest"),
        ),
        5,
    )
    assert s.classify(Profile(5, 5, 5, None, 9, True, False)).id == "vip"
    assert s.classify(Profile(1, 1, 1, None, 1, True, False)).id == "one_timer"
    assert s.classify(Profile(1, 1, 1, None, 5000, True, False)).id == "many"
    assert s.classify(Profile(None, None, None, 4, 0, False, True)).id == "fans"
    assert s.classify(Profile(None, None, None, 1, 0, False, True)).id == "rest"


def test_unknown_rule_field() -> None:
    err = error_for(scheme_doc(rule("vip", recency=[4, 5]), rule("rest")))
    assert err.rule == "vip" and err.field == "recency"
    assert "'vip'" in str(err) and "'recency'" in str(err) and "unknown field" in str(err)


def test_unknown_top_level_field() -> None:
    err = error_for(scheme_doc(rule("rest"), colour="red"))
    assert err.field == "colour" and "colour" in str(err)


def test_unknown_text_language() -> None:
    bad = rule("vip", r=[5, 5])
    bad["name"] = {"en": "VIP", "zh-TW": "貴賓", "fr": "VIP"}
    err = error_for(scheme_doc(bad, rule("rest")))
    assert err.rule == "vip" and err.field == "name.fr"


@pytest.mark.parametrize(
    ("field", "value"),
    [("r", [4, 2]), ("f", [0, 3]), ("m", [1, 6]), ("i", [5, 1]), ("fm", [6, 6])],
)
def test_impossible_score_range(field: str, value: list[int]) -> None:
    err = error_for(scheme_doc(rule("vip", **{field: value}), rule("rest")))
    assert err.rule == "vip" and err.field == field
    assert "'vip'" in str(err) and f"'{field}'" in str(err)


@pytest.mark.parametrize("value", [[3, 1], {"min": 5, "max": 2}, [-1, 2]])
def test_impossible_orders_range(value: Any) -> None:
    err = error_for(scheme_doc(rule("few", orders=value), rule("rest")))
    assert err.rule == "few" and err.field == "orders"


@pytest.mark.parametrize("value", [[1], [1, 2, 3], ["1", "2"], 3, [1.0, 2.0], [True, 2]])
def test_malformed_range(value: Any) -> None:
    err = error_for(scheme_doc(rule("vip", r=value), rule("rest")))
    assert err.rule == "vip" and err.field == "r"


def test_contradictory_conditions() -> None:
    err = error_for(scheme_doc(rule("odd", has_orders=False, r=[1, 5]), rule("rest")))
    assert err.rule == "odd" and err.field == "r"
    err = error_for(scheme_doc(rule("odd", has_interactions=False, i=[1, 5]), rule("rest")))
    assert err.rule == "odd" and err.field == "i"


def test_conditions_that_never_hold_together() -> None:
    # fm = (f + m + 1) // 2 can never reach 5 when f = 1
    err = error_for(scheme_doc(rule("odd", f=[1, 1], fm=[5, 5]), rule("rest")))
    assert err.rule == "odd"
    assert err.field is not None and "f" in err.field and "fm" in err.field
    assert "never" in str(err)


def test_shadowed_rule() -> None:
    err = error_for(
        scheme_doc(rule("recent", r=[4, 5]), rule("very_recent", r=[5, 5]), rule("rest"))
    )
    assert err.rule == "very_recent" and err.field == "r"
    msg = str(err)
    assert "shadowed" in msg and "'very_recent'" in msg and "'recent'" in msg


def test_shadowed_by_several_rules() -> None:
    err = error_for(
        scheme_doc(
            rule("low", r=[1, 3]),
            rule("high", r=[4, 5]),
            rule("mid_value", m=[3, 3]),
            rule("rest"),
        )
    )
    assert err.rule == "mid_value" and err.field == "m"
    assert "'low'" in str(err) and "'high'" in str(err)


def test_orders_rule_shadowed_by_open_range() -> None:
    err = error_for(
        scheme_doc(rule("buyers", orders={"min": 1}), rule("repeat", orders=[2, 5]), rule("rest"))
    )
    assert err.rule == "repeat" and err.field == "orders"


def test_overlap_that_is_not_shadowing_is_fine() -> None:
    parse_scheme(scheme_doc(rule("recent", r=[4, 5]), rule("top", r=[3, 5]), rule("rest")), 5)


def test_missing_catch_all() -> None:
    err = error_for(scheme_doc(rule("recent", r=[4, 5]), rule("old", r=[1, 3])))
    assert err.rule == "old" and err.field == "r"
    assert "catch-all" in str(err)


def test_catch_all_not_last() -> None:
    err = error_for(scheme_doc(rule("everyone"), rule("recent", r=[4, 5])))
    assert err.rule == "everyone" and err.field == "rules"
    assert "'recent'" in str(err)


def test_duplicate_id() -> None:
    err = error_for(scheme_doc(rule("vip", r=[5, 5]), rule("vip", r=[4, 4]), rule("rest")))
    assert err.rule == "vip" and err.field == "id"
    assert "duplicate" in str(err) and "#1" in str(err) and "#2" in str(err)


@pytest.mark.parametrize("bad_id", ["VIP", "big-spender", "9lives", "a__b", "_x", "x" * 65, ""])
def test_bad_rule_id(bad_id: str) -> None:
    err = error_for(scheme_doc(rule(bad_id, r=[5, 5]), rule("rest")))
    assert err.field == "id"


def test_missing_zh_tw_name() -> None:
    bad = rule("vip", r=[5, 5])
    bad["name"] = {"en": "VIP"}
    err = error_for(scheme_doc(bad, rule("rest")))
    assert err.rule == "vip" and err.field == "name.zh-TW"
    assert "'vip'" in str(err) and "zh-TW" in str(err)
    bad["name"] = "VIP"  # a plain string is English only
    err = error_for(scheme_doc(bad, rule("rest")))
    assert err.rule == "vip" and err.field == "name.zh-TW"


def test_missing_scheme_zh_tw_name() -> None:
    err = error_for(scheme_doc(rule("rest"), name={"en": "Test"}))
    assert err.field == "name.zh-TW"


@pytest.mark.parametrize("missing", ["name", "description", "action"])
def test_missing_rule_text(missing: str) -> None:
    bad = rule("vip", r=[5, 5])
    del bad[missing]
    err = error_for(scheme_doc(bad, rule("rest")))
    assert err.rule == "vip" and err.field == missing


def test_no_rules() -> None:
    assert error_for(scheme_doc()).field == "rules"


def test_bucket_count_out_of_range_is_named() -> None:
    err = error_for(scheme_doc(rule("rest")), buckets=11)
    assert err.field == "scoring.buckets"


def test_other_bucket_count_scheme() -> None:
    s = parse_scheme(scheme_doc(rule("top", r=[7, 7]), rule("rest"), buckets=7), 7)
    assert s.classify(Profile(7, 1, 1, None, 1, True, False)).id == "top"


def test_flags_must_be_booleans() -> None:
    err = error_for(scheme_doc(rule("vip", has_orders="yes"), rule("rest")))
    assert err.rule == "vip" and err.field == "has_orders"


def test_bad_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('id = "x"\n[[rules]\n', encoding="utf-8")
    with pytest.raises(SchemeError, match="TOML"):
        load_scheme(str(path), 5)


# -- random schemes: compiled classifier == first match, and validation == brute force ---------

_KEYS = ("r", "f", "m", "i", "fm", "orders", "has_orders", "has_interactions")


def _condition(key: str, buckets: int) -> st.SearchStrategy[Any]:
    if key in ("has_orders", "has_interactions"):
        return st.booleans()
    if key == "orders":
        return st.one_of(
            st.tuples(st.integers(0, 4), st.integers(0, 4)).map(sorted),
            st.tuples(st.integers(0, 1500), st.integers(0, 1500)).map(sorted),
            st.fixed_dictionaries({"min": st.integers(0, 1500)}),
        )
    return st.tuples(st.integers(1, buckets), st.integers(1, buckets)).map(sorted)


def _conditions(buckets: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.lists(st.sampled_from(_KEYS), min_size=1, max_size=4, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: _condition(k, buckets) for k in keys})
    )


def _profiles(buckets: int, order_counts: set[int]) -> list[Profile]:
    scores = range(1, buckets + 1)
    out: list[Profile] = []
    for i in [None, *scores]:
        out.append(Profile(None, None, None, i, 0, False, i is not None))
        for r, f, m, o in product(scores, scores, scores, sorted(order_counts)):
            out.append(Profile(r, f, m, i, o, True, i is not None))
    return out


def _order_counts(conditions: list[dict[str, Any]]) -> set[int]:
    counts = {0, 1, 10**6}
    for c in conditions:
        o = c.get("orders")
        if isinstance(o, list):
            counts |= {o[0], o[1], o[1] + 1, max(0, o[0] - 1)}
        elif isinstance(o, dict):
            counts |= {o["min"], max(0, o["min"] - 1)}
    return counts


def _alone(raw_rule: dict[str, Any], buckets: int) -> SegmentRule | None:
    """The rule as a SegmentRule, or None if it cannot hold for anyone even on its own."""
    try:
        doc = scheme_doc(raw_rule, rule("zz_rest"), buckets=buckets)
        return parse_scheme(doc, buckets).rules[0]
    except SchemeError:
        return None


@settings(max_examples=60, deadline=None)
@given(data=st.data(), buckets=st.sampled_from([3, 3, 4]))
def test_random_schemes_classify_and_validate_like_brute_force(
    data: st.DataObject, buckets: int
) -> None:
    conditions = data.draw(st.lists(_conditions(buckets), min_size=1, max_size=5))
    raw_rules = [rule(f"r{j}", **c) for j, c in enumerate(conditions)]
    doc = scheme_doc(*raw_rules, rule("rest"), buckets=buckets)
    rules = [_alone(r, buckets) for r in raw_rules]
    catch_all = parse_scheme(scheme_doc(rule("rest"), buckets=buckets), buckets).rules[0]
    live = tuple(r for r in [*rules, catch_all] if r is not None)

    profiles = _profiles(buckets, _order_counts(conditions))
    winners = {first_match(live, p).id for p in profiles}
    try:
        scheme = parse_scheme(doc, buckets)
    except SchemeError as err:
        event("rejected")
        # the rule it names really is unreachable, and the error says which one
        assert err.rule is not None and err.rule not in winners, (str(err), winners)
        assert err.field or err.rule == "rest"
        return
    event("valid")
    assert winners == set(scheme.ids)  # validation accepted it, so every rule is reachable
    for p in profiles:
        assert scheme.classify(p) is first_match(scheme.rules, p)


def test_rule_covering_everyone_names_its_field() -> None:
    err = error_for(scheme_doc(rule("anyone", orders={"min": 0}), rule("rest")))
    assert err.field, str(err)
    assert err.rule == "anyone" and err.field == "orders"
