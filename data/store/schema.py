"""The store's schema, as an ordered list of migrations.

A migration is applied once, inside a transaction, and its version recorded in
``schema_migrations``. Add new tables or columns by appending a migration; never edit one that
has shipped, because existing database files already carry it.

Table map (what later stages write):

- ``runs``: one row per command run (generate, judge, calibrate, finetune, moderate), with the
  resolved config, role->model binding, policy hash, prompt hashes, git revision, package versions.
- ``policies``: each policy file used, by content hash.
- ``images``: each image by content hash (path, size, format).
- ``samples``: image x policy within a run, with its annotation (or a proposed one) and status.
- ``stage_outputs``: every stage result of a sample (per attempt, per rule variant where relevant).
- ``explanations``: the final explanation and verdict of a sample per rule variant.
- ``qa_items``: question-answer pairs of a sample.
- ``critiques``: each deterministic or LLM check the critic ran, passed or not.
- ``llm_calls``: the trace of every model call (never contains API keys).
- ``llm_cache``: cached successful model outputs by cache key.
- ``perception_cache``: detector evidence by image hash and tool version.
- ``judgments`` / ``calibrations``: judge scores and calibration reports.
- ``finetune_runs`` / ``finetune_metrics``: fine-tune runs and their loss curves.
- ``predictions``: verdicts and scores of a moderation model (and, with ``task`` mqa_*, its
  answers to MQA questions), from ``icm moderate`` or imported with ``icm metrics --predictions``.
- ``llm_batches`` / ``llm_batch_items``: each submitted provider batch (``delivery=batch``) and
  its requests by ``custom_id`` with their result lines, so a rerun polls a batch instead of
  submitting it again (migration 3).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """One schema step: ``version`` is strictly increasing, ``sql`` may hold several statements."""

    version: int
    name: str
    sql: str


_V1 = """
CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    command VARCHAR,
    config_json VARCHAR,
    role_bindings_json VARCHAR,
    policy_name VARCHAR,
    policy_sha256 VARCHAR,
    rule_variants VARCHAR,
    prompt_hashes_json VARCHAR,
    git_revision VARCHAR,
    package_versions_json VARCHAR
);

CREATE TABLE policies (
    policy_sha256 VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    path VARCHAR,
    content VARCHAR NOT NULL,
    loaded_at TIMESTAMP NOT NULL
);

CREATE TABLE images (
    image_sha256 VARCHAR PRIMARY KEY,
    path VARCHAR NOT NULL,
    width INTEGER,
    height INTEGER,
    format VARCHAR,
    size_bytes BIGINT,
    added_at TIMESTAMP NOT NULL
);

