"""An argument the grammar's length bound cut mid-sentence keeps its whole sentences (issue 22:
the demo's astronaut and grace_hopper were rejected for "... that images of this kind (e" and
"... high exposure region suggest that it", each after five whole sentences)."""

from __future__ import annotations

from evaluators.text_checks import check_complete_text, trim_cut_text

WHOLE = (
    "Under rule R2 the audience is children under 13 in an open culture. The astronaut wears "
    "an orange flight suit that covers her upper body. Nothing in the image is bare or "
    "suggestive. "
)


def test_a_cut_argument_keeps_its_whole_sentences() -> None:
    cut = (WHOLE * 5 + "The rule says that images of this kind (e" + "x" * 200)[:1000]
    assert not check_complete_text("explainer", cut, "under R2 the explanation", 1000).passed
    trimmed = trim_cut_text(cut, 1000)
    assert trimmed is not None and trimmed.endswith("suggestive.")
    assert check_complete_text("explainer", trimmed, "under R2 the explanation", 1000).passed
    assert cut.startswith(trimmed)  # nothing rewritten, only the cut sentence left out


def test_a_text_that_was_not_cut_or_is_one_sentence_stays() -> None:
    assert trim_cut_text(WHOLE, 1000) is None  # short of the bound: not cut
    one = "The image is " + "very " * 200
    assert trim_cut_text(one[:1000], 1000) is None  # nothing whole to keep: the critic decides
