"""hatchway's own image builder: it runs a Dockerfile (`dockerfile.parse`) instruction by instruction through the
engine's API, each RUN in a container made as the job's own would be, with the job's runtime and limits
(`build_steps`) and its writes on a disk of the job's size (`build_disk`). The engine's builder, which it
replaces, runs every step as root with the engine's default runtime and capabilities and no limit at all, and
takes no runtime.

Instructions that only change the image's configuration (ENV, CMD, LABEL, USER, WORKDIR, ...) are kept here and
written into the final image at the end; RUN, COPY and ADD each commit a layer. FROM and COPY --from take an
earlier stage by name or number, or an allowed image. ARGs take their defaults (builds take no arguments): they
are in RUN's environment and in substitutions, never in the image's environment.
"""

from __future__ import annotations

import copy
import posixpath
import re
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hatchway.engines.build_copy import Destination, Owner, from_archive, from_context, owner_of
from hatchway.engines.build_steps import BuildSteps
from hatchway.engines.dockerfile import Dockerfile, Instruction, Stage, stage_index
from hatchway.engines.dockerfile_words import expand, expand_words, split_raw
from hatchway.engines.offline_etc import OfflineEtc, temporary_offline_etc
from hatchway.engines.volumes import Volumes
from hatchway.errors import BuildFailed, NotAllowed

SCRATCH_IMAGE = "hatchway-scratch:1"
"""An image with nothing in it, for `FROM scratch` (the engine makes containers of images only)."""
_DEFAULT_SHELL = ["/bin/sh", "-c"]
_PORT = re.compile(r"(\d+)(?:-(\d+))?(?:/(tcp|udp|sctp))?", re.IGNORECASE)
_TABLE_BYTES = 4 * 1024 * 1024
_OURS = "hatchway."


@dataclass(frozen=True)
class BuildHost:
    """What every build on a worker shares."""

    worker_id: str
    volumes: Volumes
    """Where each build's disk is made (`build_disk`)."""
    runtimes: Mapping[str, str | None]
    """Engine name (`docker`, `gvisor`) -> the engine's runtime for it (None: its default, runc)."""
    capabilities: tuple[str, ...] = ()
    """What RUN steps get beyond none at all (`build_capabilities`)."""
    disk_unlimited: bool = False
    """Build on a worker that cannot limit a build's disk (`build_disk_unlimited`)."""
    offline_etc: Callable[[], OfflineEtc] = temporary_offline_etc


@dataclass
class _Stage:
    name: str
    image: str
    """The id of its image so far."""
    config: dict[str, Any]
    """The configuration the Dockerfile gives its image so far (the engine's image config fields)."""
    args: dict[str, str | None] = field(default_factory=dict)
    cmd_set: bool = False


