"""Run the generation graph over a manifest: bounded async concurrency, resumable, traced.

The store is the source of truth. Before work starts the run and all its samples are written
(``pending``); each stage result is committed as it finishes; a sample's final rows
(status, explanations, Q-A) land in one transaction. Re-running the same command skips finished
samples, so a crash (even ``kill -9``) loses at most the samples in flight, and the LLM cache
makes their redone calls free.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import os
import re
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from agents.models.base import ImageInput, ProviderError
from agents.models.cache import CacheMiss
from agents.models.images import prepare_image
from agents.models.layer import ModelLayer
from agents.models.providers import IN_PROCESS_PROVIDERS, make_provider
from agents.models.settings import ModelConfig, RoleBinding
from agents.qa_writer import QACounts, verdict_questions
from agents.schemas import LENGTH_PROFILES
from agents.stages import StageRegistry, default_registry, paper_registry
from data.manifest import (
    ManifestError,
    ManifestRow,
    RowProblem,
    image_problems,
    manifest_policies,
    read_manifest,
)
from data.policy import load_policy
from data.policy_models import Policy
from data.provenance import git_revision, package_versions
from data.sample_identity import DistinctRows, distinct_rows
from data.store import (
    Store,
    StoreWriteError,
    dataset_reads,
    is_storage_failure,
    queries,
    records,
    to_json,
    utcnow,
)
from data.store.batch import BatchWriter, RowQueue
from data.store.snapshot import SnapshotPublisher, SnapshotSink
from graphs.config import GenerateConfig
from graphs.console import make_console
from graphs.duplicate_check import DuplicateScreen
from graphs.pipeline import (
    RECURSION_LIMIT,
    PipelineDeps,
    SampleGraph,
    StageRecorder,
    StoreRecorder,
    build_graph,
    generation_roles,
    initial_state,
)
from graphs.report import ReportingRecorder, RunReporter
from graphs.state import SampleSpec
from prompts import list_prompts

FINAL = ("accepted", "rejected", "failed")
#: how often queued writes are committed; a crash loses at most this much finished work. Each
#: commit costs about 25 ms of CPU whatever it holds (a statement per table, Arrow conversion),
#: so at 0.5 s it took 0.3 ms per model call at 32 in flight; at 2 s 0.15 (docs/throughput.md)
FLUSH_INTERVAL_S = 2.0
#: overrides ``FLUSH_INTERVAL_S`` (seconds, > 0): less finished work lost on a crash, more CPU
FLUSH_ENV = "ICM_FLUSH_INTERVAL_S"
STORE_WAIT_S = 5.0
#: a letter a model already put before an option ("A. Yes", "B) No")
_OPTION_LETTER = re.compile(r"^\s*[A-D][.)]\s*")
GC_YOUNG_THRESHOLD = 20_000


def registry_for(config: GenerateConfig) -> StageRegistry:
    """The stages a run's configuration asks for: ours, or the paper's release (without its
    multiple-choice pass when no multiple-choice item is asked for)."""
    if config.pipeline == "paper":
        separate = config.paper.qa_passes == "separate"  # a mixed pass asks its own MC
        return paper_registry(multiple_choice=config.qa.multiple_choice > 0 and separate)
    return default_registry()


class RunConfigError(ValueError):
    """The run name exists with another configuration, or the inputs cannot be used."""


#: a sample's perception evidence: (as data, as the text prompts show) or (None, None)
Evidence = tuple[dict | None, str | None]
#: ``on_sample(status, summary)``, called after each finished sample
OnSample = Callable[[str, "RunSummary"], None]


class SampleExecutor(Protocol):
    """Who runs the samples still to do, once the run, its samples and its writer are set
    up: this process (``GenerationRun._drive``), or Ray actors (``graphs.ray_executor``)."""

    def drive(
        self,
        run: GenerationRun,
        store: Store,
        policies: dict[str, Policy],
        todo: list[SampleSpec],
        summary: RunSummary,
        on_sample: OnSample | None,
    ) -> Awaitable[None]: ...

    def loads_models_here(self) -> bool:
        """Whether in-process models are loaded in this process (they are not for Ray)."""
        ...


@dataclass
class RunSummary:
    run_id: str
    db: Path
    counts: dict[str, int] = field(default_factory=dict)
    processed: int = 0
    skipped: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    seconds: float = 0.0
    calls: int = 0
    """Model calls this invocation made, and how many of them the cache answered."""
    cached_calls: int = 0
    repeated_rows: list[str] = field(default_factory=list)
    """Manifest rows that repeat a sample, folded into it (each naming the lines)."""
    bad_rows: list[str] = field(default_factory=list)
    """Manifest rows recorded as failed before any model ran (``--skip-bad-rows``)."""
    checked: bool = True
    """Whether samples were checked at all (deterministic checks or the LLM critic); the
    paper preset turns both off, so "accepted" there means "not rejected by anything"."""


def sample_id_for(
    run_id: str, row: ManifestRow, image_sha256: str | None, variant: str = ""
) -> str:
    """A sample's id: its run, policy and image bytes (:mod:`data.sample_identity` says why),
    plus ``variant`` when one image has samples that ask differently."""
    key = (
        f"{run_id}|{row.policy}|{image_sha256 or row.image}|{row.line if not image_sha256 else ''}"
    )
    if variant:
        key += f"|{variant}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class GenerationRun:
    """One invocation of ``generate``: prepares the store, then drives samples through the graph."""

    def __init__(
        self,
        config: GenerateConfig,
        console: Console | None = None,
        executor: SampleExecutor | None = None,
    ) -> None:
        self.config = config
        self.executor = executor
        self.console = console or make_console(stderr=True)
        self.run_id = config.run_id()
        self.model_config = ModelConfig.from_mapping(
            {"roles": config.roles, "settings": config.role_settings}
        )
        self._images: dict[str, tuple[ImageInput, ...]] = {}
        self._layer: ModelLayer | None = None
        # Consistent copies of the store for `icm view` while this run holds the file
        # (ICM_SNAPSHOT_INTERVAL_S, default 2 s; 0 turns them off).
        self.snapshots: SnapshotSink | None = SnapshotPublisher.for_store(config.db)
        self._writer: BatchWriter | None = None
        self._flush_s: float | None = None  # set by run() from flush_interval()
        self._duplicates: DuplicateScreen | None = None  # reject_near_duplicates, set in run()
        self.reporter = RunReporter(self.console)
        self.registry = registry_for(config)

    @property
    def writer(self) -> BatchWriter:
        """The run's batch writer (an executor applies finished samples through it)."""
        if self._writer is None:
            raise RuntimeError("the writer exists only while run() runs")
        return self._writer

    # ------------------------------------------------------------------ preparation
    def load_policies(self) -> dict[str, Policy]:
        names = manifest_policies(self.config.manifest_path, self.config.policy)
        if not names:
            raise RunConfigError(
                f"{self.config.manifest_path}: no policy in the manifest; pass --policy"
            )
        return {name: load_policy(name) for name in sorted(names)}

    def rules_for(self, policy: Policy) -> tuple[str, ...]:
        if not self.config.rules:
            # The base rule (the one released labels follow) first, then the file's order.
            ordered = sorted(policy.rules, key=lambda r: r != policy.base_rule)
            return tuple(ordered[: self.config.max_rules])
        unknown = [r for r in self.config.rules if r not in policy.rules]
        if unknown:
            raise RunConfigError(
                f"policy '{policy.name}' has no rule variant {', '.join(unknown)} "
                f"(it has {', '.join(policy.rules)})"
            )
        return tuple(self.config.rules)

    def register_run(self, store: Store, policies: dict[str, Policy]) -> None:
        """Insert the run record, or check that an existing run has the same identity."""
        identity = self.config.identity_hash()
        existing = queries.run_row(store, self.run_id)
        if existing:
            stored = json.loads(existing["config_json"] or "{}")
            if stored.get("identity_hash") != identity:
                raise RunConfigError(
                    f"run '{self.run_id}' already exists in {self.config.db} with another "
                    "configuration; choose a new --run name to start a separate run"
                )
            records.reopen_run(store, self.run_id)
            return
        config_record = {
            **json.loads(self.config.model_dump_json()),
            "identity_hash": identity,
            "identity": self.config.identity(),
        }
        records.register_run(
            store,
            records.RunRecord(
                run_id=self.run_id,
                name=self.config.run or self.run_id,
                kind="generate",
                config=config_record,
                # the roles this run asks (the judge, the moderator and the other pipeline's
                # stages are bound by `all=` too, but never called here)
                role_bindings={
                    role: binding
                    for role, binding in self.model_config.record().items()
                    if role in self.roles()
                },
                policy_name=",".join(policies),
                policy_sha256=",".join(p.sha256 for p in policies.values()),
                rule_variants=",".join(
                    sorted({r for p in policies.values() for r in self.rules_for(p)})
                ),
                prompt_hashes={t.name: t.sha256 for t in list_prompts()},
                git_revision=git_revision(),
                package_versions=package_versions(),
            ),
        )
        records.record_policies(store, policies.values())

    def register_samples(
        self, store: Store, distinct: DistinctRows, policies: dict[str, Policy]
    ) -> list[SampleSpec]:
        """Write every sample as ``pending`` (existing ones are kept) and return them all."""
        now = utcnow()
        specs, sample_rows, image_rows = [], [], []
        for row in distinct.rows:
            sha = distinct.sha256[row.line]
            sample_id = sample_id_for(self.run_id, row, sha, distinct.variant(row))
            text_only = row.description is not None
            spec = SampleSpec(
                sample_id=sample_id,
                run_id=self.run_id,
                policy=row.policy,
                rules=self.rules_for(policies[row.policy]),
                image_path=str(row.image_path) if row.image_path else row.image,
                image_sha256=sha,
                category=row.category,
                category_source="dataset" if text_only else "annotation",
                note=row.note,
                given_description=row.description,
                source=row.source,
                split=row.split,
            )
            specs.append(spec)
            sample_rows.append(
                {
                    "sample_id": sample_id,
                    "run_id": self.run_id,
                    "image_sha256": sha,
                    "image_path": spec.image_path,
                    "policy_name": row.policy,
                    "category": row.category,
                    "category_source": spec.category_source if row.category else "proposed",
                    "rule_variants": ",".join(spec.rules),
                    "note": row.note,
                    "source": row.source,
                    "split": row.split,
                    "status": "pending",
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            if row.image_path and sha:
                image_rows.append(
                    {
                        "image_sha256": sha,
                        "path": str(row.image_path),
                        "size_bytes": row.image_path.stat().st_size,
                        "added_at": now,
                    }
                )
        records.register_samples(store, sample_rows, image_rows)
        return specs

    def select(self, store: Store, specs: list[SampleSpec]) -> tuple[list[SampleSpec], int]:
        """The samples still to do (pending, plus failed/rejected with --retry-failed) and how
        many of this shard's samples are already done (here, or in ``skip_samples``)."""
        statuses = queries.sample_statuses(store, self.run_id)
        redo = {"pending"} | ({"failed", "rejected"} if self.config.retry_failed else set())
        done_elsewhere = self._done_elsewhere()
        shard = self.config.shard_of()
        todo, skipped = [], 0
        for spec in specs:
            if shard and int(spec.sample_id, 16) % shard[1] != shard[0]:
                continue
            if spec.sample_id in done_elsewhere:
                skipped += 1
            elif statuses.get(spec.sample_id, "pending") in redo:
                todo.append(spec)
            else:
                skipped += 1
        if self.config.limit is not None:
            todo = todo[: self.config.limit]
        return todo, skipped

    def _done_elsewhere(self) -> set[str]:
        """Sample ids another store already finished (``skip_samples``: a JSON list)."""
        if self.config.skip_samples is None:
            return set()
        try:
            return set(json.loads(self.config.skip_samples.read_text()))
        except (OSError, ValueError) as exc:
            raise RunConfigError(f"cannot read {self.config.skip_samples}: {exc}") from exc

    # ------------------------------------------------------------------ per sample
    def load_images(self, sample: SampleSpec) -> tuple[ImageInput, ...]:
        """The sample's image, decoded and resized once per sample (kept until it finishes)."""
        if sample.given_description is not None or not sample.image_sha256:
            return ()
        if sample.sample_id not in self._images:
            side = self.model_config.for_role("describer").settings.image_max_side
            assert sample.image_path is not None  # a sample with a hash has a path
            self._images[sample.sample_id] = (prepare_image(Path(sample.image_path), side),)
        return self._images[sample.sample_id]

    def _prepare(self, store: Store | None, sample: SampleSpec) -> Evidence:
        """Before the graph, on a worker thread: the image as sent, then perception evidence."""
        self.load_images(sample)
        return self.evidence_for(store, sample)

    def evidence_for(self, store: Store | None, sample: SampleSpec) -> Evidence:
        """Perception evidence (cached in the store) or (None, None) when perception is off."""
        if not self.config.perception or not sample.image_sha256 or sample.given_description:
            return None, None
        try:
            from agents.perception.toolkit import perceive  # optional extra
        except ImportError:
            return None, None
        assert sample.image_path is not None  # a sample with a hash has a path
        evidence = perceive(Path(sample.image_path), store=store)
        return evidence.model_dump(mode="json"), evidence.as_text()

    def queue_outcome(
        self, writer: RowQueue, sample: SampleSpec, policy: Policy, out: dict[str, Any]
    ) -> str:
        """Queue the sample's outcome; it commits with the next batch, replacing an earlier one."""
        status = out.get("status", "failed")
        if status not in FINAL:
            status = "failed"
            out = {**out, "reasons": [*out.get("reasons", []), "graph ended without a verdict"]}
        if status == "accepted" and self._duplicates is not None:
            out = self._duplicates.screen(sample.sample_id, out)
            status = out["status"]
        now = utcnow()
        attempts = sum((out.get("attempts") or {}).values())
        outcome = {
            "sample_id": sample.sample_id,
            "status": status,
            "reasons_json": to_json(out.get("reasons") or []),
            "description": out.get("description"),
            "context": out.get("context"),
            "category": out.get("category"),
            "category_source": out.get("category_source"),
            "attempts": attempts,
            "updated_at": now,
            # calls of this sample that started before this attempt belong to earlier ones
            "attempt_started_at": out.get("attempt_started_at"),
        }
        # Every sample keeps the last explanations and Q-A it reached, whatever its status (the
        # sample row says which): `icm export --all` and the viewer show what a rejected or
        # failed sample said. Readers that want only accepted work filter on samples.status.
        explanations = out.get("explanations") or {}
        records.queue_sample_outcome(
            writer,
            outcome,
            [
                {
                    "sample_id": sample.sample_id,
                    "rule_variant": rule,
                    "run_id": sample.run_id,
                    "question": item["question"],
                    "verdict": item["verdict"],
                    "expected_verdict": item["expected"],
                    "explanation": item["explanation"],
                    "created_at": now,
                }
                for rule, item in explanations.items()
            ],
            self._qa_rows(
                sample,
                policy,
                out,
                now,
                add_verdict_questions=status == "accepted" and self.config.verdict_questions,
            ),
        )
        return status

    @staticmethod
    def _qa_rows(
        sample: SampleSpec,
        policy: Policy,
        out: dict[str, Any],
        now: Any,
        *,
        add_verdict_questions: bool,
    ) -> list[dict]:
        """The Q-A writer's items, then (accepted samples, unless the configuration turns them
        off) one rule-table verdict question per rule: a sample that was not accepted keeps
        only what its Q-A writer said."""
        qa, rule = out.get("qa") or {}, out.get("qa_rule")
        items: list[dict[str, Any]] = []
        for kind, qa_type in (("yes_no", "yes_no"), ("multiple_choice", "multiple_choice"),
                              ("what", "what"), ("how", "how")):  # fmt: skip
            for item in qa.get(kind) or []:
                if qa_type == "yes_no":
                    answer = f"{item['answer']}."
                    options = None
                elif qa_type == "multiple_choice":
                    answer = item["answer"]
                    # an option the model already lettered ("A. Yes") keeps one letter
                    options = [
                        f"{'ABCD'[n]}. {_OPTION_LETTER.sub('', str(o))}"
                        for n, o in enumerate(item["options"])
                    ]
                else:
                    answer, options = item["answer"], None
                items.append({"qa_type": qa_type, "question": item["question"], "answer": answer,
                              "options": options, "rule": rule})  # fmt: skip
        if add_verdict_questions:
            verdicts = {r: e["verdict"] for r, e in out["explanations"].items()}
            items += verdict_questions(policy, list(sample.rules), verdicts)
        return [
            {
                "qa_id": f"{sample.sample_id}-{n:02d}",
                "sample_id": sample.sample_id,
                "run_id": sample.run_id,
                "rule_variant": item["rule"],
                "qa_type": item["qa_type"],
                "question": item["question"],
                "options_json": to_json(item.get("options")) if item.get("options") else None,
                "answer": item["answer"],
                "position": n,
                "created_at": now,
            }
            for n, item in enumerate(items)
        ]

    # ------------------------------------------------------------------ the run
    async def run(
        self,
        on_start: Callable[[int, int], None] | None = None,
        on_sample: Callable[[str, RunSummary], None] | None = None,
    ) -> RunSummary:
        """Generate every sample still to do. ``on_start(todo, skipped)`` is called once the
        work is known, ``on_sample(status, summary)`` after each sample (``--workers`` reports
        progress to its parent through them)."""
        config = self.config
        started = time.perf_counter()
        self._flush_s = flush_interval()  # a bad ICM_FLUSH_INTERVAL_S stops here, before work
        # A viewer's brief read can hold the file for a moment: wait rather than fail.
        store = Store.open(config.db, wait_s=STORE_WAIT_S)
        layer: ModelLayer | None = None

        def write_failed(sample_id: str, reason: str) -> None:
            records.record_write_failure(store, sample_id, reason)  # the others are kept

        writer = BatchWriter(store, on_sample_error=write_failed)
        self._writer = writer
        try:
            with self.reporter.step(f"checking {config.manifest_path}") as said:
                policies = self.load_policies()
                rows = read_manifest(
                    config.manifest_path, policies, default_policy=config.policy,
                    images_dir=config.images_dir,
                )  # fmt: skip
                if not rows:
                    raise RunConfigError(f"{config.manifest_path}: no rows to generate from")
                distinct, problems = self.check_rows(rows)
                said.append(f"{len(rows)} rows, {len(distinct.rows) - len(problems)} usable")
            for note in distinct.notes:
                self.reporter.note(note)
            # flush_every=None: traces are written by _flush_periodically's thread, never by
            # the event loop (a commit there would stall every sample in flight).
            layer = ModelLayer(
                self.model_config, store, run_id=self.run_id, use_cache=config.use_cache,
                flush_every=None,
            )  # fmt: skip
            self._layer = layer
            # A sample's calls commit with its stage results, in one transaction.
            writer.attach(layer.trace_buffer)
            layer.check_credentials()
            self.register_run(store, policies)
            specs = self.register_samples(store, distinct, policies)
            todo, skipped = self.select(store, specs)
            if config.reject_near_duplicates:
                seed = dataset_reads.accepted_texts(store, [self.run_id])
                self._duplicates = DuplicateScreen(config.near_duplicate_threshold, seed)
            summary = RunSummary(self.run_id, config.db, skipped=skipped)
            summary.checked = config.checked
            summary.repeated_rows = list(distinct.notes)
            todo = self.fail_bad_rows(
                writer, specs, distinct.rows, problems, todo, policies, summary
            )
            if on_start:
                on_start(len(todo), skipped)
            recorder = ReportingRecorder(StoreRecorder(writer), self.reporter)
            graph = self.build_pipeline(layer, policies, recorder)
            if todo:  # a finished run re-run does not load its models
                await self._warm_up(layer, len(todo))
            # Everything built so far (imported libraries, clients, the graph) lives as long as
            # the run: keeping it out of the collector's scans saves a ~0.1 s full collection
            # every few hundred samples, a pause for every sample in flight.
            gc.freeze()
            # Each model call allocates thousands of short-lived objects: at the default
            # threshold (700) the young generation is scanned many times per call. 20,000
            # costs a few MB and gave +3 points of efficiency at 32 in flight (bench_generate).
            threshold = gc.get_threshold()
            gc.set_threshold(GC_YOUNG_THRESHOLD, *threshold[1:])
            flusher = asyncio.create_task(self._flush_periodically(writer))
            if self.executor is not None:
                drive = self.executor.drive(self, store, policies, todo, summary, on_sample)
            else:
                drive = self._drive(store, graph, policies, todo, summary, on_sample)
            driving = asyncio.ensure_future(drive)
            try:
                await stop_when_the_store_fails(driving, flusher)
            finally:
                gc.set_threshold(*threshold)
                gc.unfreeze()
                for task in (driving, flusher):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StoreWriteError):
                        await task
            writer.flush()
            records.finish_run(store, self.run_id)
            if self.snapshots:
                self.snapshots.maybe_publish(store, force=True)
            summary.counts = self.counts(store)
            summary.seconds = time.perf_counter() - started
            summary.calls = self.reporter.tally.calls
            summary.cached_calls = self.reporter.tally.cached
            return summary
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the original error matters more
                records.interrupt_run(store, self.run_id)
            # the last flush or finishing the run met a store that cannot be written
            stored = isinstance(exc, StoreWriteError)
            if isinstance(exc, Exception) and not stored and is_storage_failure(exc):
                raise StoreWriteError(store.path, exc) from exc
            raise
        finally:
            # Whatever finished before an error or Ctrl-C is kept.
            with contextlib.suppress(Exception):
                writer.flush()
            try:
                if layer is not None and writer.failure is None:
                    layer.close()  # writes the last traces
            finally:
                if layer is not None:  # HTTP clients close in their own loop, even on Ctrl-C
                    with contextlib.suppress(Exception, asyncio.CancelledError):
                        await layer.aclose()
                store.close()

    def build_pipeline(
        self, layer: ModelLayer, policies: dict[str, Policy], recorder: StageRecorder
    ) -> SampleGraph:
        """The compiled graphs of this run's configuration over ``layer`` and ``recorder`` (the
        run's own, a Ray actor's, or the Ray driver's cache replay)."""
        config = self.config
        deps = PipelineDeps(
            layer=layer,
            policies=policies,
            recorder=recorder,
            load_images=self.load_images,
            qa_counts=QACounts(**config.qa.model_dump()),
            max_stage_retries=config.max_stage_retries,
            llm_critic=config.llm_critic,
            contradiction_finder=_contradiction_finder(),
            grounding_finder=_grounding_finder(),
            lengths=LENGTH_PROFILES[config.text_length],
            registry=self.registry,
            paper=config.paper.options(),
            checks=config.checks,
            stage_checks=config.stage_checks,
        )
        return build_graph(deps)

    def check_rows(self, rows: Sequence[ManifestRow]) -> tuple[DistinctRows, list[RowProblem]]:
        """Every image row's file must exist and decode, checked before any model loads, and
        repeated rows are folded into one sample each (:mod:`data.sample_identity`).

        Returns the distinct rows and the problems of those rows (bad images, rows that
        contradict each other).

        Raises:
            ManifestError: naming the manifest file and line of each bad row, unless
                ``skip_bad_rows`` (then the problems are returned and those rows fail).
        """
        manifest = self.config.manifest_path
        unreadable = image_problems(manifest, rows)
        distinct = distinct_rows(manifest, rows, unusable={p.line for p in unreadable})
        kept = {r.line for r in distinct.rows}
        problems = [p for p in unreadable if p.line in kept] + distinct.conflicts
        if problems and not self.config.skip_bad_rows:
            listed = "\n".join(p.message for p in problems)
            raise ManifestError(
                f"{listed}\n{len(problems)} of {len(rows)} manifest rows cannot be used; fix "
                "them, or pass --skip-bad-rows to record them as failed and run the rest"
            )
        return distinct, problems

    def fail_bad_rows(
        self,
        writer: BatchWriter,
        specs: Sequence[SampleSpec],
        rows: Sequence[ManifestRow],
        problems: Sequence[RowProblem],
        todo: list[SampleSpec],
        policies: dict[str, Policy],
        summary: RunSummary,
    ) -> list[SampleSpec]:
        """Record the skipped bad rows still to do as ``failed`` with their reason; the rest."""
        if not problems:
            return todo
        by_line: dict[int, RowProblem] = {}
        for p in problems:  # a row with two problems: both reasons in one message
            seen = by_line.get(p.line)
            by_line[p.line] = (
                p
                if seen is None
                else RowProblem(p.line, p.image, p.reason, f"{seen.message}; {p.message}")
            )
        bad = {
            spec.sample_id: by_line[row.line]
            for spec, row in zip(specs, rows, strict=True)
            if row.line in by_line
        }
        kept = []
        for spec in todo:
            problem = bad.get(spec.sample_id)
            if problem is None:
                kept.append(spec)
                continue
            reason = f"bad manifest row: {problem.message}"
            out: dict[str, Any] = {"status": "failed", "reasons": [reason]}
            self.queue_outcome(writer, spec, policies[spec.policy], out)
            summary.bad_rows.append(problem.message)
        writer.flush()
        return kept

    async def _warm_up(self, layer: ModelLayer, n_todo: int) -> None:
        """Build every role's client, and load in-process models, before the first sample."""
        roles = self.roles()
        try:
            with self.reporter.step(f"starting the clients of {len(roles)} roles"):
                await layer.warm_up(roles)
            if self.executor is None or self.executor.loads_models_here():
                await self.load_local_models(roles)
        except ProviderError as exc:
            raise RunConfigError(f"cannot start a model: {exc.message}") from exc
        self.reporter.note(f"generating {n_todo} samples")

    def roles(self) -> list[str]:
        """The roles this run asks models (the critic only with its LLM critique on)."""
        return [
            r for r in generation_roles(self.registry) if r != "critic" or self.config.llm_critic
        ]

    async def load_local_models(self, roles: Sequence[str]) -> None:
        """Load each in-process model once, as a visible step (a 1.5B model takes seconds;
        its first run also joins and verifies its weights). Loaded models are shared per
        process, so the roles' own clients find them loaded."""
        seen: dict[str, list[str]] = {}
        bindings: dict[str, RoleBinding] = {}
        for role in roles:
            binding = self.model_config.for_role(role)
            if binding.spec.provider in IN_PROCESS_PROVIDERS:
                seen.setdefault(binding.spec.label, []).append(role)
                bindings.setdefault(binding.spec.label, binding)
        for label, binding in bindings.items():
            provider = make_provider(binding.spec, binding.settings)
            warm = getattr(provider, "warm", None)
            if warm is None:
                continue
            with self.reporter.step(f"loading {label} for {', '.join(seen[label])}"):
                await asyncio.to_thread(warm)

    async def _flush_periodically(self, writer: BatchWriter) -> None:
        """Commit queued stage results, outcomes and traces every ``FLUSH_INTERVAL_S`` (or
        ``ICM_FLUSH_INTERVAL_S``)."""
        interval = self._flush_s or flush_interval()
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(writer.flush)
            if self.snapshots:  # after a commit, off the event loop; rate-limited
                await asyncio.to_thread(self.snapshots.maybe_publish, writer.store)

    def counts(self, store: Store) -> dict[str, int]:
        return queries.status_counts(store, self.run_id)

    async def _drive(self, store, graph, policies, todo, summary, on_sample) -> None:
        semaphore = asyncio.Semaphore(self.config.concurrency)
        with self.reporter.samples(self.run_id, len(todo)):

            async def one(sample: SampleSpec) -> None:
                async with semaphore:
                    # in flight: a delivery=batch round waits for this sample's next call
                    with self._in_flight():
                        status = await self._one(
                            store, graph, policies[sample.policy], sample, summary
                        )
                summary.processed += 1
                self.reporter.on_sample(status, summary.cost_usd)
                if on_sample:
                    on_sample(status, summary)

            await asyncio.gather(*(one(s) for s in todo))

    def _in_flight(self) -> contextlib.AbstractContextManager[object]:
        """Marks one sample in flight for the layer's batch rounds (agents/models/batching)."""
        if self._layer is None:
            return contextlib.nullcontext()
        return self._layer.batch_participant()

    async def _one(self, store, graph, policy, sample, summary) -> str:
        writer = self._writer
        assert writer is not None, "_one runs inside run(), which sets the writer"
        out = await self.outcome_of(store, graph, sample)
        summary.tokens += int(out.get("tokens", 0) or 0)
        summary.cost_usd += float(out.get("cost_usd", 0.0) or 0.0)
        return self.queue_outcome(writer, sample, policy, out)

    async def outcome_of(
        self,
        store: Store | None,
        graph: SampleGraph,
        sample: SampleSpec,
        evidence: Evidence | None = None,
    ) -> dict[str, Any]:
        """Run one sample through ``graph``; its final state (a failure is a status, never an
        exception, except :class:`CacheMiss` from a cache-only layer). ``evidence``: perception
        already run elsewhere (the Ray driver ships it with the sample)."""
        out: dict[str, Any]
        started = utcnow()  # this attempt's calls start after it (queries.EARLIER_ATTEMPT_SQL)
        try:
            if sample.image_sha256 is None and sample.given_description is None:
                return {
                    "status": "failed",
                    "reasons": [f"image not found: {sample.image_path}"],
                    "attempt_started_at": started,
                }
            if evidence is None:
                # Detectors and image decoding/resizing are CPU-bound: keep them off the event
                # loop so API calls keep flowing (one thread hop for both).
                evidence = await asyncio.to_thread(self._prepare, store, sample)
            else:
                await asyncio.to_thread(self.load_images, sample)
            state = initial_state(sample, *evidence, self.registry)
            out = await graph.ainvoke(state, config={"recursion_limit": RECURSION_LIMIT})
        except CacheMiss:
            raise
        except Exception as exc:  # one bad sample must not stop the batch
            if is_storage_failure(exc) and self._writer is not None:
                # ...but a store that cannot be written stops the run (perception evidence,
                # written from here, met it first)
                raise self._writer.fail(exc) from exc
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            out = {"status": "failed", "reasons": [f"error: {detail}"]}
        finally:
            self._images.pop(sample.sample_id, None)  # held only while the sample is in flight
        return {**out, "attempt_started_at": started}


def flush_interval() -> float:
    """Seconds between commits: ``ICM_FLUSH_INTERVAL_S`` when set (a positive number; anything
    else is an error naming the variable), else ``FLUSH_INTERVAL_S``."""
    raw = os.environ.get(FLUSH_ENV, "").strip()
    if not raw:
        return FLUSH_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{FLUSH_ENV}={raw!r}: expected a positive number of seconds")
    return value


async def stop_when_the_store_fails(driving: asyncio.Future[None], flusher: asyncio.Task) -> None:
    """Wait for the samples (``driving``); if the periodic flush fails first, the store cannot
    keep what the samples produce, so they are cancelled at once (no further model call is
    made) and the flush's :class:`StoreWriteError` is raised."""
    await asyncio.wait({driving, flusher}, return_when=asyncio.FIRST_COMPLETED)
    if not driving.done():
        driving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await driving
        flusher.result()  # the flush failed: its error (a flusher never ends otherwise)
    driving.result()


def _grounding_finder() -> Any:
    try:
        from agents.perception.grounding import find_ungrounded  # optional extra
    except ImportError:
        return None
    return find_ungrounded


def _contradiction_finder() -> Any:
    try:
        from agents.perception.contradictions import find_contradictions  # optional extra
    except ImportError:
        return None
    return find_contradictions
