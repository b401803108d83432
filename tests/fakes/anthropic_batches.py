"""Anthropic's Message Batches endpoints, answering each request like a live Messages call.

Wire format as the API reference and the anthropic SDK's types give it:

- ``POST /v1/messages/batches`` (``requests: [{custom_id, params}]``) -> a MessageBatch
  (``id, type: "message_batch", processing_status: "in_progress", request_counts
  {processing, succeeded, errored, canceled, expired}, created_at, expires_at, ended_at,
  archived_at, cancel_initiated_at, results_url``);
- ``GET /v1/messages/batches/{id}`` -> the batch, ``ended`` (with ``results_url``) once
  :attr:`AnthropicBatchEndpoints.gate` is set;
- ``GET /v1/messages/batches/{id}/results`` -> JSONL ``{"custom_id", "result": {"type":
  "succeeded", "message"} | {"type": "errored", "error"} | {"type": "expired"}}``.

Knobs as the OpenAI fake's: ``gate``, ``expire_next`` / ``expired_answers``,
``fail_next_items`` (``errored`` with an ``api_error``); counters ``batch_submissions``.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any


def _json(status: int, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return status, {"content-type": "application/json"}, json.dumps(payload).encode()


def _now(offset_h: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(hours=offset_h)).isoformat().replace("+00:00", "Z")


class AnthropicBatchEndpoints:
    """Mixin for :class:`FakeAnthropicServer` (before FakeServer, whose ``answer`` it uses)."""

    answer: Any
    url: str

    def reset_batches(self) -> None:
        """Forget every batch, reset the knobs and counters, open the gate."""
        self._init_batches()

    def _init_batches(self) -> None:
        self._batch_lock = threading.Lock()
        self.batches: dict[str, dict[str, Any]] = {}
        self.gate = threading.Event()
        self.gate.set()
        self.polled_event = threading.Event()
        self.expire_next = 0
        self.expired_answers = 1
        self.fail_next_items = 0
        self.batch_submissions = 0

    def handle_other(
        self, method: str, path: str, headers: dict[str, str], data: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        parts = path.strip("/").split("/")
        if parts[:3] != ["v1", "messages", "batches"]:
            return None
        rest = parts[3:]
        with self._batch_lock:
            if method == "POST" and not rest:
                return self._create(json.loads(data or b"{}"))
            entry = self.batches.get(rest[0]) if rest else None
            if entry is None:
                message = f"batch {rest[:1]} not found"
                return _json(
                    404, {"type": "error", "error": {"type": "not_found_error", "message": message}}
                )
            if method == "GET" and len(rest) == 1:
                self.polled_event.set()
                if entry["object"]["processing_status"] == "in_progress" and self.gate.is_set():
                    self._run(entry)
                return _json(200, entry["object"])
            if method == "GET" and rest[1:] == ["results"] and "results" in entry:
                return 200, {"content-type": "application/binary"}, entry["results"]
        return None

    def _create(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        requests = body.get("requests") or []
        if not requests or any(set(r) != {"custom_id", "params"} for r in requests):
            error = {"type": "invalid_request_error", "message": "requests: [{custom_id, params}]"}
            return _json(400, {"type": "error", "error": error})
        self.batch_submissions += 1
        batch_id = f"msgbatch_{len(self.batches) + 1:06d}"
        batch = {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": {
                "processing": len(requests),
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            },
            "ended_at": None,
            "created_at": _now(),
            "expires_at": _now(24),
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": None,
        }
        expire = self.expire_next > 0
        self.expire_next -= expire
        self.batches[batch_id] = {"object": batch, "requests": requests, "expire": expire}
        return _json(200, batch)

    def _run(self, entry: dict[str, Any]) -> None:
        batch = entry["object"]
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        lines = []
        for n, request in enumerate(entry["requests"]):
            result: dict[str, Any]
            if entry["expire"] and n >= self.expired_answers:
                result = {"type": "expired"}
            elif self.fail_next_items > 0:
                self.fail_next_items -= 1
                error = {"type": "api_error", "message": "fake batch item failure"}
                result = {"type": "errored", "error": {"type": "error", "error": error}}
            else:
                status, _, payload = self.answer(request["params"])
                body = json.loads(payload)
                if status == 200:
                    result = {"type": "succeeded", "message": body}
                else:
                    result = {"type": "errored", "error": body}
            counts[result["type"]] += 1
            lines.append(json.dumps({"custom_id": request["custom_id"], "result": result}))
        entry["results"] = ("\n".join(lines) + "\n").encode()
        batch.update(
            processing_status="ended",
            request_counts=counts,
            ended_at=_now(),
            results_url=f"{self.url}/v1/messages/batches/{batch['id']}/results",
        )
