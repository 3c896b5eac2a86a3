"""Language profiles: the built-in set, placeholders, settings overrides, and choosing one by language or tool."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from hatchway.errors import ConfigError, HatchwayError, InvalidRequest
from hatchway.grading.profile_images import IMAGE_ENV, import_command, mmdebstrap_command, recipe
from hatchway.judge.profiles import (
    DEFAULT_PROFILES,
    TOOLS,
    Profile,
    ProfileConfig,
    UnknownProfile,
    profile_for,
    resolve_profiles,
)
from hatchway.settings import Settings, load_settings

LANGUAGES = ["c", "cpp", "go", "java", "javascript", "python", "rust"]


def test_the_built_in_profiles_cover_seven_languages_with_local_images() -> None:
    assert sorted(DEFAULT_PROFILES) == LANGUAGES
    for name, profile in DEFAULT_PROFILES.items():
        assert profile.name == name
        assert profile.image == f"hatchway-profile/{name}:latest"
        assert profile.packages, f"{name} has no packages to build its image from"
        assert profile.env["HOME"] == "/tmp", f"{name}: HOME must be writable on a read-only root"


def test_interpreted_languages_check_their_syntax_and_run_the_source_from_box() -> None:
    assert DEFAULT_PROFILES["python"].compile_argv() == ["python3", "-m", "py_compile", "--", "main.py"]
    assert DEFAULT_PROFILES["python"].run_argv() == ["python3", "/box/main.py"]
    assert DEFAULT_PROFILES["javascript"].compile_argv() == ["node", "--check", "--", "main.js"]
    assert DEFAULT_PROFILES["javascript"].run_argv() == ["node", "/box/main.js"]


@pytest.mark.parametrize("name", ["c", "cpp", "rust", "go"])
def test_native_languages_compile_to_box_main(name: str) -> None:
    profile = DEFAULT_PROFILES[name]
    compile_argv = profile.compile_argv()
    assert compile_argv is not None
    assert compile_argv[-1 if name != "c" else -2] == profile.source_name
    assert compile_argv[compile_argv.index("-o") + 1] == "main"
    assert profile.run_argv() == ["/box/main"]


def test_java_compiles_main_java_and_runs_class_main_with_room_for_the_jvm() -> None:
    java = DEFAULT_PROFILES["java"]
    assert java.source_name == "Main.java"
    assert java.compile_argv() == [*(java.compile or ())[:-1], "Main.java"]
    run = java.run_argv()
    assert run[0] == "java"
    assert run[-3:] == ["-cp", "/box", "Main"]
    assert "-XX:+UseSerialGC" in run
    assert java.time_factor == 2
    assert java.extra_memory_mb == 256
    assert java.time_limit_s(1.5) == 3.0
    assert java.memory_limit_mb(256) == 512


def test_go_compiles_without_cgo_or_network_and_with_caches_in_tmp() -> None:
    go = DEFAULT_PROFILES["go"]
    env = go.compile_environment
    assert env["CGO_ENABLED"] == "0"
    assert env["GOPROXY"] == "off"
    assert env["GOCACHE"].startswith("/tmp/")
    assert env["GOPATH"].startswith("/tmp/")
    assert env["HOME"] == "/tmp"
    assert "GOCACHE" not in go.env, "the cache settings are for the compile only"


def test_main_replaces_the_source_name_for_files_submissions() -> None:
    c = DEFAULT_PROFILES["c"]
    argv = c.compile_argv("src/solution.c")
    assert argv == ["gcc", "-O2", "-std=gnu17", "-static", "-pipe", "-o", "main", "src/solution.c", "-lm"]
    assert DEFAULT_PROFILES["python"].run_argv("pkg/./app.py") == ["python3", "/box/pkg/app.py"]


def test_source_placeholder_is_the_profile_source_name_whatever_main_is() -> None:
    profile = Profile(
        name="custom",
        image="custom:1",
        source_name="prog.x",
        compile=("xc", "{source}", "--entry={main}"),
        run=("/box/a.out", "{main}"),
    )
    assert profile.compile_argv() == ["xc", "prog.x", "--entry=prog.x"]
    assert profile.compile_argv("lib/start.x") == ["xc", "prog.x", "--entry=lib/start.x"]
    assert profile.run_argv("lib/start.x") == ["/box/a.out", "lib/start.x"]


@pytest.mark.parametrize("main", ["/etc/passwd", "../outside.c", "a/../../b.c", ""])
def test_main_must_stay_inside_box(main: str) -> None:
    with pytest.raises(ValueError, match="inside /box"):
        DEFAULT_PROFILES["c"].compile_argv(main)


@pytest.mark.parametrize("main", ["-wrapper", "@o", "src/-x.c", "@dir/main.c", "./-o", "a/../@b"])
def test_main_is_never_read_as_an_option(main: str) -> None:
    for profile in DEFAULT_PROFILES.values():
        with pytest.raises(ValueError, match="starting with '-' or '@'"):
            profile.compile_argv(main)


@pytest.mark.parametrize("name", ["python", "javascript", "rust", "go"])
def test_tools_that_take_double_dash_get_main_after_it(name: str) -> None:
    argv = DEFAULT_PROFILES[name].compile_argv("src/x")
    assert argv is not None and argv[argv.index("src/x") - 1] == "--"


def test_profiles_are_frozen_and_validate_their_fields() -> None:
    python = DEFAULT_PROFILES["python"]
    with pytest.raises(ValidationError):
        python.image = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="time_factor"):
        Profile.model_validate({**python.model_dump(), "time_factor": 0.5})
    with pytest.raises(ValidationError, match="run"):
        Profile(name="x", image="x:1", source_name="x", run=())
    with pytest.raises(ValidationError, match="source_name"):
        Profile(name="x", image="x:1", source_name="../x", run=("x",))
    with pytest.raises(ValidationError, match="packages"):
        Profile(name="x", image="x:1", source_name="x", run=("x",), packages=("gcc,evil",))


def test_no_overrides_resolve_to_the_built_in_profiles() -> None:
    assert resolve_profiles({}) == dict(DEFAULT_PROFILES)


def test_an_override_changes_only_the_fields_it_gives() -> None:
    profiles = resolve_profiles({"java": ProfileConfig(time_factor=3, image="eclipse-temurin:21")})
    java, default = profiles["java"], DEFAULT_PROFILES["java"]
    assert java.time_factor == 3
    assert java.image == "eclipse-temurin:21"
    assert java.model_dump(exclude={"time_factor", "image"}) == default.model_dump(exclude={"time_factor", "image"})
    assert profiles["c"] == DEFAULT_PROFILES["c"]


def test_an_override_replaces_env_rather_than_merging_and_can_drop_the_compile_step() -> None:
    config = ProfileConfig.model_validate({"env": {"HOME": "/tmp", "X": "1"}, "compile": None})
    c = resolve_profiles({"c": config})["c"]
    assert c.env == {"HOME": "/tmp", "X": "1"}
    assert c.compile is None


def test_a_new_profile_is_added_with_the_usual_defaults() -> None:
    config = ProfileConfig(image="hatchway-profile/lua:latest", source_name="main.lua", run=("lua", "/box/{main}"))
    profiles = resolve_profiles({"lua": config})
    lua = profiles["lua"]
    assert lua.compile is None
    assert lua.time_factor == 1
    assert lua.extra_memory_mb == 0
    assert lua.run_argv() == ["lua", "/box/main.lua"]
    assert len(profiles) == len(DEFAULT_PROFILES) + 1


def test_a_new_profile_without_image_source_name_and_run_is_a_clear_config_error() -> None:
    with pytest.raises(
        ConfigError, match=r"profiles\.kotlin: .*needs image, source_name and run; missing: source_name, run"
    ):
        resolve_profiles({"kotlin": ProfileConfig(image="k:1")})


def test_an_invalid_override_names_the_profile_and_field() -> None:
    with pytest.raises(ConfigError, match=r"profiles\.c\.image"):
        resolve_profiles({"c": ProfileConfig.model_validate({"image": None})})
    with pytest.raises(ConfigError, match=r"profiles\.Bad Name\.name"):
        resolve_profiles({"Bad Name": ProfileConfig(image="x:1", source_name="x", run=("x",))})
    with pytest.raises(ValidationError, match="time_factor"):
        ProfileConfig(time_factor=0.5)
    with pytest.raises(ValidationError, match="Extra inputs"):
        ProfileConfig.model_validate({"imag": "typo:1"})


def test_settings_read_profiles_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "worker.yaml"
    config.write_text(
        "profiles:\n"
        "  java: {time_factor: 3}\n"
        "  lua:\n"
        "    image: hatchway-profile/lua:latest\n"
        "    source_name: main.lua\n"
        "    run: [lua, '/box/{main}']\n"
        "    packages: [lua5.4]\n"
    )
    settings = load_settings(config)
    profiles = resolve_profiles(settings.profiles)
    assert profiles["java"].time_factor == 3
    assert profiles["lua"].packages == ("lua5.4",)
    assert Settings().profiles == {}


def test_settings_refuse_an_incomplete_new_profile_at_start_up(tmp_path: Path) -> None:
    config = tmp_path / "worker.yaml"
    config.write_text("profiles:\n  kotlin: {image: 'k:1'}\n")
    with pytest.raises(ConfigError, match="missing: source_name, run"):
        load_settings(config)


@pytest.mark.parametrize(
    ("tool", "name"),
    [
        ("cargo", "rust"),
        ("rustc", "rust"),
        ("gcc", "c"),
        ("clang", "c"),
        ("g++", "cpp"),
        ("clang++", "cpp"),
        ("node", "javascript"),
        ("npm", "javascript"),
        ("python", "python"),
        ("pip", "python"),
        ("javac", "java"),
        ("maven", "java"),
        ("gradle", "java"),
        ("go", "go"),
    ],
)
def test_a_build_tool_picks_its_language_profile(tool: str, name: str) -> None:
    assert TOOLS[tool] == name
    assert profile_for(None, tool, DEFAULT_PROFILES) is DEFAULT_PROFILES[name]


def test_every_tool_maps_to_a_built_in_profile() -> None:
    assert set(TOOLS.values()) <= set(DEFAULT_PROFILES)


def test_the_language_wins_over_the_tool() -> None:
    assert profile_for("cpp", "gcc", DEFAULT_PROFILES).name == "cpp"
    assert profile_for("python", None, DEFAULT_PROFILES).name == "python"


def test_a_tool_may_name_a_configured_profile() -> None:
    config = ProfileConfig(image="lua:5", source_name="main.lua", run=("lua", "/box/{main}"))
    profiles = resolve_profiles({"lua": config})
    assert profile_for(None, "lua", profiles).name == "lua"


@pytest.mark.parametrize("tool", ["foundry", "hardhat", "move-cli"])
def test_other_ecosystems_tools_have_no_profile(tool: str) -> None:
    with pytest.raises(UnknownProfile) as caught:
        profile_for(None, tool, DEFAULT_PROFILES)
    message = str(caught.value)
    assert message.startswith(f"tool {tool!r} has no language profile on this worker; known tools: ")
    assert "cargo" in message and "gradle" in message


def test_an_unknown_language_lists_what_the_worker_has() -> None:
    with pytest.raises(UnknownProfile) as caught:
        profile_for("cobol", None, DEFAULT_PROFILES)
    assert str(caught.value) == "unknown language 'cobol'; this worker has: " + ", ".join(LANGUAGES)


def test_an_unknown_language_with_an_unknown_tool_names_both() -> None:
    with pytest.raises(UnknownProfile, match=r"unknown language 'solidity' and tool 'foundry' has no language"):
        profile_for("solidity", "foundry", DEFAULT_PROFILES)


def test_neither_language_nor_tool_is_an_error() -> None:
    with pytest.raises(UnknownProfile, match="language"):
        profile_for(None, None, DEFAULT_PROFILES)


def test_unknown_profile_is_a_client_error() -> None:
    error = UnknownProfile("x")
    assert isinstance(error, HatchwayError)
    assert isinstance(error, InvalidRequest)
    assert error.status == 422
    assert error.code == "unknown_profile"


def test_image_recipe_installs_the_profile_packages_lean(tmp_path: Path) -> None:
    c = DEFAULT_PROFILES["c"]
    command = mmdebstrap_command(c, tmp_path / "c.tar")
    assert command[0] == "mmdebstrap"
    assert "--include=gcc,libc6-dev" in command
    assert "--variant=apt" in command
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in command
    assert command[-2:] == ["bookworm", str(tmp_path / "c.tar")]
    assert mmdebstrap_command(c, tmp_path / "c.tar", mirrors=["http://mirror/debian"])[-1] == "http://mirror/debian"


def test_image_import_sets_a_writable_home_and_labels_the_recipe(tmp_path: Path) -> None:
    c = DEFAULT_PROFILES["c"]
    command = import_command(c, tmp_path / "c.tar")
    assert command[:2] == ["docker", "import"]
    assert command[-2:] == [str(tmp_path / "c.tar"), "hatchway-profile/c:latest"]
    assert f"ENV HOME={IMAGE_ENV['HOME']}" in command
    assert any(arg.startswith("LABEL hatchway.profile=c ") and recipe(c) in arg for arg in command)


def test_the_recipe_changes_with_the_packages() -> None:
    c = DEFAULT_PROFILES["c"]
    assert recipe(c) == recipe(c.model_copy())
    assert recipe(c) != recipe(c.model_copy(update={"packages": ("gcc", "libc6-dev", "gdb")}))
    assert recipe(c) != recipe(c, suite="trixie")


def test_a_profile_without_packages_cannot_be_built(tmp_path: Path) -> None:
    official = resolve_profiles({"c": ProfileConfig(image="gcc:13", packages=())})["c"]
    with pytest.raises(HatchwayError, match="lists no packages"):
        mmdebstrap_command(official, tmp_path / "c.tar")
