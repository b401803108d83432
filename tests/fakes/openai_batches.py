"""OpenAI's Files + Batches endpoints, answering each batch line like a live chat request.

Wire format as the API reference and the openai SDK's types give it:

- ``POST /v1/files`` (multipart: ``purpose=batch``, ``file``) -> a File object
  (``id, object: "file", bytes, created_at, filename, purpose, status``);
- ``POST /v1/batches`` (``input_file_id, endpoint, completion_window``) -> a Batch object,
  status ``validating``; ``GET /v1/batches/{id}`` -> the Batch (``in_progress`` while
  :attr:`BatchEndpoints.gate` is clear, then ``completed`` or ``expired``, with
  ``output_file_id``, ``error_file_id``, ``request_counts``);
- ``GET /v1/files/{id}/content`` -> JSONL lines ``{"id", "custom_id", "response":
  {"status_code", "request_id", "body"}, "error"}``; successes in the output file, non-200
  answers and an expired batch's unrun requests (``error.code = "batch_expired"``, response
  null) in the error file.

Knobs: ``gate`` (clear it to hold every batch ``in_progress``; :attr:`submitted_event` is set
when a batch is created), ``expire_next`` (that many next batches expire after answering
``expired_answers`` lines), ``fail_next_items`` (that many next lines answer HTTP 500).
"""

from __future__ import annotations

import json
import threading
import time
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any


def _json(status: int, payload: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    return status, {"content-type": "application/json"}, json.dumps(payload).encode()


def _error(status: int, message: str) -> tuple[int, dict[str, str], bytes]:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return _json(status, body)


class BatchEndpoints:
    """Mixin for :class:`FakeOpenAIServer` (before FakeServer, whose ``answer(body)`` it uses)."""

    answer: Any

    def reset_batches(self) -> None:
        """Forget every file and batch, reset the knobs and counters, open the gate."""
        self._init_batches()

    def _init_batches(self) -> None:
        self._batch_lock = threading.Lock()
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.gate = threading.Event()
        self.gate.set()
        self.submitted_event = threading.Event()
        self.polled_event = threading.Event()
        self.expire_next = 0
        self.expired_answers = 1
        self.fail_next_items = 0
        self.batch_submissions = 0
        self.batch_polls = 0
        self.batch_lines = 0

    # ------------------------------------------------------------------ routing
    def handle_other(
        self, method: str, path: str, headers: dict[str, str], data: bytes
    ) -> tuple[int, dict[str, str], bytes] | None:
        parts = path.strip("/").split("/")
        if parts[:1] != ["v1"]:
            return None
        parts = parts[1:]
        with self._batch_lock:
            if method == "POST" and parts == ["files"]:
                return self._upload(headers.get("content-type", ""), data)
            if method == "POST" and parts == ["batches"]:
                return self._create(json.loads(data or b"{}"))
            if method == "GET" and len(parts) == 2 and parts[0] == "batches":
                return self._retrieve(parts[1])
            if (
                method == "GET"
                and len(parts) == 3
                and parts[0] == "files"
                and parts[2] == "content"
            ):
                file = self.files.get(parts[1])
                if file is None:
                    return _error(404, f"No such File object: {parts[1]}")
                return 200, {"content-type": "application/octet-stream"}, file["data"]
        return None

    # ------------------------------------------------------------------ files
    def _store_file(self, name: str, purpose: str, data: bytes) -> dict[str, Any]:
        file_id = f"file-{len(self.files) + 1:06d}"
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": name,
            "purpose": purpose,
            "status": "processed",
        }
        self.files[file_id] = {**meta, "data": data}
        return meta

    def _upload(self, content_type: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
        head = f"Content-Type: {content_type}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + data)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            fields[str(name)] = (
                part.get_filename(),
                payload if isinstance(payload, bytes) else b"",
            )
        if "file" not in fields or "purpose" not in fields:
            return _error(400, "file and purpose are required")
        purpose = fields["purpose"][1].decode()
        if purpose != "batch":
            return _error(400, f"unexpected purpose {purpose!r}")
        filename, content = fields["file"]
        for number, line in enumerate(content.decode().splitlines(), 1):
            row = json.loads(line)
            if set(row) != {"custom_id", "method", "url", "body"} or row["method"] != "POST":
                return _error(400, f"line {number}: not a batch request line")
        return _json(200, self._store_file(filename or "upload.jsonl", purpose, content))

    # ------------------------------------------------------------------ batches
    def _create(self, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        file = self.files.get(body.get("input_file_id", ""))
        if file is None:
            return _error(400, f"input_file_id {body.get('input_file_id')!r} not found")
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return _error(400, "endpoint and completion_window must be chat completions and 24h")
        self.batch_submissions += 1
        batch_id = f"batch_{len(self.batches) + 1:06d}"
        lines = [json.loads(line) for line in file["data"].decode().splitlines()]
        now = int(time.time())
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "errors": None,
            "input_file_id": file["id"],
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + 86400,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        expire = self.expire_next > 0
        self.expire_next -= expire
        self.batches[batch_id] = {"object": batch, "lines": lines, "expire": expire}
        self.submitted_event.set()
        return _json(200, batch)

    def _retrieve(self, batch_id: str) -> tuple[int, dict[str, str], bytes]:
        entry = self.batches.get(batch_id)
        if entry is None:
            return _error(404, f"No such Batch object: {batch_id}")
        self.batch_polls += 1
        self.polled_event.set()
        batch = entry["object"]
        if batch["status"] in ("validating", "in_progress"):
            batch["status"] = "in_progress"
            batch["in_progress_at"] = batch["in_progress_at"] or int(time.time())
            if self.gate.is_set():
                self._run(batch_id, entry)
        return _json(200, batch)

    def _run(self, batch_id: str, entry: dict[str, Any]) -> None:
        """Answer every line through the chat endpoint's own logic; write the result files."""
        batch = entry["object"]
        output, errors = [], []
        for n, line in enumerate(entry["lines"]):
            self.batch_lines += 1
            request_id = f"req_{batch_id}_{n}"
            row: dict[str, Any] = {
                "id": f"batch_req_{batch_id}_{n}",
                "custom_id": line["custom_id"],
            }
            if entry["expire"] and n >= self.expired_answers:
                message = "This request could not be executed before the completion window expired."
                errors.append(
                    row | {"response": None, "error": {"code": "batch_expired", "message": message}}
                )
                continue
            if self.fail_next_items > 0:
                self.fail_next_items -= 1
                failure = {"error": {"message": "fake batch item failure", "type": "server_error"}}
                response = {"status_code": 500, "request_id": request_id, "body": failure}
                errors.append(row | {"response": response, "error": None})
                continue
            status, _, payload = self.answer(line["body"])
            response = {
                "status_code": status,
                "request_id": request_id,
                "body": json.loads(payload),
            }
            (output if status == 200 else errors).append(
                row | {"response": response, "error": None}
            )
        now = int(time.time())
        for key, rows in (("output_file_id", output), ("error_file_id", errors)):
            if rows:
                data = ("\n".join(json.dumps(r) for r in rows) + "\n").encode()
                batch[key] = self._store_file(f"{batch_id}_{key}.jsonl", "batch_output", data)["id"]
        batch["request_counts"] = {
            "total": len(entry["lines"]),
            "completed": len(output),
            "failed": len(errors),
        }
        batch["status"] = "expired" if entry["expire"] else "completed"
        batch["expired_at" if entry["expire"] else "completed_at"] = now
        batch["finalizing_at"] = now
