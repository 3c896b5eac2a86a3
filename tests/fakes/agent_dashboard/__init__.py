"""A double of the worker-agent system's dashboard (ProcessingCluster, dash/): its page (index.html, script.js,
written anew to behave as dash/public/script.js does; see the script's header), served as its dash/index.js serves
it: static files on port 10000, another origin than the workers it reads at http://<ip>:9000."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.fakes import serving

PAGE = Path(__file__).parent
PORT = 10000
"""Where the system's dashboard serves: its workers allow this origin (`cors_origins`) to read them."""


class _Static(SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=str(PAGE), **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def agent_dashboard(port: int = PORT) -> Iterator[str]:
    """The page on 127.0.0.1:`port` for the duration of the block; yields its URL."""
    with serving(_Static, port) as url:
        yield f"{url}/index.html"
