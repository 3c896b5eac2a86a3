"""The `hatchway` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import uvloop
from pydantic import ValidationError

from hatchway import __version__, logconfig
from hatchway.cli import client, profiles
from hatchway.cli.grade import add_grade_command
from hatchway.cli.local import run_locally
from hatchway.cli.serve import serve
from hatchway.errors import ConfigError
from hatchway.models import JobRequest
from hatchway.settings import load_settings


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
        print(f"hatchway: {exc}", file=sys.stderr)
        return 2
    except client.ClientError as exc:
        print(f"hatchway: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    logconfig.configure(settings.log_level)
    # uvloop: the event loop does a job's bookkeeping (HTTP, store, thread hand-offs) at a fraction of the CPU.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(settings))
    return 0


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    logconfig.configure("WARNING")
    request = _request(args)
    return asyncio.run(run_locally(settings, request))


def _submit(args: argparse.Namespace) -> int:
    return client.submit(client.remote(args), _request(args).model_dump(exclude_none=True), wait=args.wait)


def _request(args: argparse.Namespace) -> JobRequest:
    command = args.command
    if not command:
        raise client.ClientError("give the command after the image, e.g. `-- echo hello`")
    limits = {
        name: getattr(args, name)
        for name in ("timeout_s", "memory_mb", "cpus", "pids", "output_bytes", "disk_mb")
        if getattr(args, name) is not None
    }
    fields = {
        "image": args.image,
        "command": command,
        "env": dict(_pairs(args.env, "=", "--env")),
        "limits": limits,
        "network": args.network,
        "runtime": args.runtime,
        "ports": args.port or [],
        "bundle_url": args.bundle_url,
        "bundle_sha256": args.bundle_sha256,
        "stdin": sys.stdin.read() if args.interactive else None,
        "files": {dest: Path(src).read_text() for dest, src in _pairs(args.file, "=", "--file")},
    }
    if args.workdir:
        fields["workdir"] = args.workdir
    if getattr(args, "id", None):
        fields["id"] = args.id
    if getattr(args, "priority", None) is not None:
        fields["priority"] = args.priority
    if getattr(args, "label", None):
        fields["labels"] = dict(_pairs(args.label, "=", "--label"))
    try:
        return JobRequest.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise client.ClientError(f"invalid job: {problems}") from exc


def _pairs(items: list[str] | None, sep: str, flag: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items or []:
        key, found, value = item.partition(sep)
        if not found:
            raise client.ClientError(f"{flag} takes KEY{sep}VALUE, not {item!r}")
        pairs.append((key, value))
    return pairs


def _job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image")
    parser.add_argument("command", nargs="*", help="the command and its arguments, after --")
    parser.add_argument("--timeout-s", type=float)
    parser.add_argument("--memory-mb", type=int)
    parser.add_argument("--cpus", type=float)
    parser.add_argument("--pids", type=int)
    parser.add_argument("--output-bytes", type=int)
    parser.add_argument("--disk-mb", type=int)
    parser.add_argument("--env", "-e", action="append", metavar="KEY=VALUE")
    parser.add_argument("--file", action="append", metavar="DEST=LOCAL", help="copy a local file into the job")
    parser.add_argument("--network", choices=["none", "host"], default="none")
    parser.add_argument("--runtime", choices=["docker", "gvisor", "auto"], default="auto")
    parser.add_argument("--port", action="append", metavar="NAME", help="allocate a host port (needs --network host)")
    parser.add_argument("--bundle-url")
    parser.add_argument("--bundle-sha256")
    parser.add_argument("--workdir")
    parser.add_argument("--interactive", "-i", action="store_true", help="pass this command's stdin to the job")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hatchway", description="Run jobs in isolated containers.")
    parser.add_argument("--version", action="version", version=f"hatchway {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    remote = client.remote_options()

    serve_cmd = commands.add_parser("serve", help="run the worker and its HTTP API")
    serve_cmd.add_argument("--config", type=Path, help="YAML settings file (or $HATCHWAY_CONFIG)")
    serve_cmd.set_defaults(handler=_serve)

    run_cmd = commands.add_parser("run", help="run one job on the local engine, without a server")
    run_cmd.add_argument("--config", type=Path)
    _job_options(run_cmd)
    run_cmd.set_defaults(handler=_run)

    submit_cmd = commands.add_parser("submit", parents=[remote], help="queue a job on a running worker")
    _job_options(submit_cmd)
    submit_cmd.add_argument("--id")
    submit_cmd.add_argument("--priority", type=int)
    submit_cmd.add_argument("--label", action="append", metavar="KEY=VALUE")
    submit_cmd.add_argument("--wait", action="store_true", help="answer once the job has ended")
    submit_cmd.set_defaults(handler=_submit)

    status_cmd = commands.add_parser("status", parents=[remote], help="show a job")
    status_cmd.add_argument("job_id")
    status_cmd.set_defaults(handler=lambda a: client.status(client.remote(a), a.job_id))

    logs_cmd = commands.add_parser("logs", parents=[remote], help="print a job's output")
    logs_cmd.add_argument("job_id")
    logs_cmd.add_argument("--follow", "-f", action="store_true")
    logs_cmd.add_argument("--stream", choices=["stdout", "stderr", "both"], default="both")
    logs_cmd.add_argument("--tail", type=int)
    logs_cmd.set_defaults(handler=lambda a: client.logs(client.remote(a), a.job_id, a.stream, a.tail, a.follow))

    kill_cmd = commands.add_parser("kill", parents=[remote], help="cancel or stop a job")
    kill_cmd.add_argument("job_id")
    kill_cmd.add_argument("--grace-s", type=float)
    kill_cmd.set_defaults(handler=lambda a: client.kill(client.remote(a), a.job_id, a.grace_s))

    list_cmd = commands.add_parser("list", parents=[remote], help="list jobs, newest first")
    list_cmd.add_argument("--state")
    list_cmd.add_argument("--label", action="append", metavar="KEY:VALUE")
    list_cmd.add_argument("--limit", type=int, default=20)
    list_cmd.set_defaults(handler=lambda a: client.list_jobs(client.remote(a), a.state, a.label, a.limit))

    images_cmd = commands.add_parser("images", help="images the worker manages")
    images = images_cmd.add_subparsers(required=True, metavar="ACTION")
    import_cmd = images.add_parser("import", parents=[remote], help="make an image from a root filesystem tar")
    import_cmd.add_argument("name")
    import_cmd.add_argument("rootfs", type=Path)
    import_cmd.set_defaults(handler=lambda a: client.import_image(client.remote(a), a.name, a.rootfs))
    images_list = images.add_parser("list", parents=[remote], help="list managed images")
    images_list.set_defaults(handler=lambda a: client.list_images(client.remote(a)))
    _profile_commands(commands)
    add_grade_command(commands, remote)
    return parser


def _profile_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    profiles_cmd = commands.add_parser("profiles", help="language profiles and their local images")
    actions = profiles_cmd.add_subparsers(required=True, metavar="ACTION")
    list_cmd = actions.add_parser("list", help="list profiles and whether their images are on this engine")
    list_cmd.add_argument("--config", type=Path, help="YAML settings file (or $HATCHWAY_CONFIG)")
    list_cmd.set_defaults(handler=lambda a: profiles.list_profiles(a.config))
    build_cmd = actions.add_parser("build", help="build profiles' images from Debian packages")
    build_cmd.add_argument("names", nargs="*", metavar="NAME", help="profiles to build (all when none)")
    build_cmd.add_argument("--force", action="store_true", help="rebuild images that are present")
    build_cmd.add_argument("--config", type=Path, help="YAML settings file (or $HATCHWAY_CONFIG)")
    build_cmd.set_defaults(handler=lambda a: profiles.build_profiles(a.config, a.names, a.force))


if __name__ == "__main__":
    sys.exit(main())