CREATE TABLE samples (
    sample_id VARCHAR PRIMARY KEY,
    run_id VARCHAR NOT NULL,
    image_sha256 VARCHAR,
    image_path VARCHAR,
    policy_name VARCHAR NOT NULL,
    category VARCHAR,
    category_source VARCHAR,
    rule_variants VARCHAR,
    source VARCHAR,
    split VARCHAR,
    status VARCHAR NOT NULL,
    reasons_json VARCHAR,
    description VARCHAR,
    context VARCHAR,
    attempts INTEGER DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE stage_outputs (
    output_id VARCHAR PRIMARY KEY,
    sample_id VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    stage VARCHAR NOT NULL,
    rule_variant VARCHAR,
    attempt INTEGER NOT NULL,
    status VARCHAR NOT NULL,
    output_json VARCHAR,
    raw_text VARCHAR,
    feedback VARCHAR,
    call_id VARCHAR,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE explanations (
    sample_id VARCHAR NOT NULL,
    rule_variant VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    question VARCHAR,
    verdict VARCHAR,
    expected_verdict VARCHAR,
    explanation VARCHAR,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (sample_id, rule_variant)
);

CREATE TABLE qa_items (
    qa_id VARCHAR PRIMARY KEY,
    sample_id VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    rule_variant VARCHAR,
    qa_type VARCHAR NOT NULL,
    question VARCHAR NOT NULL,
    options_json VARCHAR,
    answer VARCHAR NOT NULL,
    position INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE critiques (
    critique_id VARCHAR PRIMARY KEY,
    sample_id VARCHAR NOT NULL,
    run_id VARCHAR NOT NULL,
    stage VARCHAR NOT NULL,
    attempt INTEGER NOT NULL,
    check_name VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    passed BOOLEAN NOT NULL,
    message VARCHAR,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE llm_calls (
    call_id VARCHAR PRIMARY KEY,
    run_id VARCHAR,
    sample_id VARCHAR,
    stage VARCHAR,
    role VARCHAR,
    provider VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    endpoint VARCHAR,
    prompt_id VARCHAR,
    prompt_hash VARCHAR,
    schema_name VARCHAR,
    cache_key VARCHAR,
    cache_hit BOOLEAN NOT NULL DEFAULT FALSE,
    image_mode VARCHAR,
    messages_json VARCHAR,
    params_json VARCHAR,
    raw_output VARCHAR,
    parsed_json VARCHAR,
    status VARCHAR NOT NULL,
    error VARCHAR,
    attempt INTEGER NOT NULL DEFAULT 1,
    parse_attempts INTEGER,
    input_tokens INTEGER,
    output_tokens INTEGER,
    latency_ms DOUBLE,
    cost_usd DOUBLE,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP
);

CREATE TABLE llm_cache (
    cache_key VARCHAR PRIMARY KEY,
    provider VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    schema_name VARCHAR,
    raw_output VARCHAR,
    parsed_json VARCHAR,
    input_tokens INTEGER,
    output_tokens INTEGER,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE perception_cache (
    image_sha256 VARCHAR NOT NULL,
    tool VARCHAR NOT NULL,
    tool_version VARCHAR NOT NULL,
    evidence_json VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (image_sha256, tool, tool_version)
);

CREATE TABLE judgments (
    judgment_id VARCHAR PRIMARY KEY,
    run_id VARCHAR NOT NULL,
    judge_spec VARCHAR NOT NULL,
    rubric VARCHAR NOT NULL,
    item_id VARCHAR NOT NULL,
    sample_id VARCHAR,
    rule_variant VARCHAR,
    repeat_index INTEGER NOT NULL DEFAULT 0,
    swapped BOOLEAN NOT NULL DEFAULT FALSE,
    status VARCHAR NOT NULL,
    scores_json VARCHAR,
    rationale VARCHAR,
    call_id VARCHAR,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE calibrations (
    calibration_id VARCHAR PRIMARY KEY,
    run_id VARCHAR NOT NULL,
    judge_spec VARCHAR NOT NULL,
    dataset_path VARCHAR NOT NULL,
    dataset_sha256 VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    n_items INTEGER NOT NULL,
    n_unscored INTEGER NOT NULL,
    report_json VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE finetune_runs (
    finetune_id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    base_model VARCHAR NOT NULL,
    family VARCHAR,
    mode VARCHAR,
    source_runs VARCHAR,
    config_json VARCHAR NOT NULL,
    output_dir VARCHAR,
    status VARCHAR NOT NULL,
    metrics_json VARCHAR,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP
);

CREATE TABLE finetune_metrics (
    finetune_id VARCHAR NOT NULL,
    step INTEGER NOT NULL,
    split VARCHAR NOT NULL,
    loss DOUBLE,
    learning_rate DOUBLE,
    tokens BIGINT,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (finetune_id, step, split)
);

CREATE TABLE predictions (
    prediction_id VARCHAR PRIMARY KEY,
    run_id VARCHAR NOT NULL,
    model_path VARCHAR NOT NULL,
    image_sha256 VARCHAR,
    image_path VARCHAR,
    policy_name VARCHAR NOT NULL,
    rule_variant VARCHAR NOT NULL,
    category VARCHAR,
    expected_verdict VARCHAR,
    verdict VARCHAR,
    score DOUBLE,
    explanation VARCHAR,
    status VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE INDEX samples_run ON samples (run_id, status);
CREATE INDEX llm_calls_sample ON llm_calls (sample_id);
CREATE INDEX stage_outputs_sample ON stage_outputs (sample_id);
CREATE INDEX critiques_sample ON critiques (sample_id);
CREATE INDEX qa_items_sample ON qa_items (sample_id);
CREATE INDEX judgments_run ON judgments (run_id);
"""

_V2 = """
ALTER TABLE predictions ADD COLUMN task VARCHAR DEFAULT 'verdict';
"""
"""``predictions.task``: ``verdict`` (a moderation verdict/score per image and rule) or an MQA
answer (``mqa_mc``: multiple choice, ``mqa_qa``: yes/no and open questions), whose answer is in
``verdict`` and the reference answer in ``expected_verdict`` (imported paper outputs)."""

_V3 = """
CREATE TABLE llm_batches (
    batch_id VARCHAR PRIMARY KEY,
    provider VARCHAR NOT NULL,
    endpoint VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    n_requests INTEGER NOT NULL,
    input_file_id VARCHAR,
    submitted_at TIMESTAMP NOT NULL,
    ended_at TIMESTAMP,
    detail_json VARCHAR
);

CREATE TABLE llm_batch_items (
    batch_id VARCHAR NOT NULL,
    custom_id VARCHAR NOT NULL,
    result_json VARCHAR,
    consumed_at TIMESTAMP,
    PRIMARY KEY (batch_id, custom_id)
);

CREATE INDEX llm_batch_items_custom ON llm_batch_items (custom_id);
"""

_V4 = """
ALTER TABLE samples ADD COLUMN attempt_started_at TIMESTAMP;
"""
"""``samples.attempt_started_at``: when the attempt that gave the sample its current outcome
began. A call of the sample that started before it belongs to an interrupted or superseded
attempt (a run killed and resumed, ``--retry-failed``): counts show those calls apart. NULL for
samples finished before this column existed (their calls all count as current)."""

_V5 = """
ALTER TABLE llm_calls ADD COLUMN cached_input_tokens INTEGER;
ALTER TABLE llm_calls ADD COLUMN cache_write_tokens INTEGER;
"""
"""Provider prompt caching, per call: of ``input_tokens`` (the whole prompt), those read from
the provider's prompt cache (OpenAI ``cached_tokens``, Anthropic ``cache_read_input_tokens``)
and those written to it (Anthropic ``cache_creation_input_tokens``); NULL for rows written
before (and for calls that never reached the provider)."""

_V6 = """
ALTER TABLE samples ADD COLUMN note VARCHAR;
"""
"""``samples.note``: what a person who saw the image noted it shows (the manifest's ``note``),
kept because a describer that cannot see the image writes from it: the grounding audit counts
its words as seen. NULL for rows without a note and for samples written before."""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _V1),
    Migration(2, "predictions.task: verdict or MQA answer", _V2),
    Migration(3, "provider batches (delivery=batch)", _V3),
    Migration(4, "samples.attempt_started_at: calls of earlier attempts counted apart", _V4),
    Migration(5, "llm_calls: prompt-cache tokens (cached reads, cache writes)", _V5),
    Migration(6, "samples.note: the person's note a blind describer writes from", _V6),
)

LATEST_VERSION = MIGRATIONS[-1].version
