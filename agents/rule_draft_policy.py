"""A rule drafter's answer as a policy file, and the checks only a draft needs.

Everything here is code, not the model: names become identifiers the same way everywhere
(`Slot Machine` -> `slot_machine`, in a value and in every reference to it), the verdict labels
come from the term, and each rule variant's verdict table is assembled by walking the categories
in order, so a category the model gave no verdict is *absent* from the table and the loader says
so. The YAML is written faithfully: a name the model used twice becomes a key written twice, which
the loader reports with both lines instead of one copy silently winning.

`attribute_products` enumerates the full attribute product from the drafted attributes;
`coverage` tells which products no category covers and where two categories that overlap give
different verdicts, for the moderator to review (information, not errors: the shipped policies
overlap too).
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from agents.rule_draft_schema import (
    DraftAttribute,
    DraftRuling,
    DraftValue,
    PolicyDraft,
    PolicyOutline,
)
from data.policy_models import PolicyIssue
from data.yaml_lines import LocatedYaml, format_path

#: value names that may appear in several attributes without making them overlap
_SHARED_VALUES = frozenset({"none", "other", "normal", "unknown", "neutral"})
_PLAIN_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_YAML_WORDS = frozenset({"true", "false", "null", "yes", "no", "on", "off", "y", "n"})


@dataclass(frozen=True)
class Audience:
    """One audience a moderator asked for (``--audiences``)."""

    age_group: str
    culture: str

    def __str__(self) -> str:
        return f"{self.age_group} / {self.culture}"

    @property
    def key(self) -> tuple[str, str]:
        return (_folded(self.age_group), _folded(self.culture))


def parse_audiences(text: str) -> list[Audience]:
    """``"under 13/any; 13 and over/open"`` -> audiences; ValueError naming the bad part."""
    out: list[Audience] = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        age, slash, culture = part.partition("/")
        if not slash or not age.strip() or not culture.strip():
            raise ValueError(f"bad audience {part!r}: expected AGE_GROUP/CULTURE")
        out.append(Audience(age.strip(), culture.strip()))
    if not out:
        raise ValueError(f"no audience in {text!r}: expected AGE_GROUP/CULTURE; ...")
    return out


def identifier(name: str) -> str:
    """A model's name as a policy identifier: lower case, runs of other characters -> `_`."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    return f"v_{slug}" if slug[:1].isdigit() else slug


def rule_id(name: str) -> str:
    return re.sub(r"\s+", "_", name.strip())


def phrase(text: str) -> str:
    """A synonym as the loader's phrase: lower case, letters/digits/spaces/'/- only."""
    cleaned = re.sub(r"[^\w\s'\-]|_", " ", text.lower())
    return " ".join(cleaned.split()).strip("'-").strip()


def labels(term: str) -> tuple[str, str]:
    """(flagged label, not-flagged label) from the term: `gambling` / `not gambling`."""
    term = " ".join(term.split())
    return term, f"not {term}"


def render_policy(draft: PolicyDraft, *, notes: str, header: Sequence[str]) -> str:
    """The draft as a policy file (``header`` lines become comments at the top)."""
    yes, no = labels(draft.term)
    lines = [f"# {line}" for line in header]
    lines += ["schema_version: 1", f"title: {_scalar(draft.title)}", f"term: {_scalar(yes)}"]
    lines += [f"description: {_scalar(draft.description)}", f"notes: {_scalar(notes)}", ""]
    lines += ["verdicts:", f"  {_key(yes)}:", "    flagged: true"]
    flagged_text = f"The image is {yes} for the audience of the rule variant."
    lines += [f"    description: {_scalar(flagged_text)}"]
    lines += [f"  {_key(no)}:", "    flagged: false"]
    lines += [f"    description: {_scalar('The image is acceptable for that audience.')}"]
    lines += ["", "attributes:"]
    for attribute in draft.attributes:
        lines += [f"  {_key(identifier(attribute.name))}:"]
        lines += [f"    description: {_scalar(attribute.description)}", "    values:"]
        for value in attribute.values:
            synonyms = list(dict.fromkeys(p for p in map(phrase, value.synonyms) if p))
            lines += [f"      {_key(identifier(value.name))}:"]
            lines += [f"        description: {_scalar(value.description)}"]
            lines += [f"        synonyms: [{', '.join(_scalar(s) for s in synonyms)}]"]
    lines += ["", "categories:"]
    for category in draft.categories:
        parts = ", ".join(
            f"{_key(identifier(p.attribute))}: {_scalar(identifier(p.value))}"
            for p in category.product
        )
        lines += [f"  {_key(identifier(category.name))}:", f"    attributes: {{{parts}}}"]
        lines += [f"    description: {_scalar(category.description)}"]
    lines += ["", "rules:"]
    for rule in draft.rules:
        rid = rule_id(rule.id)
        audience = f"{{age_group: {_scalar(rule.age_group)}, culture: {_scalar(rule.culture)}}}"
        lines += [f"  {_key(rid)}:", f"    audience: {audience}"]
        lines += [f"    description: {_scalar(rule.description)}", "    verdicts:"]
        for key, ruling in _rulings_for(draft, rid):
            label = yes if ruling.flagged else no
            lines += [
                f"      {_key(key)}: {{verdict: {_scalar(label)}, "
                f"reason: {_scalar(ruling.reason)}}}"
            ]
    return "\n".join(lines) + "\n"


