"""Issue 28: a template's rendering is remembered by the plain values it reads; it is never
reused for other values, another template text or values that can change in place."""

from __future__ import annotations

import hashlib

import jinja2
import pytest

from prompts import PromptTemplate, load_prompt


def _template(source: str, name: str = "t") -> PromptTemplate:
    return PromptTemplate(name, hashlib.sha256(source.encode()).hexdigest(), source)


def test_a_remembered_rendering_answers_only_for_the_same_values() -> None:
    t = _template("verdict {{ verdict }} for {{ term }}{% if strict %}, strictly{% endif %}")
    assert t.render(verdict="unsafe", term="sexy", strict=False) == "verdict unsafe for sexy"
    assert t.render(verdict="unsafe", term="sexy", strict=False) == "verdict unsafe for sexy"
    assert t.render(verdict="safe", term="sexy", strict=False) == "verdict safe for sexy"
    assert t.render(verdict="unsafe", term="sexy", strict=1) == "verdict unsafe for sexy, strictly"
    # 1 and True are equal dict keys; their renderings differ
    counted = _template("{{ n }}")
    assert counted.render(n=1) == "1"
    assert counted.render(n=True) == "True"
    assert counted.render(n=1.0) == "1.0"


def test_an_edited_template_text_is_rendered_from_its_own_text() -> None:
    before = _template("Old wording about {{ term }}.", name="same.system")
    after = _template("New wording about {{ term }}.", name="same.system")
    assert before.render(term="x") == "Old wording about x."
    assert after.render(term="x") == "New wording about x."
    assert before.sha256 != after.sha256  # the hash that goes into traces and cache keys


def test_values_that_can_change_in_place_are_rendered_each_time() -> None:
    t = _template("{% for item in items %}{{ item }};{% endfor %}")
    items = ["a"]
    assert t.render(items=items) == "a;"
    items.append("b")
    assert t.render(items=items) == "a;b;"


def test_a_missing_variable_still_raises_every_time() -> None:
    t = _template("{{ term }}", name="needs.term")
    assert t.render(term="x") == "x"
    for _ in range(2):
        with pytest.raises(jinja2.UndefinedError, match=r"prompts/needs\.term\.j2"):
            t.render()


def test_variables_the_template_does_not_read_do_not_matter() -> None:
    t = _template("fixed text")
    assert t.render(anything=["unhashable"]) == "fixed text"
    assert t._key({"anything": ["unhashable"]}) == ()


def test_a_template_that_includes_another_is_never_remembered() -> None:
    t = _template('{% include "critic.system.j2" %}')
    assert t._key({}) is None
    assert t.render() == load_prompt("critic.system").render()


def test_the_shipped_system_prompts_are_remembered() -> None:
    system = load_prompt("explainer.system")
    values = {"table_verdict": "unsafe", "term": "sexy"}
    assert system._key(values) is not None
    assert system.render(**values) == system._compiled.render(**values).strip()
