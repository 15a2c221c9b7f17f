"""Locust users for ``bench/load.py``: Segment SDKs posting ``/v1/batch`` requests to ``patron serve``.

Run by ``bench/load.py`` (which starts the collector and passes the settings in the environment), not
on its own. Each user posts one batch after another with no pause (a closed loop: the load is as high
as the collector answers), like an SDK's flush thread that always has a full queue.

Every message maps to exactly one Patron event (a custom track, an identify, a page, an
``Order Completed`` with no leftover property, so no companion event) and has a fresh UUID
``messageId``, so no message is a duplicate of another. The number of events the collector
accepted is then the number of messages it answered for: all of a ``200``'s, and those of a ``400``
that its ``errors`` do not list. Those per-message counts, every request's latency and the
span from the first request to the last answer are kept here and written as JSON to
``PATRON_LOAD_RESULT`` when locust quits (locust's own statistics round percentiles and, in this
version, leave out the requests that finish after ``--run-time``, during ``--stop-timeout``).
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any, ClassVar

from load import batch_body  # bench/load.py: locust puts the locustfile's directory on sys.path
from locust import FastHttpUser, constant, events, task

KEY = os.environ.get("PATRON_LOAD_KEY", "")
BATCH = int(os.environ.get("PATRON_LOAD_BATCH", "50"))
RESULT = os.environ.get("PATRON_LOAD_RESULT", "")
counts = {"requests": 0, "messages_sent": 0, "accepted": 0, "rejected": 0, "failed_requests": 0}
failures: dict[str, int] = {}
latencies_ms: list[float] = []
"""Every request's time to its answer: exact percentiles (locust's own statistics round them)."""
span: list[float] = []
"""perf_counter of the first request's start and of the last answer: the span the rates divide by."""


class SegmentSdk(FastHttpUser):
    """An SDK flushing full batches back to back."""

    wait_time = constant(0)
    headers: ClassVar[dict[str, str]] = {
        "Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode(),
        "Content-Type": "application/json",
    }

    @task
    def post_batch(self) -> None:
        body = batch_body(BATCH)
        counts["requests"] += 1
        counts["messages_sent"] += BATCH
        started = time.perf_counter()
        span[:1] = span[:1] or [started]
        with self.client.post("/v1/batch", data=body, headers=self.headers, catch_response=True) as answer:
            answered = time.perf_counter()
            latencies_ms.append((answered - started) * 1000)
            span[1:] = [answered]
            status = answer.status_code
            if status == 200:
                counts["accepted"] += BATCH
                answer.success()
                return
            if status == 400:  # the listed messages were rejected, the others stored
                rejected = len(json.loads(answer.content or b"{}").get("errors", []))
                counts["accepted"] += BATCH - rejected
                counts["rejected"] += rejected
            else:  # 0 (connection error/timeout), 401, 503: nothing known to be stored
                counts["failed_requests"] += 1
            reason = f"{status}: {(answer.text or '')[:200]}"
            failures[reason] = failures.get(reason, 0) + 1
            answer.failure(reason)


@events.quitting.add_listener
def _write_counts(environment: Any, **_: Any) -> None:
    if RESULT:
        with open(RESULT, "w", encoding="utf-8") as out:
            seconds = span[1] - span[0] if len(span) == 2 else 0.0
            json.dump(
                {
                    **counts,
                    "batch": BATCH,
                    "seconds": seconds,
                    "latencies_ms": latencies_ms,
                    "failures": failures,
                },
                out,
            )
