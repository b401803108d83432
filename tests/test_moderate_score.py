"""``icm moderate``'s score is the paper's: softmax over one Yes and one No token logit.

The models are config-built (finetune/synthetic.py) with a byte-level BPE we train in-process, so
the tokens are known: after LLaVA's ``ASSISTANT:`` the template emits `` Yes`` (``ĠYes``); after
Qwen2-VL's ``assistant\\n`` it emits ``Yes``, which this small vocabulary splits ``Y`` + ``es``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from data.policy import load_policy
from finetune import synthetic
from finetune.moderate import Moderator, Prediction, score_question


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i, size in enumerate([(50, 40), (64, 64)]):
        path = folder / f"{i}.png"
        Image.new("RGB", size, (60 * i, 90, 160)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def moderator(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    folder = synthetic.build_saved(request.param, tmp_path_factory.mktemp(request.param) / "m")
    return request.param, Moderator(str(folder))


EMITTED = {"llava": ("ĠYes", "ĠNo"), "qwen2_vl": ("Y", "No")}


def test_score_is_the_softmax_of_one_yes_and_one_no_logit(moderator, image_paths) -> None:
    family, mod = moderator
    tokens = mod.tokenizer.convert_ids_to_tokens([*mod.yes, *mod.no])
    assert tokens == list(EMITTED[family])  # exactly one token a side, as the template emits it
    policy = load_policy("icm_sexy")
    question = score_question(policy, "R1", mod.question)
    assert mod.question == "plain" and question == "Is the image sexy?"
    images = [Image.open(p).convert("RGB") for p in image_paths]
    scores = mod.scores(images, [question] * len(images))
    with torch.inference_mode():
        batch = mod._inputs(images, [question] * len(images))
        logits = mod.loaded.model(**batch, use_cache=False).logits[:, -1].float()
    yes_id = mod.tokenizer.convert_tokens_to_ids(EMITTED[family][0])
    no_id = mod.tokenizer.convert_tokens_to_ids(EMITTED[family][1])
    for row, score in enumerate(scores):
        logit_yes, logit_no = logits[row, yes_id].item(), logits[row, no_id].item()
        expected = 1.0 / (1.0 + torch.exp(torch.tensor(logit_no - logit_yes, dtype=torch.float64)))
        assert score == pytest.approx(float(expected), abs=1e-6)


def test_spellings_option_counts_whole_tokens_never_a_sub_word(moderator) -> None:
    _, mod = moderator
    spelled = Moderator(mod.model_path, loaded=mod.loaded, score_tokens="spellings")
    tok = mod.tokenizer
    for ids, words in ((spelled.yes, ("Yes", "yes", "YES")), (spelled.no, ("No", "no", "NO"))):
        assert ids
        for token_id in ids:
            assert tok.decode([token_id]).strip() in words  # a whole spelling, e.g. " Yes"
    # "YES" is "Y" + "E" + "S" here: its first piece never counts; nor does Qwen's emitted "Y".
    assert tok.convert_ids_to_tokens(tok.encode("YES", add_special_tokens=False))[0] == "Y"
    assert tok.convert_tokens_to_ids("Y") not in spelled.yes
    assert set(spelled.yes).isdisjoint(spelled.no)


def test_the_verdict_needs_a_score_above_the_threshold(moderator, image_paths) -> None:
    """As the ICM-Val script: sexy only when the score is strictly above 0.5."""
    _, mod = moderator

    class Fixed(Moderator):
        def __init__(self, score: float) -> None:
            self.__dict__.update(mod.__dict__)
            self.fixed = score

        def scores(self, images, questions):  # type: ignore[no-untyped-def]
            return [self.fixed] * len(images)

    policy = load_policy("icm_sexy")
    verdicts = {}
    for score in (0.5, 0.5000001):
        out: list[Prediction] = Fixed(score).moderate(
            image_paths[:1], policy, ["R1"], explain=False
        )
        verdicts[score] = out[0].verdict
    assert verdicts == {0.5: "not sexy", 0.5000001: "sexy"}