def _rulings_for(draft: PolicyDraft, rid: str) -> Iterator[tuple[str, DraftRuling]]:
    """The verdict table of one rule variant, category by category, as the draft gives it: a
    category without a ruling for the rule yields nothing (the loader reports the hole)."""
    for category in draft.categories:
        for ruling in category.verdicts:
            if rule_id(ruling.rule) == rid:
                yield identifier(category.name), ruling


def draft_issues(
    draft: PolicyDraft, doc: LocatedYaml, *, file: str, audiences: Sequence[Audience] = ()
) -> list[PolicyIssue]:
    """What a draft gets wrong that the loader cannot see in the file it was written to:
    verdicts for rule variants that do not exist, attributes that are no aspect of the image
    (named `none`, or the audience's), attributes that share values (they are not
    orthogonal), and audiences the moderator asked for that no rule variant serves."""
    found: list[tuple[tuple[str, ...], str]] = []
    rules = [rule_id(r.id) for r in draft.rules]
    for category in draft.categories:
        for ruling in category.verdicts:
            if rule_id(ruling.rule) not in rules:
                found.append((
                    ("categories", identifier(category.name)),
                    f"a verdict for rule variant '{ruling.rule}', which is not in rules "
                    f"(rules are: {', '.join(rules)}); give one verdict per rule variant",
                ))  # fmt: skip
    found += _not_attributes(draft)
    found += _shared_values(draft)
    found += _audience_problems(draft, audiences)
    return [
        PolicyIssue(file=file, line=doc.line_of(path), field=format_path(path), message=message)
        for path, message in found
    ]


def outline_issues(
    outline: PolicyOutline, *, file: str, audiences: Sequence[Audience] = ()
) -> list[PolicyIssue]:
    """What must be right in the first of two asks before the second's schema is built from
    it: names each used once (the loader would see a repeated one only in the finished file,
    and the schema would fold it), attributes that are aspects of the image (not `none`, not
    the audience) and share no value, the audiences asked for. Each message says what to do,
    in words a small model can act on. No file exists yet, so the issues carry no line."""
    found = (
        _repeated_names(outline)
        + _not_attributes(outline)
        + _not_values(outline)
        + _shared_values(outline)
        + _same_audiences(outline)
        + _audience_problems(outline, audiences)
    )
    return [
        PolicyIssue(file=file, line=None, field=format_path(path), message=message)
        for path, message in found
    ]


def _repeated_names(outline: PolicyOutline) -> list[tuple[tuple[str, ...], str]]:
    found: list[tuple[tuple[str, ...], str]] = []
    attributes = Counter(identifier(a.name) for a in outline.attributes)
    for name, times in attributes.items():
        if times > 1:
            found.append((("attributes", name), f"attribute '{name}' is named {times} times"))
    for attribute in outline.attributes:
        name = identifier(attribute.name)
        values = Counter(identifier(v.name) for v in attribute.values)
        for value, times in values.items():
            if times > 1:
                found.append((
                    ("attributes", name, "values", value),
                    f"value '{value}' is listed {times} times",
                ))  # fmt: skip
    for rule, times in Counter(rule_id(r.id) for r in outline.rules).items():
        if times > 1:
            found.append((("rules", rule), f"rule variant '{rule}' is defined {times} times"))
    return found


