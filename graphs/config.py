"""The resolved configuration of a generation run: YAML ``--config`` first, CLI options over it.

The part of the config that decides *what* is generated (inputs, policy, rules, role bindings,
Q-A counts, retry bounds, critic) is hashed into the run's identity: re-running the same command
resumes the same run, and reusing a run name with a different configuration is refused rather
than mixing two experiments in one run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agents.models.credentials import MissingCredentialsError
from agents.models.settings import DELIVERY_SETTINGS
from agents.stages import (
    ExplanationText,
    ImageCall,
    ModerationFocus,
    PaperOptions,
    QAPasses,
    QASource,
    SeedLeakFilter,
)
from data.manifest import ManifestError
from data.policy_models import PolicyError
from data.release_seeds import release_seeds
from data.store import DEFAULT_DB_PATH, StoreError
from data.yaml_lines import first_alias_line
from graphs.presets import GENERATE as PRESETS
from graphs.presets import check_preset

BUNDLED_MANIFEST = Path(__file__).resolve().parents[1] / "data" / "samples" / "manifest.jsonl"


class QAConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    yes_no: int = Field(3, ge=0, le=10)
    multiple_choice: int = Field(3, ge=0, le=10)
    what: int = Field(2, ge=0, le=10)
    how: int = Field(2, ge=0, le=10)


class PaperConfig(BaseModel):
    """The paper pipeline's switches (``pipeline: paper``), each on its own; see
    ``agents.stages.PaperOptions`` for what each does."""

    model_config = ConfigDict(extra="forbid")

    seed_leak_filter: SeedLeakFilter = "rest"
    qa_from: QASource = "explanation"
    moderation_focus: ModerationFocus = "always"
    explanation: ExplanationText = "answer"
    qa_passes: QAPasses = "separate"
    image_call: ImageCall = "ours"
    seeds: Literal["policy", "release"] = "policy"
    """``policy``: the policy's own category sentences (ours); ``release``: the sentences of
    the release's generation script, read from the checkout ``release`` at run time."""
    release: str | None = None
    """A checkout of zhaoyuzhi/ICM-Assistant (``--release DIR``), read for ``seeds: release``."""

    @field_validator("moderation_focus", mode="before")
    @classmethod
    def _focus(cls, value: Any) -> Any:
        """``true`` / ``false`` (the switch's earlier form): every pass / no pass."""
        if isinstance(value, bool):
            return "always" if value else "never"
        return value

    @property
    def release_seeds_wanted_without_checkout(self) -> bool:
        """``seeds: release`` with no checkout to read: the policy's sentences are used."""
        return self.seeds == "release" and not self.release

    @model_validator(mode="after")
    def _readable_release(self) -> PaperConfig:
        """A ``release`` checkout must hold the generation script's seed sentences: say so
        now, before any model loads."""
        if self.seeds == "release" and self.release:
            release_seeds(Path(self.release))
        return self

    def release_sentences(self) -> Mapping[str, str] | None:
        """The release's seed sentence per category, or None (the policy's are used)."""
        if self.seeds != "release" or not self.release:
            return None
        return release_seeds(Path(self.release)).sentences

    def options(self) -> PaperOptions:
        """The stages' options (the release's seed sentences read from its checkout)."""
        fields = self.model_dump(exclude={"seeds", "release"})
        return PaperOptions(**fields, seeds=self.release_sentences())


