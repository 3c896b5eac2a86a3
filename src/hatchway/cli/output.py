"""How the `hatchway` command prints: aligned tables and key/value views (rich), colours for states and verdicts,
JSON for scripts, and a live status line on stderr.

On a terminal, tables fit its width and carry colours; anywhere else (a pipe, a file, a test) they are plain
text: no colour, no wrapping, no trailing blanks, so `grep` and `awk` read them as `docker ps` output is read.
A status line (spinner or progress bar) only ever appears when stderr is a terminal.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.text import Text

STATE_STYLES = {
    "queued": "dim",
    "building": "blue",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "killed": "yellow",
}
VERDICT_STYLES = {
    "AC": "bold green",
    "WA": "bold red",
    "RE": "bold red",
    "TLE": "bold yellow",
    "MLE": "bold yellow",
    "OLE": "bold yellow",
    "CE": "bold magenta",
    "IE": "bold magenta",
    "SK": "dim",
}
_UNBOUNDED_WIDTH = 1_000_000


def is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def console(stream: IO[str] | None = None) -> Console:
    """A rich console on `stream` (stdout by default): colours only when it is a terminal."""
    from rich.console import Console

    out = sys.stdout if stream is None else stream
    return Console(file=out, highlight=False, soft_wrap=False)


def styled(text: object, style: str | None) -> Text:
    """`text` in `style` (shown only on a terminal)."""
    from rich.text import Text

    return Text("" if text is None else str(text), style=style or "")


def state_text(state: str, reason: str | None = None) -> Text:
    """A job's state, with its reason when it has one, coloured by state."""
    return styled(f"{state} ({reason})" if reason else state, STATE_STYLES.get(state))


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], stream: IO[str] | None = None) -> None:
    """Rows under upper-case headers, columns aligned and two spaces apart, as `docker ps` prints them."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*(cell if not isinstance(cell, str | None) else ("" if cell is None else cell) for cell in row))
    _render(table, stream)


def print_fields(fields: Iterable[tuple[str, Any]], stream: IO[str] | None = None) -> None:
    """A key/value view of one thing: names in the first column, values after them."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False, show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value in fields:
        table.add_row(f"{name}:", value if not isinstance(value, str | None) else ("-" if value is None else value))
    _render(table, stream)


def print_line(text: Text | str, stream: IO[str] | None = None) -> None:
    """One line of (possibly styled) text: coloured on a terminal, plain elsewhere."""
    out = sys.stdout if stream is None else stream
    if is_terminal(out):
        console(out).print(text)
    else:
        out.write(f"{text}\n")
        out.flush()


def print_json(document: Any, stream: IO[str] | None = None) -> None:
    """`document` as indented JSON, for scripts (`--json`)."""
    out = sys.stdout if stream is None else stream
    out.write(json.dumps(document, indent=2) + "\n")
    out.flush()


def say(message: str) -> None:
    """A line of the command's own on stderr, as `hatchway: ...`."""
    sys.stderr.write(f"hatchway: {message}\n")
    sys.stderr.flush()


def _render(renderable: Any, stream: IO[str] | None) -> None:
    out = sys.stdout if stream is None else stream
    if is_terminal(out):
        console(out).print(renderable)
        return
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=_UNBOUNDED_WIDTH, no_color=True, highlight=False, soft_wrap=False).print(renderable)
    out.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))
    out.flush()


def when(iso: str | None) -> str:
    """A time the API gave (ISO 8601, UTC) in local time, to the second."""
    if not iso:
        return "-"
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def megabytes(size_bytes: float | None) -> str:
    return "-" if size_bytes is None else f"{size_bytes / 1e6:.1f} MB"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


class StatusLine:
    """A spinner (or a progress bar once `total` is known) on stderr while something is under way, when stderr
    is a terminal; otherwise it prints nothing. Safe to update and stop from any thread; stopping twice is fine.
    """

    def __init__(self, text: str, *, total: int | None = None, show: bool = True) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if not show or not is_terminal(sys.stderr):
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

        columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
        if total is not None:
            columns += [BarColumn(), MofNCompleteColumn()]
        self._progress = Progress(*columns, console=console(sys.stderr), transient=True)
        self._task = self._progress.add_task(text, total=total)
        self._progress.start()

    def update(self, text: str | None = None, *, advance: int = 0) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=text, advance=advance)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> StatusLine:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