#: attribute names that name no aspect of an image: value names, and the policy's own fields
#: (qwen2.5-1.5b wrote attributes `description` and `rules`, values `id`, `age_group`)
#: (not `other`: the shipped icm_sexy has an attribute of that name)
_VALUE_WORDS = frozenset({"none", "any", "unknown", "nothing", "all", "na", "n_a"})
_FIELD_WORDS = frozenset({
    "description", "rules", "rule", "id", "term", "title", "categories", "category", "verdict",
    "verdicts", "values", "value", "synonyms", "name", "attributes", "attribute",
})  # fmt: skip
#: words in an attribute's name (or a value's) that make it the audience's, not the image's
_AUDIENCE_WORDS = frozenset({
    "age", "ages", "age_group", "age_groups", "audience", "audiences", "viewer", "viewers",
    "culture", "cultures", "cultural", "country", "countries", "jurisdiction", "legality",
})  # fmt: skip
# (not `region`: the shipped icm_sexy's `region` is the part of the body the image frames)


def audience_attribute(outline: PolicyOutline, name: str, values: Sequence[str]) -> bool:
    """Whether an attribute describes who sees the image rather than the image: its name is
    an audience word (`age_group`, `culture`, `viewer_age`...), or a value of it is one
    (`age_group`) or the age group of one of the outline's rule variants (`under_13`).
    Cultures are not compared: a culture `conservative` may well be a value of clothing."""
    words = set(name.split("_")) | {name}
    if words & _AUDIENCE_WORDS or set(values) & _AUDIENCE_WORDS:
        return True
    audience_values = {identifier(r.age_group) for r in outline.rules} - _SHARED_VALUES - {"any"}
    return any(v in audience_values for v in values)


def _not_aspect(outline: PolicyOutline, name: str, values: Sequence[str]) -> str | None:
    """Why an attribute is no aspect of the image, in the repair's words; None if it is."""
    if name in _VALUE_WORDS:
        return (
            f"'{name}' is not an aspect of the image, it is a value name: remove the attribute "
            f"'{name}', or rename it after what its values describe (such as object, action "
            "or setting)"
        )
    if name in _FIELD_WORDS:
        return (
            f"'{name}' is a field of the policy, not an aspect of the image: remove the "
            f"attribute '{name}', or rename it "
            "after what its values show (such as object, action or setting)"
        )
    if audience_attribute(outline, name, values):
        return (
            f"attribute '{name}' describes the audience (who sees the image), not the image: "
            "audiences are the rule variants' age_group and culture. Remove the attribute "
            f"'{name}'; attributes describe only what the image shows"
        )
    return None


#: value names that name an aspect or a field, not something an image shows (qwen wrote the
#: values setting and attribute of the attribute object)
_ASPECT_WORDS = _FIELD_WORDS | {"object", "objects", "action", "actions", "activity", "setting"}


def _not_a_value(outline: PolicyOutline, attribute: str, value: str) -> str | None:
    """Why a value is no value: it names an aspect (its own attribute's or another's)."""
    named = {identifier(a.name) for a in outline.attributes} - _VALUE_WORDS - _SHARED_VALUES
    if value not in _ASPECT_WORDS | named:
        return None
    return (
        f"value '{value}' of attribute '{attribute}' names an aspect, not something the image "
        f"shows: replace it with a thing the rule text names, or remove it"
    )


def _not_values(outline: PolicyOutline) -> list[tuple[tuple[str, ...], str]]:
    found: list[tuple[tuple[str, ...], str]] = []
    for attribute in outline.attributes:
        name = identifier(attribute.name)
        if _not_aspect(outline, name, [identifier(v.name) for v in attribute.values]):
            continue  # reported as a whole
        for value in attribute.values:
            why = _not_a_value(outline, name, identifier(value.name))
            if why is not None:
                found.append((("attributes", name, "values", identifier(value.name)), why))
    return found


def _not_attributes(outline: PolicyOutline) -> list[tuple[tuple[str, ...], str]]:
    """Attributes that are no aspect of the image: named like a value or a policy field, or
    the audience's."""
    found: list[tuple[tuple[str, ...], str]] = []
    for attribute in outline.attributes:
        name = identifier(attribute.name)
        why = _not_aspect(outline, name, [identifier(v.name) for v in attribute.values])
        if why is not None:
            found.append((("attributes", name), why))
    return found


def _same_audiences(outline: PolicyOutline) -> list[tuple[tuple[str, ...], str]]:
    """Two rule variants for one audience: a rule variant is an audience, not a clause."""
    found: list[tuple[tuple[str, ...], str]] = []
    first: dict[tuple[str, str], str] = {}
    for rule in outline.rules:
        key = (_folded(rule.age_group), _folded(rule.culture))
        rid = rule_id(rule.id)
        if key in first and first[key] != rid:
            found.append((
                ("rules", rid),
                f"rule variants '{first[key]}' and '{rid}' have the same audience "
                f"'{rule.age_group.strip()} / {rule.culture.strip()}': each rule variant is a "
                f"different audience (age group and culture). Remove '{rid}' and say what it "
                f"says in the description of '{first[key]}'",
            ))  # fmt: skip
        first.setdefault(key, rid)
    return found


