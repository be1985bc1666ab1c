"""The A/B summary reads recorded counters; "up" follows the scheme's rule order."""

from __future__ import annotations

from consumers.api.variants import variants_doc

ORDER = ["champions", "loyal", "at_risk", "lost"]


def test_moves_up_and_down_per_arm() -> None:
    stats = {"delivered": 5, "delivered:a": 3, "delivered:b": 2, "dead_lettered:b": 1}
    moves = {"a|at_risk|loyal": 2, "a|at_risk|lost": 1, "b|at_risk|champions": 1, "b|-|lost": 4}
    doc = variants_doc({"win_back": (stats, moves)}, ORDER)
    arms = doc["rules"]["win_back"]["variants"]
    assert doc["rules"]["win_back"]["delivered"] == 5
    assert arms["a"] == {"delivered": 3, "dead_lettered": 0, "up": 2, "down": 1}
    assert arms["b"] == {"delivered": 2, "dead_lettered": 1, "up": 1, "down": 0}


def test_rules_without_variants_have_no_arms() -> None:
    doc = variants_doc({"call": ({"delivered": 2, "cooldown": 1}, {})}, ORDER)
    assert doc["rules"]["call"] == {"delivered": 2, "variants": {}}
