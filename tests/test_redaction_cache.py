"""Issue 28: the environment's secrets are computed once per state of the environment, and a
long text's redaction is remembered; neither may ever answer for an environment or a set of
secrets that changed since (``data/redaction.py``)."""

from __future__ import annotations

import os

import pytest

from data import redaction
from data.redaction import REDACTED, known_secrets, redact, register_key_env

SECRET = "cachetest-secret-value-0123456789"
OTHER = "cachetest-other-value-9876543210"


def test_known_secrets_follow_every_change_of_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CACHETEST_API_KEY", raising=False)
    assert SECRET not in known_secrets()
    assert SECRET not in known_secrets()  # asked again: answered from the cache

    monkeypatch.setenv("CACHETEST_API_KEY", SECRET)
    assert SECRET in known_secrets()

    monkeypatch.setenv("CACHETEST_API_KEY", OTHER)  # same name, new value
    assert OTHER in known_secrets()
    assert SECRET not in known_secrets()

    monkeypatch.delenv("CACHETEST_API_KEY")
    assert OTHER not in known_secrets()


def test_known_secrets_follow_a_newly_registered_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHETEST_GATEWAY_CREDENTIAL", SECRET)  # no key-like name
    assert SECRET not in known_secrets()
    register_key_env("CACHETEST_GATEWAY_CREDENTIAL")
    assert SECRET in known_secrets()


def test_known_secrets_with_extra_values_keep_the_order_longest_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CACHETEST_API_KEY", SECRET)
    longer = SECRET + "-longer"
    assert known_secrets({longer}).index(longer) < known_secrets({longer}).index(SECRET)
    assert longer not in known_secrets()  # an extra value stays with the call that gave it
    assert "short" not in known_secrets({"short"})  # under 8 characters: never a secret


def test_known_secrets_are_a_fresh_list_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHETEST_API_KEY", SECRET)
    first = known_secrets()
    first.clear()  # a caller may do what it likes with its list
    assert SECRET in known_secrets()


def test_a_remembered_redaction_is_never_used_for_other_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = f"prefix {SECRET} suffix"
    monkeypatch.delenv("CACHETEST_API_KEY", raising=False)
    assert redact(text) == text  # not a secret yet: remembered unchanged

    monkeypatch.setenv("CACHETEST_API_KEY", SECRET)
    assert SECRET not in redact(text)
    assert REDACTED in redact(text)

    monkeypatch.delenv("CACHETEST_API_KEY")
    assert redact(text) == text
    assert SECRET not in redact(text, [SECRET])  # explicit secrets: their own memo


def test_a_remembered_redaction_is_the_same_as_a_fresh_one() -> None:
    texts = [
        "Authorization: Bearer abcdef0123456789abcdef " + "z" * 300,
        "see https://user:pa55word@example.com/x " + "z" * 300,
        "api_key=abc123def456ghi " + "z" * 300,
        # an obviously made-up key, assembled so no scanner takes the source for a real one
        "a key " + "sk-" + "abcdefghijklmnop" + "0123456789" + " in the middle " + "z" * 300,
        "nothing to hide " * 40,
    ]
    for text in texts:
        fresh = redaction._redact(text, tuple(known_secrets()))
        assert redact(text) == fresh  # first: computed
        assert redact(text) == fresh  # second: remembered


def test_the_memo_starts_over_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redaction, "_MEMO_MAX_CHARS", 1000)
    memo = redaction._RedactionMemo()
    for i in range(10):
        memo.put(f"{i}" * 300, "done")
    assert memo.get("9" * 300) == "done"
    assert memo.get("0" * 300) is None  # forgotten when the memo started over
    assert sum(len(t) for t in memo._done) <= 1000

    monkeypatch.setattr(redaction, "_MEMO_MAX_TEXTS", 5)
    memo = redaction._RedactionMemo()
    for i in range(7):
        memo.put(f"t{i}", "done")
    assert len(memo._done) <= 5 and memo.get("t6") == "done"


def test_the_environment_cache_sees_a_value_set_through_os_environ() -> None:
    name = "CACHETEST_DIRECT_TOKEN"
    try:
        assert SECRET not in known_secrets()
        os.environ[name] = SECRET
        assert SECRET in known_secrets()
    finally:
        os.environ.pop(name, None)
    assert SECRET not in known_secrets()


def test_the_written_out_substring_tests_hold_exactly_the_markers_and_words() -> None:
    for marker in redaction._KEY_MARKERS:
        assert redaction._has_key_marker(f"a {marker} b")
    for word in redaction._ASSIGNMENT_WORDS:
        assert redaction._has_assignment_word(f"a {word} b")
    # and nothing else: every marker and word has been removed from the text below
    assert not redaction._has_key_marker("sk_ hf- gh_ xo AKI AIz ghx_")
    assert not redaction._has_assignment_word("ke tokn secre passwor authorisation")
    import inspect

    source = inspect.getsource(redaction._has_key_marker)
    assert source.count(" in text") == len(redaction._KEY_MARKERS)
    source = inspect.getsource(redaction._has_assignment_word)
    assert source.count(" in lowered") == len(redaction._ASSIGNMENT_WORDS)


def test_the_store_frame_redacts_every_string_column_by_column(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from data.store.store import redacted_frame

    monkeypatch.setenv("CACHETEST_API_KEY", SECRET)
    rows = [{"a": f"x {SECRET}", "b": 1}, {"b": 2, "c": [SECRET]}, {"a": "plain"}]
    table = redacted_frame(rows).to_pylist()  # an Arrow table
    assert table == [
        {"a": f"x {REDACTED}", "b": 1, "c": None},
        {"a": None, "b": 2, "c": [SECRET]},  # only strings are texts (a list is not walked)
        {"a": "plain", "b": None, "c": None},
    ]
    mixed = redacted_frame([{"a": 1}, {"a": f"one {SECRET}"}])  # Arrow cannot type it: pandas
    assert list(mixed["a"]) == [1, f"one {REDACTED}"]


def test_a_redactor_answers_as_redact_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from data.redaction import redactor

    monkeypatch.setenv("CACHETEST_API_KEY", SECRET)
    texts = ["", "plain", f"a {SECRET} b", "token=abcdef123456789", "Bearer abcdef0123456789xyz"]
    one = redactor()
    for text in texts:
        assert one(text) == redact(text)
        assert one(text) == redact(text)  # remembered
    assert redactor([OTHER])(f"x {OTHER}") == f"x {REDACTED}"
