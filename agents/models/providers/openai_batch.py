"""OpenAI's Batch API (and vLLM's, which reads the same file): Files + Batches endpoints.

One round is one batch: a JSONL file of ``{"custom_id", "method": "POST", "url":
"/v1/chat/completions", "body"}`` lines (the body the synchronous path sends) uploaded with
``purpose=batch``; ``POST /v1/batches`` with its ``input_file_id``, ``completion_window: 24h``;
``GET /v1/batches/{id}`` until ``completed``, ``failed``, ``expired`` or ``cancelled``. Answers
are lines ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`` in
the output file, failed ones in the error file (an expired batch writes its unfinished requests
there with ``error.code = "batch_expired"``). Each line becomes exactly what a synchronous
request would have given: the completion's JSON text, or the classified error.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal

import openai

from agents.models.base import ErrorKind, ProviderError
from agents.models.batching import BatchState
from agents.models.errors import http_error

CHAT_URL: Final[Literal["/v1/chat/completions"]] = "/v1/chat/completions"
#: statuses after which a batch changes no more
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


class OpenAIBatchBackend:
    """The Files + Batches endpoints of one base URL, through the openai SDK."""

    provider = "openai"

    def __init__(self, sdk: openai.AsyncOpenAI, endpoint: str) -> None:
        self.sdk = sdk
        self.endpoint = endpoint

    async def submit(self, requests: list[tuple[str, dict[str, Any]]]) -> tuple[str, str, str]:
        lines = [
            json.dumps({"custom_id": cid, "method": "POST", "url": CHAT_URL, "body": body})
            for cid, body in requests
        ]
        data = ("\n".join(lines) + "\n").encode()
        upload = await self.sdk.files.create(
            file=("icm-batch.jsonl", data, "application/jsonl"), purpose="batch"
        )
        batch = await self.sdk.batches.create(
            input_file_id=upload.id,
            endpoint=CHAT_URL,
            completion_window="24h",
            metadata={"source": "icm-assistant"},
        )
        return batch.id, batch.status, upload.id

    async def poll(self, batch_id: str) -> BatchState:
        batch = await self.sdk.batches.retrieve(batch_id)
        errors = [e.message for e in (batch.errors.data or [])] if batch.errors else []
        counts = batch.request_counts.model_dump() if batch.request_counts else {}
        detail = {
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "request_counts": counts,
            "errors": errors,
        }
        return BatchState(batch.status, batch.status in ENDED, detail)

    async def results(self, batch_id: str, state: BatchState) -> dict[str, str]:
        lines: dict[str, str] = {}
        for key in ("error_file_id", "output_file_id"):  # an answer wins over an error line
            file_id = state.detail.get(key)
            if not file_id:
                continue
            content = await self.sdk.files.content(file_id)
            for number, raw in enumerate(content.text.splitlines(), 1):
                if not raw.strip():
                    continue
                try:
                    lines[json.loads(raw)["custom_id"]] = raw
                except (ValueError, KeyError, TypeError) as exc:
                    raise ProviderError(
                        "server", f"batch {batch_id}: {key} {file_id} line {number}: {exc}"
                    ) from exc
        return lines

    def missing(self, batch_id: str, state: BatchState) -> ProviderError:
        if state.status == "failed":
            why = "; ".join(state.detail.get("errors") or []) or "no reason given"
            return ProviderError("bad_request", f"batch {batch_id} failed: {why}")
        if state.status == "expired":
            return ProviderError("timeout", f"batch {batch_id} expired before this request ran")
        return ProviderError(
            "server", f"batch {batch_id} ended {state.status} without an answer to this request"
        )


def completion_text(line: dict[str, Any]) -> str:
    """The Chat Completions body of one result line as JSON text, or its classified error."""
    response = line.get("response") or None
    error = line.get("error") or None
    cid = line.get("custom_id")
    if response is None:
        error = error or {}
        code, message = error.get("code"), error.get("message") or "no response"
        kind: ErrorKind = "timeout" if code == "batch_expired" else "server"
        raise ProviderError(kind, f"batch request {cid}: {code}: {message}")
    status = int(response.get("status_code") or 0)
    body = response.get("body")
    if status >= 400:
        raise http_error(status, None, body, f"batch request {cid} failed")
    if not isinstance(body, dict):
        raise ProviderError("server", f"batch request {cid}: a response without a body")
    return json.dumps(body)