class Builder:
    """Runs one Dockerfile; blocking, in one of the engine's threads."""

    def __init__(
        self,
        steps: BuildSteps,
        *,
        files: dict[str, bytes],
        ensure: Callable[[str], object],
        image_allowed: Callable[[str], bool],
        on_output: Callable[[str], None],
    ) -> None:
        self._steps = steps
        self._files = files
        self._ensure = ensure
        self._image_allowed = image_allowed
        self._on_output = on_output
        self._escape = "\\"
        self._global: dict[str, str | None] = {}
        self._stages: list[_Stage] = []

    def run(self, plan: Dockerfile, tag: str, labels: Mapping[str, str]) -> str:
        """Build `plan` into image `tag`, whose labels are the Dockerfile's and `labels`; its id."""
        self._escape = plan.escape
        total = len(plan.global_args) + sum(1 + len(stage.instructions) for stage in plan.stages)
        step = 0
        for instruction in plan.global_args:
            step += 1
            self._on_output(f"Step {step}/{total} : {instruction.text}")
            self._arg(self._global, instruction, {k: v for k, v in self._global.items() if v is not None})
        for planned in plan.stages:
            step += 1
            self._on_output(
                f"Step {step}/{total} : FROM {planned.base}" + (f" AS {planned.name}" if planned.name else "")
            )
            stage = self._from(planned)
            for instruction in planned.instructions:
                step += 1
                self._on_output(f"Step {step}/{total} : {instruction.text}")
                self._steps.check_deadline()
                getattr(self, f"_do_{instruction.keyword.lower()}")(stage, instruction)
            self._stages.append(stage)
        final = self._stages[-1]
        config = {key: value for key, value in final.config.items() if key != "Image"}
        # Labels named hatchway.* are the worker's own (a base image built here has some): only `labels` are kept.
        kept = {key: value for key, value in (config.get("Labels") or {}).items() if not key.startswith(_OURS)}
        config["Labels"] = {**kept, **labels}
        image_id = self._steps.write_image(final.image, config, tag)
        self._on_output(f"Successfully built {image_id.removeprefix('sha256:')[:12]}")
        self._on_output(f"Successfully tagged {tag}")
        return image_id

    # Stages.

    def _from(self, planned: Stage) -> _Stage:
        earlier = stage_index(planned.base, [stage.name for stage in self._stages])
        if earlier is not None:
            source = self._stages[earlier]
            return _Stage(planned.name, source.image, copy.deepcopy(source.config))
        if planned.base.lower() == "scratch":
            return _Stage(planned.name, self._steps.scratch_image(SCRATCH_IMAGE), {})
        info = self._base_image(planned.base)
        return _Stage(planned.name, str(info["Id"]), copy.deepcopy(info.get("Config") or {}))

    def _base_image(self, image: str) -> dict[str, Any]:
        if not self._image_allowed(image):
            raise NotAllowed(f"the Dockerfile's base image {image!r} is not in the worker's allowed images")
        self._ensure(image)
        self._steps.check_deadline()
        info = self._steps.inspect_image(image)
        if (info.get("Config") or {}).get("OnBuild"):
            raise BuildFailed(
                f"the base image {image!r} has ONBUILD triggers, which this worker's builder does not run"
            )
        return info

    # Instructions that make a layer.

    def _do_run(self, stage: _Stage, instruction: Instruction) -> None:
        argv = instruction.exec_form() or [*(stage.config.get("Shell") or _DEFAULT_SHELL), instruction.args]
        image_env = _env(stage.config)
        args = {name: value for name, value in stage.args.items() if value is not None and name not in image_env}
        container = self._create(stage, argv, {**args, **image_env})
        self._steps.run(container, " ".join(argv))
        stage.image = self._steps.commit(container)

    def _do_copy(self, stage: _Stage, instruction: Instruction) -> None:
        keyword = instruction.keyword
        variables = self._variables(stage)
        form = instruction.exec_form()
        if form is not None:
            words = [expand(word, variables, self._escape) for word in form]
        else:
            words = expand_words(instruction.args, variables, self._escape)
        if len(words) < 2:
            raise BuildFailed(f"line {instruction.line}: {keyword} needs a source and a destination")
        dest = Destination.of(words[-1], stage.config.get("WorkingDir") or "/")
        container = self._create(stage, ["/bin/sh", "-c", f"#(nop) {instruction.text}"], {})
        owner = None
        if "chown" in instruction.flags:
            chown = expand(instruction.flags["chown"], variables, self._escape)
            owner = owner_of(chown, lambda: self._table(container, "passwd"), lambda: self._table(container, "group"))

        def is_directory() -> bool:
            return self._steps.is_directory(container, dest.path)

        if "from" in instruction.flags:
            self._copy_from(instruction, words[:-1], dest, container, is_directory=is_directory, owner=owner)
        else:
            archive = from_context(
                self._files, words[:-1], dest, is_directory=is_directory, owner=owner, unpack=keyword == "ADD",
                what=keyword,
            )  # fmt: skip
            with archive:
                self._steps.put(container, archive, keyword)
        stage.image = self._steps.commit(container)

    _do_add = _do_copy

    def _copy_from(
        self,
        instruction: Instruction,
        sources: list[str],
        dest: Destination,
        container: str,
        *,
        is_directory: Callable[[], bool],
        owner: Owner | None,
    ) -> None:
        reference = instruction.flags["from"]
        earlier = stage_index(reference, [stage.name for stage in self._stages])
        image = self._stages[earlier].image if earlier is not None else str(self._base_image(reference)["Id"])
        what = f"COPY --from={reference}"
        if len(sources) > 1 and not dest.directory:
            raise BuildFailed(f"{what}: with more than one source, the destination must be a directory ending in /")
        source = self._steps.create(image, ["#(nop)"], user="", workdir="/", env={}, writable=False)
        try:
            for path in sources:
                if any(char in path for char in "*?["):
                    raise BuildFailed(f"{what}: wildcards in its sources are not supported by this worker's builder")
                absolute = posixpath.normpath(posixpath.join("/", path))
                fetched, stat = self._steps.get(source, absolute, self._steps.sandbox.disk_mb * 1024 * 1024, what)
                is_dir = bool(int(stat.get("mode", 0)) & (1 << 31))
                name = str(stat.get("name") or posixpath.basename(absolute))
                with from_archive(
                    fetched, name, is_dir, dest, is_directory=is_directory, owner=owner, what=what
                ) as archive:
                    self._steps.put(container, archive, what)
        finally:
            self._steps.remove(source)

    # Instructions that change the configuration.

    def _do_env(self, stage: _Stage, instruction: Instruction) -> None:
        for name, value in self._pairs(stage, instruction):
            env = [item for item in stage.config.get("Env") or [] if item.partition("=")[0] != name]
            stage.config["Env"] = [*env, f"{name}={value}"]

    def _do_label(self, stage: _Stage, instruction: Instruction) -> None:
        labels = dict(self._pairs(stage, instruction))
        if any(name.startswith(_OURS) for name in labels):
            raise BuildFailed(f"line {instruction.line}: labels named {_OURS}* are the worker's; choose another name")
        stage.config["Labels"] = {**(stage.config.get("Labels") or {}), **labels}

    def _do_arg(self, stage: _Stage, instruction: Instruction) -> None:
        self._arg(stage.args, instruction, self._variables(stage))

    def _do_cmd(self, stage: _Stage, instruction: Instruction) -> None:
        stage.config["Cmd"] = self._command(stage, instruction)
        stage.cmd_set = True

    def _do_entrypoint(self, stage: _Stage, instruction: Instruction) -> None:
        stage.config["Entrypoint"] = self._command(stage, instruction)
        if not stage.cmd_set:
            stage.config["Cmd"] = None  # a CMD of the base image is meant for its own entrypoint, as Docker has it

    def _do_shell(self, stage: _Stage, instruction: Instruction) -> None:
        stage.config["Shell"] = instruction.exec_form()

    def _do_user(self, stage: _Stage, instruction: Instruction) -> None:
        stage.config["User"] = expand(instruction.args, self._variables(stage), self._escape)

    def _do_workdir(self, stage: _Stage, instruction: Instruction) -> None:
        path = expand(instruction.args, self._variables(stage), self._escape)
        stage.config["WorkingDir"] = posixpath.normpath(posixpath.join(stage.config.get("WorkingDir") or "/", path))

    def _do_stopsignal(self, stage: _Stage, instruction: Instruction) -> None:
        stage.config["StopSignal"] = expand(instruction.args, self._variables(stage), self._escape)

    def _do_expose(self, stage: _Stage, instruction: Instruction) -> None:
        ports = dict(stage.config.get("ExposedPorts") or {})
        for word in expand_words(instruction.args, self._variables(stage), self._escape):
            match = _PORT.fullmatch(word)
            if match is None:
                raise BuildFailed(f"line {instruction.line}: EXPOSE {word!r} is not a port, a range or port/protocol")
            low, high, protocol = int(match.group(1)), int(match.group(2) or match.group(1)), match.group(3) or "tcp"
            if not 0 < low <= high <= 65535:
                raise BuildFailed(f"line {instruction.line}: EXPOSE {word!r} is not a port between 1 and 65535")
            ports.update({f"{port}/{protocol.lower()}": {} for port in range(low, high + 1)})
        stage.config["ExposedPorts"] = ports

    def _do_maintainer(self, stage: _Stage, instruction: Instruction) -> None:
        return None  # deprecated by Docker and without effect on what a job runs

    # Helpers.

    def _create(self, stage: _Stage, command: list[str], env: Mapping[str, str]) -> str:
        config = stage.config
        return self._steps.create(
            stage.image,
            command,
            user=config.get("User") or "",
            workdir=config.get("WorkingDir") or "/",
            env=env,
            writable=True,
        )

    def _variables(self, stage: _Stage) -> dict[str, str]:
        """What `$NAME` means in the stage now: its ARGs, and its ENV over them."""
        return {**{name: value for name, value in stage.args.items() if value is not None}, **_env(stage.config)}

    def _arg(self, args: dict[str, str | None], instruction: Instruction, variables: Mapping[str, str]) -> None:
        for word in split_raw(instruction.args, self._escape):
            name, given, default = word.partition("=")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise BuildFailed(f"line {instruction.line}: ARG {name!r} is not a valid name")
            args[name] = expand(default, variables, self._escape) if given else self._global.get(name)

    def _pairs(self, stage: _Stage, instruction: Instruction) -> list[tuple[str, str]]:
        """The `name=value` pairs of an ENV or LABEL (or its one `name value`), substituted as they stood before."""
        variables = self._variables(stage)
        words = split_raw(instruction.args, self._escape)
        if "=" not in words[0]:  # the older form: one name, and the rest of the line its value
            value = instruction.args[len(words[0]) :].strip()
            if not value:
                raise BuildFailed(f"line {instruction.line}: {instruction.keyword} {words[0]} needs a value")
            return [(expand(words[0], variables, self._escape), expand(value, variables, self._escape))]
        pairs = []
        for word in words:
            name, equals, value = expand(word, variables, self._escape).partition("=")
            if not equals or not name:
                raise BuildFailed(f"line {instruction.line}: {instruction.keyword} {word!r} is not name=value")
            pairs.append((name, value))
        return pairs

    def _command(self, stage: _Stage, instruction: Instruction) -> list[str]:
        return instruction.exec_form() or [*(stage.config.get("Shell") or _DEFAULT_SHELL), instruction.args]

    def _table(self, container: str, name: str) -> str:
        """The image's /etc/passwd or /etc/group (empty if it has none)."""
        try:
            fetched, _ = self._steps.get(container, f"/etc/{name}", _TABLE_BYTES, f"--chown reading /etc/{name}")
        except BuildFailed:
            return ""
        with fetched, tarfile.open(fileobj=fetched, mode="r|") as tar:
            for member in tar:
                data = tar.extractfile(member)
                if data is not None:
                    return data.read().decode(errors="replace")
        return ""


def _env(config: Mapping[str, Any]) -> dict[str, str]:
    return {name: value for name, _, value in (item.partition("=") for item in config.get("Env") or [])}
