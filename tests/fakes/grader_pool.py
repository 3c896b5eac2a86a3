"""Doubles of the grader worker pool (Fathuss, services/grader-orchestration), as its code talks to a grader.

`PoolClient` is what calls the orchestrator: the API gateway (api-gateway/src/index.ts) forwards a user's body
and `Authorization` header to `POST /grade` and `POST /submit`, and `GET /submit/:id`; the AI code analyzer
posts `{code, language, testCases}` to `/grade`; the challenge service posts `{challengeId, code, language,
userId}` to `/submit`. Each reads the JSON answer whatever its status (`response.json()`), and a client polls
`GET` until `status` is `completed` or `failed`.

`Orchestrator` is the orchestrator calling one of its workers (index.ts, `processGradingJob`): it POSTs the job's
payload with the limits on top (`{code, language, testCases, challengeId, userId, metadata, gasLimit,
timeLimit, enableTracing, cachedResult}`) to `<endpoint>/grade`, waits for the result in the same answer (its
timeout: `min(timeLimit, WORKER_TIMEOUT)` seconds), and builds its GradingResult from it as index.ts does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_GAS_LIMIT = 1_000_000
DEFAULT_TIME_LIMIT_S = 30
WORKER_TIMEOUT_S = 300


@dataclass
class PoolClient:
    """The orchestrator's clients, pointed at `base_url` (hatchway in the orchestrator's place)."""

    base_url: str
    user_token: str = "a-users-jwt-the-gateway-forwards"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.user_token}", "Content-Type": "application/json"}

    def submit(self, body: dict[str, Any], path: str = "/submit") -> httpx.Response:
        return httpx.post(f"{self.base_url}{path}", json=body, headers=self._headers(), timeout=60)

    def result(self, job_id: str, path: str = "/submit") -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{self.base_url}{path}/{job_id}", headers=self._headers()).json()
        return answer

    def wait_done(self, job_id: str, path: str = "/submit", timeout_s: float = 120) -> dict[str, Any]:
        """Poll as a client does until the job is `completed` or `failed`."""
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self.result(job_id, path)
            if answer.get("status") in ("completed", "failed"):
                return answer
            assert time.monotonic() < deadline, f"job {job_id} still {answer.get('status')}"
            time.sleep(0.2)

    def batch(self, submissions: list[dict[str, Any]], tournament_id: str) -> httpx.Response:
        return httpx.post(
            f"{self.base_url}/grade/batch",
            json={"submissions": submissions, "tournamentId": tournament_id},
            headers=self._headers(),
            timeout=60,
        )

    def workers_status(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{self.base_url}/workers/status", headers=self._headers()).json()
        return answer


@dataclass
class Orchestrator:
    """The orchestrator's side of one job: the call to a worker, and the result it records."""

    endpoint: str

    def grade(self, job_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Process one job as processGradingJob does; the job as it would be stored (`status`, `result` or
        `error`)."""
        started = time.monotonic()
        metadata = payload.get("metadata") or {}
        enhanced = {
            **payload,
            "gasLimit": metadata.get("gasLimit") or DEFAULT_GAS_LIMIT,
            "timeLimit": metadata.get("timeLimit") or DEFAULT_TIME_LIMIT_S,
            "enableTracing": metadata.get("enableTracing", True),
            "cachedResult": None,
        }
        timeout_s = min(enhanced["timeLimit"], WORKER_TIMEOUT_S)
        try:
            response = httpx.post(f"{self.endpoint}/grade", json=enhanced, timeout=timeout_s)
            response.raise_for_status()  # axios rejects any status outside 2xx
            raw = response.json()
            processing_ms = (time.monotonic() - started) * 1000
            if (raw.get("gasUsed") or 0) > enhanced["gasLimit"]:
                raise RuntimeError(f"Gas limit exceeded: {raw['gasUsed']} > {enhanced['gasLimit']}")
            if processing_ms > enhanced["timeLimit"] * 1000:
                raise RuntimeError(f"Time limit exceeded: {processing_ms}ms > {enhanced['timeLimit'] * 1000}ms")
        except (httpx.HTTPError, RuntimeError) as exc:
            return {"jobId": job_id, "status": "failed", "error": str(exc)}
        result = {
            "jobId": job_id,
            "status": "completed",
            "score": raw.get("score") or 0,
            "passedTests": raw.get("passedTests") or 0,
            "totalTests": raw.get("totalTests") or 0,
            "gasUsed": raw.get("gasUsed"),
            "timeUsed": round(processing_ms),
            "executionTrace": raw.get("executionTrace"),
            "output": raw.get("output") or "",
            "error": raw.get("error"),
            "language": payload.get("language"),
        }
        return {"jobId": job_id, "status": "completed", "result": result, "raw": raw}