class GenerateConfig(BaseModel):
    """Every setting of ``python graphs/generate.py``; see ``--help`` for each."""

    model_config = ConfigDict(extra="forbid")

    manifest: Path | None = None
    images_dir: Path | None = None
    policy: str | None = None
    rules: list[str] | None = None
    roles: dict[str, str] = Field(default_factory=dict)
    role_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    db: Path = DEFAULT_DB_PATH
    run: str | None = None
    limit: int | None = Field(None, ge=1)
    concurrency: int = Field(4, ge=1, le=1024)
    shard: str | None = None
    skip_samples: Path | None = None
    """A JSON list of sample ids finished in another store (set by ``--workers``)."""
    retry_failed: bool = False
    skip_bad_rows: bool = False
    """Record manifest rows with a missing or unreadable image as failed and run the rest
    (default: stop before any model loads, naming each bad line)."""
    use_cache: bool = True
    qa: QAConfig = Field(default_factory=QAConfig)
    max_stage_retries: int = Field(2, ge=0, le=10)
    max_rules: int | None = Field(None, ge=1)
    text_length: Literal["full", "medium", "short"] = "full"
    llm_critic: bool = True
    perception: bool = True
    preset: Literal["paper"] | None = None
    """The preset the settings started from (recorded; the settings themselves are hashed)."""
    pipeline: Literal["ours", "paper"] = "ours"
    """``ours``: describer -> context interpreter -> explainer per rule -> Q-A writer;
    ``paper``: the release's three-question call, then its two Q-A passes."""
    checks: bool = True
    """The critic's deterministic checks (off in the paper's release)."""
    stage_checks: bool = True
    """Run each stage's deterministic checks as soon as it has written, so a failing stage
    is redone before the later stages are asked (ours; off: the critic checks only after the
    whole chain, as before this option existed). Needs ``checks``."""
    verdict_questions: bool = True
    """Add one yes/no question per rule variant, answered by the rule table, to accepted
    samples (ours; the release has none)."""
    paper: PaperConfig = Field(default_factory=PaperConfig)
    reject_near_duplicates: bool = False
    """Reject an accepted sample whose description or an explanation nearly copies an earlier
    accepted sample's (graphs/duplicate_check.py); off by default."""
    near_duplicate_threshold: float = Field(0.8, gt=0.0, le=1.0)
    """Jaccard similarity of word 3-gram shingles at which two texts count as near-copies."""

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str | None) -> str | None:
        if value is None:
            return value
        index, _, count = value.partition("/")
        if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
            raise ValueError(f"--shard must be i/n with 0 <= i < n, got {value!r}")
        return value

    @property
    def manifest_path(self) -> Path:
        return (self.manifest or BUNDLED_MANIFEST).resolve()

    def identity(self) -> dict[str, Any]:
        """The settings that decide what a run generates (not how fast or which slice)."""
        return {
            "manifest": str(self.manifest_path),
            "images_dir": str(self.images_dir.resolve()) if self.images_dir else None,
            "policy": self.policy,
            "rules": self.rules,
            "roles": dict(sorted(self.roles.items())),
            "role_settings": self._generation_settings(),
            "qa": self.qa.model_dump(),
            "max_stage_retries": self.max_stage_retries,
            "max_rules": self.max_rules,
            "text_length": self.text_length,
            "llm_critic": self.llm_critic,
            "perception": self.perception,
        } | self._non_default_identity()

    def _non_default_identity(self) -> dict[str, Any]:
        """The pipeline switches, only where they differ from ours (so a default run's
        identity, and the name derived from it, is what it was before they existed)."""
        extra: dict[str, Any] = {}
        if self.pipeline != "ours":
            extra |= {"pipeline": self.pipeline, "paper": self.paper.model_dump()}
        if not self.checks:
            extra["checks"] = False
        if not self.stage_checks:
            extra["stage_checks"] = False
        if not self.verdict_questions:
            extra["verdict_questions"] = False
        return extra

    def _generation_settings(self) -> dict[str, dict[str, Any]]:
        """Role settings that can change what is generated (not DELIVERY_SETTINGS)."""
        kept = {
            role: {k: v for k, v in values.items() if k not in DELIVERY_SETTINGS}
            for role, values in sorted(self.role_settings.items())
        }
        return {role: values for role, values in kept.items() if values}

    def identity_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def run_id(self) -> str:
        return self.run or f"gen-{self.identity_hash()}"

    @property
    def checked(self) -> bool:
        """Whether samples are checked at all (deterministic checks or the LLM critic): the
        paper preset turns both off, so "accepted" then means "not rejected by anything"."""
        return self.checks or self.llm_critic

    def shard_of(self) -> tuple[int, int] | None:
        if not self.shard:
            return None
        index, _, count = self.shard.partition("/")
        return int(index), int(count)


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``; nested mappings (qa, paper, roles, role settings) merge."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    path: Path | None,
    overrides: dict[str, Any],
    *,
    preset: str | None = None,
    preset_over_file: bool = False,
) -> GenerateConfig:
    """YAML file (if any) with ``overrides`` (options given on the command line) on top.

    ``preset`` (or ``preset:`` in the file) starts from a named set of settings: the file and
    the command line override it, except ``preset_over_file`` (the implicit demo profile, which
    an explicit ``--preset`` overrides)."""
    data = _file_settings(path)
    preset = preset or overrides.get("preset") or data.get("preset")
    if preset is not None:
        check_preset(preset)
        named = PRESETS[preset] | {"preset": preset}
        data = _merged(data, named) if preset_over_file else _merged(named, data)
    return _validated(path, _with_overrides(data, overrides))


def _file_settings(path: Path | None) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text()
            alias = first_alias_line(text)
            if alias is not None:
                raise ValueError(
                    f"{path}:{alias}: YAML aliases ('*name') are not supported: write the value out"
                )
            loaded = yaml.safe_load(text)
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"cannot read config {path}: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: the config must be a mapping of option: value")
        data = loaded or {}
    return data


def _with_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    for key, value in overrides.items():
        if key in ("roles", "role_settings") and key in data:
            merged = dict(data[key])
            for name, item in value.items():
                if key == "role_settings":
                    merged[name] = {**merged.get(name, {}), **item}
                else:
                    merged[name] = item
            data[key] = merged
        elif isinstance(value, dict) and isinstance(data.get(key), dict):  # qa, paper
            data[key] = _merged(data[key], value)
        else:
            data[key] = value
    return data


def _validated(path: Path | None, data: dict[str, Any]) -> GenerateConfig:
    try:
        return GenerateConfig.model_validate(data)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"{where}invalid configuration: {problems}") from exc


def user_errors() -> tuple[type[Exception], ...]:
    """Errors that are the input's fault: ``icm generate`` and its workers print them as one
    line and exit with code 2."""
    from graphs.ray_cluster import RayUnavailableError  # no Ray import: a light module

    return (
        ValueError, ManifestError, MissingCredentialsError, PolicyError, StoreError,
        RayUnavailableError,
    )  # fmt: skip
