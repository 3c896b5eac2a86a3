"""gs:// bundles of Fluster jobs, copied to this host by the operator's command (`fluster.gs_command`), since
hatchway speaks no Google Cloud Storage itself. The copy lands in one directory that hatchway's bundle URL
policy allows (`gs_directory`), and the job's bundle is then that file, fetched like any `file://` bundle.

The gs:// path is the cache key, as in the real worker's bundle cache: a path fetched once is not fetched again
(a bundle's path names its content: the client uploads a new bundle to a new path). The command runs without a
shell, each of its words with `{url}` and `{path}` replaced, so a path cannot inject anything; a gs:// path
starts with `gs://`, so it cannot pass for an option either.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from pathlib import Path

from hatchway.sources.fluster_request import Refusal

GS_DIRECTORY = "fluster-gs"
"""Under the data directory: where gs:// bundles are copied."""
_SHOWN_OUTPUT_CHARS = 500


def gs_directory(data_dir: Path) -> Path:
    return data_dir.resolve() / GS_DIRECTORY


class GsFetcher:
    """Copies gs:// bundles with `command` into `directory`, each path once (concurrent asks share one copy)."""

    def __init__(self, command: list[str], directory: Path, timeout_s: float) -> None:
        self._command = command
        self._directory = directory
        self._timeout_s = timeout_s
        self._inflight: dict[str, asyncio.Task[Path]] = {}

    async def fetch(self, url: str) -> Path:
        """The local copy of `url`. Raises Refusal, saying why, if the command fails."""
        target = self._directory / f"{hashlib.sha256(url.encode()).hexdigest()[:32]}.zip"
        if target.is_file():
            return target
        task = self._inflight.get(url)
        if task is None:
            task = asyncio.create_task(self._copy(url, target), name=f"gs fetch {url}")
            self._inflight[url] = task
            task.add_done_callback(lambda _: self._inflight.pop(url, None))
        return await asyncio.shield(task)

    async def _copy(self, url: str, target: Path) -> Path:
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        part = target.with_name(f"{target.name}.part-{secrets.token_hex(4)}")
        argv = [word.replace("{url}", url).replace("{path}", str(part)) for word in self._command]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            raise Refusal(f"fetching bundle {url}: fluster.gs_command cannot run: {exc}") from exc
        try:
            async with asyncio.timeout(self._timeout_s):
                output, _ = await process.communicate()
        except TimeoutError as exc:
            process.kill()
            await process.wait()
            part.unlink(missing_ok=True)
            raise Refusal(f"fetching bundle {url}: fluster.gs_command took longer than {self._timeout_s:g} s") from exc
        if process.returncode != 0 or not part.is_file():
            part.unlink(missing_ok=True)
            said = output.decode(errors="replace").strip()[-_SHOWN_OUTPUT_CHARS:]
            raise Refusal(
                f"fetching bundle {url}: fluster.gs_command exited {process.returncode}"
                + (" without writing {path}" if process.returncode == 0 else "")
                + (f": {said}" if said else "")
            )
        part.replace(target)
        return target
