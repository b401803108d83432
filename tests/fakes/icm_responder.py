"""A responder for the fake OpenAI server that plays every generation role plausibly.

It reads the rendered prompts (the same text a real model would get) and writes answers that
pass the critic's deterministic checks: descriptions that mention the annotated attributes,
explanations that end on the rule table's verdict, consistent Q-A. ``faults`` makes chosen
categories misbehave at chosen stages, to exercise critic rejections, retries and rejections.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .base import Action, error, refuse, reply
from .openai_server import request_schema


def _messages(body: dict[str, Any]) -> tuple[str, str]:
    system, user = "", ""
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
        if message.get("role") == "system":
            system += content or ""
        elif message.get("role") == "user" and not user:
            # the task's message: a re-ask after a bad answer only appends "answer again"
            user = content or ""
    return system, user


@dataclass
class ICMResponder:
    """Callable responder. ``faults``: category -> {stage: how many bad answers before good}."""

    faults: dict[str, dict[str, int]] = field(default_factory=dict)
    critic_objects: dict[str, int] = field(default_factory=dict)
    """category -> how many times the LLM critic reports a problem for it before agreeing."""
    calls: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, body: dict[str, Any]) -> Action:
        system, user = _messages(body)
        role = re.search(r"You are the (\w+)|You write question-answer", system)
        name = (role.group(1) if role and role.group(1) else "qa_writer") if role else "unknown"
        schema = request_schema(body) or {}
        if name == "unknown":  # the paper pipeline's prompts name no role: its schema tells
            name = self._paper_role(schema)
        category = self._category(user)
        with self._lock:
            self.calls[name] += 1
            key = f"{category}:{name}"
            self.calls[key] += 1
            bad = self.calls[key] <= self.faults.get(category or "", {}).get(name, 0)
        answer = getattr(self, f"_{name}")(user, schema, bad, category)
        return reply(answer)

    @staticmethod
    def _paper_role(schema: dict) -> str:
        props = schema.get("properties", {})
        if "explicit_description" in props:
            return "paper_answers"
        if "yes_no" in props:
            return "paper_mc" if props["yes_no"].get("maxItems") == 0 else "paper_qa"
        return "unknown"

    def _paper_answers(self, user: str, schema: dict, bad: bool, category: str | None) -> dict:
        """The three answers; the explanation leaks the seed in its last sentence (which the
        seed-leak filter must drop)."""
        seed = re.search(r"Known about the image: (.+)", user)
        term = re.search(r"why this image is or is not ([\w -]+?)\.", user)
        # distinct per category (the seed), so no two images share a cached Q-A request
        tag = hashlib.sha256((seed.group(1) if seed else "").encode()).hexdigest()[:6]
        return {
            "explicit_description": f"A person stands in daylight wearing casual clothes ({tag}).",
            "implicit_description": "The atmosphere is calm and ordinary.",
            "explanation": f"The pose and clothing decide whether the image is "
            f"{term.group(1) if term else 'flagged'} in picture {tag}; nothing else in the frame "
            "adds to it. "
            f"Based on the prior information, {seed.group(1) if seed else ''}",
        }

    def _paper_qa(self, user: str, schema: dict, bad: bool, category: str | None) -> dict:
        return self._qa_writer(user, schema, bad, category)

    _paper_mc = _paper_qa

    @staticmethod
    def _category(user: str) -> str | None:
        match = (
            re.search(r"Annotation[^:]*: (\w+) \(", user)
            or re.search(r"images of this kind \((\w+):", user)
            or re.search(r"\[category (\w+)\]", user)
        )
        return match.group(1) if match else None

    def _describer(self, user: str, schema: dict, bad: bool, category: str | None) -> dict:
        attrs = re.search(r"Annotation[^:]*: \w+ \(([^)]*)\)", user)
        words = []
        if attrs and not bad:
            for pair in attrs.group(1).split(","):
                words += pair.split("=")[1].strip().split("_")
        text = (
            "A person is in the photograph, standing in daylight. Visible attributes: "
            + (" ".join(w for w in words if w != "and") or "a plain backdrop")
            + f". [category {category}]"
        )
        out = {"description": text, "key_elements": ["person", "daylight"]}
        if "proposed_category" in schema.get("properties", {}):
            out["proposed_category"] = schema["properties"]["proposed_category"]["enum"][0]
        return out

    def _context(self, *_: Any) -> dict:
        return {
            "setting": "An outdoor scene in daylight.",
            "atmosphere": "Calm and ordinary.",
            "intent": "A casual snapshot.",
            "audience_cues": "Nothing beyond the annotated attributes.",
        }

    _context_interpreter = _context

    def _explainer(self, user: str, schema: dict, bad: bool, category: str | None) -> dict:
        expected = re.search(r'are judged "([^"]+)"', user).group(1)  # type: ignore[union-attr]
        # With a rule-table verdict the schema has no verdict field: the labels are in the prompt.
        listed = re.search(r"Verdict labels: (.*)\.\n", user).group(1)  # type: ignore[union-attr]
        labels = schema["properties"].get("verdict", {}).get("enum") or re.findall(
            r'"([^"]+)"', listed
        )
        verdict = next(label for label in labels if label != expected) if bad else expected
        rule = re.search(r"Rule (\w+):", user).group(1)  # type: ignore[union-attr]
        # the argument rests on the rule's reason, as the prompt gives it (argument_rests_on_rule)
        reason = re.search(r'are judged "[^"]+" because (.+)', user)
        out = {
            "explanation": f"Under rule {rule} the audience and the visible attributes decide "
            f"the case: {reason.group(1).strip() if reason else ''} The description supports "
            f"this reading. The image is {verdict}.",
        }
        if "verdict" in schema["properties"]:
            out["verdict"] = verdict
        return out

    def _qa_writer(self, user: str, schema: dict, bad: bool, category: str | None) -> dict:
        props = schema["properties"]
        term = re.search(r"whether the image is ([\w -]+?);", user)
        verdict = re.search(r"Verdict under this rule: (.+?)\.\n", user + "\n")
        flagged = not (
            verdict and (verdict.group(1).startswith("not") or verdict.group(1) == "safe")
        )
        yes_no = [{"question": "Is there a person in the image?", "answer": "Yes"}]
        if term:
            answer = "Yes" if flagged != bad else "No"
            yes_no.append({"question": f"Is the image {term.group(1)}?", "answer": answer})
        while len(yes_no) < props["yes_no"]["minItems"]:
            yes_no.append({"question": f"Is it daylight in scene {len(yes_no)}?", "answer": "Yes"})
        mc = [
            {"question": f"What is the setting of picture {n}?",
             "options": ["Outdoors", "A kitchen", "A stadium", "A library"], "answer": "A"}
            for n in range(props["multiple_choice"]["minItems"])
        ]  # fmt: skip
        what = [{"question": f"What is visible (item {n})?", "answer": "A person."}
                for n in range(props["what"]["minItems"])]  # fmt: skip
        how = [{"question": f"How is the scene lit (item {n})?", "answer": "By daylight."}
               for n in range(props["how"]["minItems"])]  # fmt: skip
        return {"yes_no": yes_no[: props["yes_no"]["maxItems"]], "multiple_choice": mc,
                "what": what, "how": how}  # fmt: skip

    def _critic(self, user: str, schema: dict, bad: bool, category: str | None) -> dict:
        cat = re.search(r"\[category (\w+)\]", user)
        key = cat.group(1) if cat else ""
        with self._lock:
            self.calls[f"{key}:critic_seen"] += 1
            objects = self.calls[f"{key}:critic_seen"] <= self.critic_objects.get(key, 0)
        if objects:
            problem = {"stage": "qa_writer", "issue": "a question repeats another"}
            return {"consistent": False, "problems": [problem]}
        return {"consistent": True, "problems": []}

    def _unknown(self, user: str, schema: dict, *_: Any) -> dict:
        return {}


#: the issue-16 fault mix: 10 % 429, 10 % 500, 10 % truncated JSON, 5 % refusals
ISSUE_16_FAULTS = {"429": 0.10, "500": 0.10, "malformed": 0.10, "refusal": 0.05}


@dataclass
class ChaosResponder:
    """Wraps a responder: answers 429, 500, malformed (truncated) JSON or a refusal at random.

    ``p``: the probability of a fault, its kind drawn uniformly; or ``faults``: the probability
    of each kind (``{"429": 0.1, "refusal": 0.05, ...}``), which overrides ``p``.

    ``by_request=True`` draws from the request itself (its body and how often that body was
    seen, salted by ``seed``) instead of one random stream: which request gets which fault then
    does not depend on the order concurrent samples reach the server, so a run's outcome is
    the same on every machine, loaded or not.
    """

    inner: Any
    p: float = 0.3
    seed: int = 0
    faults: dict[str, float] | None = None
    by_request: bool = False
    _rng: random.Random = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    injected: Counter[str] = field(default_factory=Counter)
    answered: int = 0
    _seen: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        kinds = ["429", "500", "malformed", "refusal"]
        self._table = self.faults or {kind: self.p / len(kinds) for kind in kinds}
        unknown = set(self._table) - set(kinds)
        if unknown or sum(self._table.values()) > 1:
            raise ValueError(f"bad fault table {self._table}")

    def _roll(self, body: dict[str, Any]) -> float:
        if not self.by_request:
            return self._rng.random()
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        self._seen[digest] += 1
        salted = hashlib.sha256(f"{self.seed}:{digest}:{self._seen[digest]}".encode())
        return int.from_bytes(salted.digest()[:8], "big") / 2**64

    def _draw(self, body: dict[str, Any]) -> str | None:
        roll = self._roll(body)
        for kind, probability in self._table.items():
            if roll < probability:
                return kind
            roll -= probability
        return None

    def __call__(self, body: dict[str, Any]) -> Action:
        with self._lock:
            kind = self._draw(body)
            if kind is None:
                self.answered += 1
        if kind is None:
            return self.inner(body)
        self.injected[kind] += 1
        if kind == "429":
            return error(429, "slow down", headers={"retry-after": "0"})
        if kind == "500":
            return error(500, "upstream exploded")
        if kind == "malformed":
            return reply('{"description": "A person stand', finish_reason="length")
        return refuse()


@dataclass
class GatedResponder:
    """Wraps a responder; once :meth:`arm` ed, answers ``open_for`` requests, then holds every
    further request until :meth:`release`.

    Tests that interrupt a run mid-way synchronise on :attr:`holding` (set when the first held
    request arrives) instead of sleeping: from then on no sample can finish, so "some samples
    done, not all" holds however slow or loaded the machine is.
    """

    inner: Any
    holding: threading.Event = field(default_factory=threading.Event)
    _open: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _left: int | None = None

    def __post_init__(self) -> None:
        self._open.set()

    def arm(self, open_for: int) -> None:
        """Answer ``open_for`` more requests, then hold the rest."""
        with self._lock:
            self._left = open_for
            self.holding.clear()
            self._open.clear()

    def release(self) -> None:
        """Let every held and later request through (the gate stays open until re-armed)."""
        with self._lock:
            self._left = None
        self._open.set()

    def __call__(self, body: dict[str, Any]) -> Action:
        with self._lock:
            hold = self._left is not None and self._left <= 0
            if self._left is not None and self._left > 0:
                self._left -= 1
        if hold:
            self.holding.set()
            self._open.wait()
        return self.inner(body)