def _shared_values(outline: PolicyOutline) -> list[tuple[tuple[str, ...], str]]:
    """Attributes sharing a value name: they are not orthogonal. The message names the value
    and both attributes and says which one keeps it (the first to list it)."""
    found: list[tuple[tuple[str, ...], str]] = []
    owner: dict[str, str] = {}
    for attribute in outline.attributes:
        name = identifier(attribute.name)
        if _not_aspect(outline, name, [identifier(v.name) for v in attribute.values]):
            continue  # reported as such; its values are not worth a second message
        for value in attribute.values:
            key = identifier(value.name)
            if key in _SHARED_VALUES:
                continue
            if key in owner and owner[key] != name:
                found.append((
                    ("attributes", name, "values", key),
                    f"value '{key}' is also a value of attribute '{owner[key]}': attributes "
                    f"must be orthogonal (each one a different aspect of the image). Keep "
                    f"'{key}' only in '{owner[key]}' and remove it from '{name}'",
                ))  # fmt: skip
            elif (near := _nearly(key, name, owner)) is not None:
                found.append((
                    ("attributes", name, "values", key),
                    f"value '{key}' is nearly the value '{near}' of attribute '{owner[near]}' "
                    f"(a misspelt value is still the same value): keep '{near}' only in "
                    f"'{owner[near]}' and remove '{key}' from '{name}'",
                ))  # fmt: skip
            owner.setdefault(key, name)
    return found


def _nearly(key: str, attribute: str, owner: dict[str, str]) -> str | None:
    """An earlier attribute's value that ``key`` is a near copy of (qwen wrote `casin` for the
    setting when told `casino` was already an object): names of four letters or more, the same
    first letter, at most two letters longer or shorter, and one the other's start or 90 %
    alike. `playing` and `playing_cards` are not near copies, nor `setting` and `betting`."""
    if len(key) < 4:
        return None
    for other, holder in owner.items():
        if holder == attribute or len(other) < 4 or other in _SHARED_VALUES:
            continue
        if abs(len(other) - len(key)) > 2 or key[0] != other[0]:
            continue
        if key.startswith(other) or other.startswith(key):
            return other
        if SequenceMatcher(None, key, other).ratio() >= 0.9:
            return other
    return None


def fix_outline(outline: PolicyOutline) -> tuple[PolicyOutline, list[str]]:
    """The mechanical part of an outline's issues, done by code once its repairs are spent:
    an attribute that is no aspect of the image (named `none` or like a policy field, or the
    audience's), a repeated attribute, a repeated value, a value that names an aspect and a
    value already listed by an earlier attribute are dropped; an attribute these drops leave
    with fewer than two values is dropped (it tells no images apart), while one remains;
    a rule variant for an audience an earlier one has is dropped. Returns the fixed outline
    and a sentence per change (nothing silent); what is left (audiences not asked for...)
    stays for the file's checks."""
    fixes: list[str] = []
    aspects = []
    for attribute in outline.attributes:
        name = identifier(attribute.name)
        why = _not_aspect(outline, name, [identifier(v.name) for v in attribute.values])
        if why is None:
            aspects.append(attribute)
        else:
            fixes.append(f"dropped attribute '{name}': {_short_reason(name, why)}")
    if not aspects:  # nothing would be left: keep them all, the checks report them
        aspects, fixes = list(outline.attributes), []
    seen: set[str] = set()
    owner: dict[str, str] = {}
    kept: list[DraftAttribute] = []
    for attribute in aspects:
        name = identifier(attribute.name)
        if name in seen:
            fixes.append(f"dropped the second attribute named '{name}'")
            continue
        seen.add(name)
        keep: list[DraftValue] = []
        for value in attribute.values:
            key = identifier(value.name)
            if key in {identifier(v.name) for v in keep}:
                fixes.append(f"dropped value '{key}' (listed twice) from attribute '{name}'")
            elif _not_a_value(outline, name, key) is not None:
                fixes.append(f"dropped value '{key}' (it names an aspect) from attribute '{name}'")
            elif key in owner and key not in _SHARED_VALUES:
                fixes.append(
                    f"dropped value '{key}' (a value of attribute '{owner[key]}' already) from "
                    f"attribute '{name}'"
                )
            elif key not in _SHARED_VALUES and (near := _nearly(key, name, owner)) is not None:
                fixes.append(
                    f"dropped value '{key}' (nearly '{near}', a value of attribute "
                    f"'{owner[near]}') from attribute '{name}'"
                )
            else:
                keep.append(value)
        if len(keep) < min(2, len(attribute.values)) and len(aspects) > 1:
            # (an attribute of one value is the model's, as the shipped icm_sexy's `subject`)
            fixes.append(f"dropped attribute '{name}': fewer than two values of its own left")
            continue
        for value in keep:
            owner.setdefault(identifier(value.name), name)
        kept.append(attribute.model_copy(update={"values": keep}))
    if not kept:
        kept = aspects[:1]
    rules = []
    served: dict[tuple[str, str], str] = {}
    for rule in outline.rules:
        audience = (_folded(rule.age_group), _folded(rule.culture))
        if audience in served:
            fixes.append(
                f"dropped rule variant '{rule_id(rule.id)}': the same audience "
                f"'{rule.age_group.strip()} / {rule.culture.strip()}' as '{served[audience]}'"
            )
            continue
        served[audience] = rule_id(rule.id)
        rules.append(rule)
    return outline.model_copy(update={"attributes": kept, "rules": rules}), fixes


