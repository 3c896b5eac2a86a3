"""The `hatchway` command line: the parser, and how every command ends (exits.py holds the table of codes).

Each group of commands lives in a module of its own and imports what it needs when it runs, so that `--help`,
a client command or `hatchway run` pays only for its own imports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from hatchway.cli import client
from hatchway.cli.exits import CommandError, Exit
from hatchway.cli.grade import add_grade_command
from hatchway.cli.images import add_image_commands
from hatchway.cli.jobs import add_job_commands
from hatchway.cli.local import add_run_command
from hatchway.cli.output import say
from hatchway.cli.profiles import add_profile_commands
from hatchway.cli.sources import add_sources_command
from hatchway.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hatchway` console script."""
    argv = sys.argv[1:] if argv is None else argv
    # Everything after `--` is the job's command, options included; argparse alone cannot say that.
    command: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    args = _parser().parse_args(argv)
    if hasattr(args, "command"):
        args.command = [*args.command, *command]
    try:
        result: int = args.handler(args)
    except ConfigError as exc:
        say(str(exc))
        return Exit.USAGE
    except CommandError as exc:
        say(str(exc))
        return exc.code
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except BrokenPipeError:  # `hatchway list | head`: the reader has all it wanted
        sys.stderr.close()
        return Exit.OK
    return result


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import os

    import uvloop

    from hatchway.cli import logconfig
    from hatchway.cli.serve import serve
    from hatchway.settings import load_settings

    settings = load_settings(args.config)
    logconfig.configure(settings.log_level)
    # uvloop: the event loop does a job's bookkeeping (HTTP, store, thread hand-offs) at a fraction of the CPU.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        if runner.run(serve(settings)):
            # Stopped at once (a second signal): threads still waiting on the engine for jobs' containers would
            # hold the exit until those end. The store is closed; the containers are the next start's to take up.
            logging.shutdown()
            os._exit(Exit.OK)
    return Exit.OK


class _Version(argparse.Action):
    """`--version`, reading the installed metadata only when asked (importlib.metadata costs every command ~40 ms)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from hatchway import __version__

        parser.exit(message=f"hatchway {__version__}\n")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hatchway", description="Run jobs in isolated containers.")
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    remote = client.remote_options()

    serve_cmd = commands.add_parser("serve", help="run the worker and its HTTP API")
    serve_cmd.add_argument("--config", type=Path, help="YAML settings file (or $HATCHWAY_CONFIG)")
    serve_cmd.set_defaults(handler=_serve)

    add_run_command(commands, remote)
    add_job_commands(commands, remote)
    add_image_commands(commands, remote)
    add_sources_command(commands, remote)
    add_profile_commands(commands)
    add_grade_command(commands, remote)
    return parser


if __name__ == "__main__":
    sys.exit(main())
