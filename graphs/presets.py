"""Named presets: one name (``--preset paper``) that sets each command's options the paper's way.

Our pipeline and formats are the defaults; ``--preset paper`` reproduces the authors' release
(zhaoyuzhi/ICM-Assistant) in every command that has a paper way: ``icm generate`` (its
generation pipeline), ``icm moderate`` (its score question and tokens, threshold), ``icm judge``
(its MEQ rubric), ``icm export`` (its LLaVA records). A preset only fills options the user did
not give: each option given on the command line (or in a ``--config`` file) still wins, so a
researcher can switch single points back to ours knowingly.
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")

PRESET_NAMES = ("paper",)

#: ``--preset paper``: the released pipeline of zhaoyuzhi/ICM-Assistant. Its explanation call
#: (``vllm_data_generation.py``: Qwen2.5-VL, temperature 1e-2, max_tokens 2048) and its Q-A
#: calls (``q-a pair generation/vllm_data_generation.py``: temperature 0.6, top_p 0.9,
#: max_tokens 2048); 6 yes/no + 2 what + 2 how, then 5 multiple choice; the base rule only
#: (its labels are R1's); no checks, no critic, no retries (it has post-processing filters
#: only) and no verdict questions written from the rule table. Its data as the release made
#: it: the three answers merged into the explanation (``post_process_MLLM_output_4LLM_all_
#: categories.py``) that is stored, exported and asked about; the seed-leak filter over that
#: merged text as ``check_all_MLLM_output_content.py`` applies it; "All questions are related
#: to content moderation" only in a mixed pass (the release's qa and mc prompts lack it); the
#: generation script's own seed sentences (read from ``--release DIR``); the image first and
#: no system message in the image call.
PAPER_PRESET: dict[str, Any] = {
    "pipeline": "paper",
    "qa": {"yes_no": 6, "multiple_choice": 5, "what": 2, "how": 2},
    "paper": {
        "seed_leak_filter": "release",
        "qa_from": "explanation",
        "explanation": "merged",
        "moderation_focus": "mixed",
        "qa_passes": "separate",
        "image_call": "release",
        "seeds": "release",
    },
    "checks": False,
    "llm_critic": False,
    "verdict_questions": False,
    "max_stage_retries": 0,
    "max_rules": 1,
    "role_settings": {
        "paper_answers": {"temperature": 0.01, "max_tokens": 2048},
        "paper_qa": {"temperature": 0.6, "top_p": 0.9, "max_tokens": 2048},
        "paper_mc": {"temperature": 0.6, "top_p": 0.9, "max_tokens": 2048},
    },
}

#: the generation settings of each preset (``GenerateConfig`` fields)
GENERATE: dict[str, dict[str, Any]] = {"paper": PAPER_PRESET}
#: ``icm moderate``: the bare question, the softmax over one Yes and one No token, and the
#: ICM-Val script's threshold (flagged when the score is above 0.5)
MODERATE: dict[str, dict[str, Any]] = {
    "paper": {"question": "plain", "score_tokens": "single", "threshold": 0.5}
}
#: ``icm judge score`` / ``calibrate``: the paper's MEQ wording (temperature 0.2 comes with it)
JUDGE: dict[str, dict[str, Any]] = {"paper": {"rubric": "meq-paper"}}
#: ``icm export``: the paper's single-turn LLaVA records
EXPORT: dict[str, dict[str, Any]] = {"paper": {"format": "llava", "style": "paper"}}


def check_preset(preset: str | None) -> None:
    """Refuse an unknown preset name, naming the known ones."""
    if preset is not None and preset not in PRESET_NAMES:
        raise ValueError(f"unknown preset {preset!r} (presets: {', '.join(PRESET_NAMES)})")


def option(table: dict[str, dict[str, Any]], preset: str | None, name: str, given: T | None,
           default: T) -> T:  # fmt: skip
    """An option's value: as given, else the preset's, else the command's default."""
    if given is not None:
        return given
    if preset is not None and name in table.get(preset, {}):
        value: T = table[preset][name]
        return value
    return default
