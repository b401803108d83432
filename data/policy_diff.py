"""What differs between two policies: term, attributes, categories, verdicts per rule variant.

Made for a moderator comparing a drafted policy with a hand-written one, where the same idea
often has two names: categories are paired by name first, then, among the rest, by identical
attribute product (`card_game` in one file and `card_game_no_stakes` in the other both fixing
`object=playing_cards, activity=playing` are the same category renamed). Rule variants are
paired by id. Verdicts are compared as flagged / not flagged, since the two files may name
their labels differently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data.policy_models import Policy


@dataclass
class PolicyDiff:
    """Differences between policy ``a`` and policy ``b``; each entry is one line for people."""

    a: str
    b: str
    term: list[str] = field(default_factory=list)
    attributes: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    verdicts: dict[str, list[str]] = field(default_factory=dict)
    """Rule id -> the categories (paired) whose verdict differs, or that only one side rules on."""
    pairs: dict[str, str] = field(default_factory=dict)
    """Category of ``a`` -> its counterpart in ``b``."""

    @property
    def same(self) -> bool:
        return not (
            self.term or self.attributes or self.categories or self.rules
            or any(self.verdicts.values())
        )  # fmt: skip

    def as_dict(self) -> dict[str, object]:
        return {
            "a": self.a, "b": self.b, "same": self.same, "term": self.term,
            "attributes": self.attributes, "categories": self.categories,
            "category_pairs": self.pairs, "rules": self.rules, "verdicts": self.verdicts,
        }  # fmt: skip


def diff_policies(a: Policy, b: Policy) -> PolicyDiff:
    out = PolicyDiff(a=a.name, b=b.name)
    if a.term != b.term:
        out.term.append(f"term: '{a.term}' -> '{b.term}'")
    out.attributes = _attribute_lines(a, b)
    out.pairs = _pair_categories(a, b)
    out.categories = _category_lines(a, b, out.pairs)
    out.rules, out.verdicts = _rule_lines(a, b, out.pairs)
    return out


def _attribute_lines(a: Policy, b: Policy) -> list[str]:
    lines = [f"- attribute {n}: {', '.join(a.attributes[n].values)}" for n in a.attributes
             if n not in b.attributes]  # fmt: skip
    lines += [f"+ attribute {n}: {', '.join(b.attributes[n].values)}" for n in b.attributes
              if n not in a.attributes]  # fmt: skip
    for name in (n for n in a.attributes if n in b.attributes):
        old, new = a.attributes[name].values, b.attributes[name].values
        gone = [v for v in old if v not in new]
        added = [v for v in new if v not in old]
        if gone or added:
            change = [*(f"-{v}" for v in gone), *(f"+{v}" for v in added)]
            lines.append(f"~ attribute {name}: values {' '.join(change)}")
    return lines


def _pair_categories(a: Policy, b: Policy) -> dict[str, str]:
    pairs = {key: key for key in a.categories if key in b.categories}
    taken = set(pairs.values())
    by_product: dict[frozenset[tuple[str, str]], str] = {}
    for key, category in b.categories.items():
        if key not in taken:
            by_product.setdefault(frozenset(category.attributes.items()), key)
    for key, category in a.categories.items():
        if key in pairs:
            continue
        match = by_product.pop(frozenset(category.attributes.items()), None)
        if match is not None:
            pairs[key] = match
    return pairs


def _category_lines(a: Policy, b: Policy, pairs: dict[str, str]) -> list[str]:
    matched_b = set(pairs.values())
    lines = [f"- category {k}: {_product(a, k)}" for k in a.categories if k not in pairs]
    lines += [f"+ category {k}: {_product(b, k)}" for k in b.categories if k not in matched_b]
    for key_a, key_b in pairs.items():
        if key_a != key_b:
            lines.append(f"~ category {key_a} -> {key_b}: same product {_product(a, key_a)}")
        elif a.categories[key_a].attributes != b.categories[key_b].attributes:
            lines.append(f"~ category {key_a}: {_product(a, key_a)} -> {_product(b, key_b)}")
    return lines


def _rule_lines(
    a: Policy, b: Policy, pairs: dict[str, str]
) -> tuple[list[str], dict[str, list[str]]]:
    lines = [f"- rule {r}: {_audience(a, r)}" for r in a.rules if r not in b.rules]
    lines += [f"+ rule {r}: {_audience(b, r)}" for r in b.rules if r not in a.rules]
    verdicts: dict[str, list[str]] = {}
    for rule in (r for r in a.rules if r in b.rules):
        if _audience(a, rule) != _audience(b, rule):
            lines.append(f"~ rule {rule}: audience {_audience(a, rule)} -> {_audience(b, rule)}")
        changed: list[str] = []
        for key_a, key_b in pairs.items():
            flag_a = a.is_flagged(a.verdict(key_a, rule))
            flag_b = b.is_flagged(b.verdict(key_b, rule))
            if flag_a != flag_b:
                name = key_a if key_a == key_b else f"{key_a} / {key_b}"
                changed.append(f"~ {name}: {a.verdict(key_a, rule)} -> {b.verdict(key_b, rule)}")
        verdicts[rule] = changed
    return lines, verdicts


def _product(policy: Policy, key: str) -> str:
    fixed = policy.categories[key].attributes
    return "{" + ", ".join(f"{n}={v}" for n, v in fixed.items()) + "}"


def _audience(policy: Policy, rule: str) -> str:
    audience = policy.rules[rule].audience
    return f"{audience.age_group} / {audience.culture}"