def _short_reason(name: str, why: str) -> str:
    if name in _VALUE_WORDS:
        return "it is a value name, not an aspect of the image"
    if name in _FIELD_WORDS:
        return "it is a field of the policy, not an aspect of the image"
    return "it describes the audience, which the rule variants hold, not the image"


def _audience_problems(
    outline: PolicyOutline, audiences: Sequence[Audience]
) -> list[tuple[tuple[str, ...], str]]:
    """Audiences asked for that no rule variant serves, and rule variants nobody asked for."""
    if not audiences:
        return []
    found: list[tuple[tuple[str, ...], str]] = []
    served = {(_folded(r.age_group), _folded(r.culture)): rule_id(r.id) for r in outline.rules}
    wanted = {a.key for a in audiences}
    for audience in audiences:
        if audience.key not in served:
            found.append((("rules",), f"no rule variant for the audience '{audience}' (asked for)"))
    for rule in outline.rules:
        if (_folded(rule.age_group), _folded(rule.culture)) not in wanted:
            found.append((
                ("rules", rule_id(rule.id), "audience"),
                f"audience '{rule.age_group} / {rule.culture}' was not asked for (asked: "
                f"{'; '.join(str(a) for a in audiences)})",
            ))  # fmt: skip
    return found


def attribute_products(attributes: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of one value per attribute, in attribute and value order."""
    names = list(attributes)
    return [
        dict(zip(names, combo, strict=True)) for combo in itertools.product(*attributes.values())
    ]


@dataclass
class Coverage:
    """How a policy's categories cover the full attribute product."""

    products: int
    uncovered: list[dict[str, str]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    """`rule: category_a vs category_b` where two categories match one product with different
    verdicts (an image of that product gets whichever category the describer names)."""


def coverage(
    attributes: dict[str, list[str]],
    categories: dict[str, dict[str, str]],
    flagged: dict[str, dict[str, bool]],
) -> Coverage:
    """``categories``: name -> fixed values; ``flagged``: rule -> category -> flagged."""
    products = attribute_products(attributes)
    out = Coverage(products=len(products))
    conflicts: set[str] = set()
    for product in products:
        matching = [
            name for name, fixed in categories.items()
            if all(product.get(a) == v for a, v in fixed.items())
        ]  # fmt: skip
        if not matching:
            out.uncovered.append(product)
        for a, b in itertools.combinations(matching, 2):
            for rule, table in flagged.items():
                if a in table and b in table and table[a] != table[b]:
                    conflicts.add(f"{rule}: {a} vs {b}")
    out.conflicts = sorted(conflicts)
    return out


def render_product(product: dict[str, str]) -> str:
    return ", ".join(f"{a}={v}" for a, v in product.items())


def _folded(text: str) -> str:
    return " ".join(text.casefold().split())


def _scalar(value: str) -> str:
    """A YAML scalar that reads back as exactly ``value`` (JSON strings are YAML)."""
    return json.dumps(value, ensure_ascii=False)


def _key(name: str) -> str:
    if _PLAIN_KEY.match(name) and name.lower() not in _YAML_WORDS:
        return name
    return _scalar(name)
