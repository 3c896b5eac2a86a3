"""Reading a Dockerfile as the builder runs it: lines, directives, stages, the images it builds on, what it refuses;
and the words of an instruction (quotes, escapes, substitution)."""

from __future__ import annotations

import pytest

from hatchway.engines.dockerfile import dockerfile_bases, parse
from hatchway.engines.dockerfile_words import expand, expand_words, split_raw
from hatchway.errors import BuildFailed, NotAllowed


@pytest.mark.parametrize(
    ("dockerfile", "bases"),
    [
        ("from a:1 as Build\nFROM build\nCOPY --from=0 /x /x\n", ["a:1"]),
        # With the directive the backtick continues lines: `FROM b` is part of the RUN.
        ("# escape=`\nFROM scratch\nRUN echo `\n  FROM b\nFROM c AS d\nCOPY --from=e:2 /x /x\n", ["c", "e:2"]),
        ("FROM a\nRUN echo \\\n# a comment\n\n  FROM hidden-in-run\n", ["a"]),
        # Continued lines join with nothing in between; a stage's own name is an image until the stage is complete.
        ("FROM a\nFR\\\nOM x\n", ["a", "x"]),
        ("FROM x AS x\n", ["x"]),
        ("FROM a AS x\nCOPY --from=x /y /y\n", ["a", "x"]),
        ("\ufeffFROM a\r\nRUN true\r\n", ["a"]),
    ],
)
def test_dockerfile_bases(dockerfile: str, bases: list[str]) -> None:
    assert dockerfile_bases(dockerfile) == bases


def test_instructions_keep_their_text_flags_and_first_line() -> None:
    plan = parse(
        '# syntax=docker/dockerfile:1\nARG V=1\n\nFROM a AS one\nCOPY --chown=1:2 \\\n  x /x\nRUN ["a", "b"]\n'
    )
    assert plan.escape == "\\" and [arg.text for arg in plan.global_args] == ["ARG V=1"]
    (stage,) = plan.stages
    assert (stage.base, stage.name, stage.line) == ("a", "one", 4)
    copy, run = stage.instructions
    assert (copy.keyword, copy.flags, copy.args, copy.line) == ("COPY", {"chown": "1:2"}, "x /x", 5)
    assert run.exec_form() == ["a", "b"] and copy.exec_form() is None
    assert parse("FROM a\nRUN [not json\n").stages[0].instructions[0].exec_form() is None, "shell form then"


@pytest.mark.parametrize(
    ("dockerfile", "error", "message"),
    [
        ("RUN true\n", BuildFailed, "before the first FROM"),
        ("# just a comment\n", BuildFailed, "no FROM"),
        ("FROM a\nVOLUME /v\n", BuildFailed, "VOLUME is not supported"),
        ("FROM a\nFLY away\n", BuildFailed, "unknown instruction FLY"),
        ("FROM a\nRUN --network=host true\n", BuildFailed, "RUN --network"),
        ("FROM a\nSHELL /bin/bash -c\n", BuildFailed, "JSON array"),
        ("FROM a\nCOPY --from=1 /x /x\n", BuildFailed, "does not come before"),
        ("FROM a b c d\n", BuildFailed, "AS name"),
        ("FROM a\nENV\n", BuildFailed, "needs arguments"),
        ("# escape=x\nFROM a\n", BuildFailed, "invalid escape"),
        ("# escape=`\n# escape=\\\nFROM a\n", BuildFailed, "given twice"),
        ("ARG B=a\nFROM $B\n", NotAllowed, "variable"),
        ("FROM a\nADD https://example.com/x /x\n", NotAllowed, "URL"),
        ("FROM a\x00\n", NotAllowed, "control characters"),
    ],
)
def test_what_the_builder_would_not_do_as_docker_does_is_refused(
    dockerfile: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        parse(dockerfile)


def test_directives_end_at_the_first_other_line() -> None:
    assert parse("# escape=`\nFROM a\n").escape == "`"
    assert parse("\n# escape=`\nFROM a\n").escape == "\\", "after an empty line it is a comment"
    assert parse("# unknown=1\n# escape=`\nFROM a\n").escape == "\\", "an unknown directive is a comment"


ENV = {"NAME": "world", "EMPTY": "", "SPACED": "a  b"}


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("hello $NAME", "hello world"),
        ("${NAME}s", "worlds"),
        ("'$NAME'", "$NAME"),
        ('"$NAME and \\$NAME"', "world and $NAME"),
        ("\\$NAME", "$NAME"),
        ("${MISSING:-fallback}/${EMPTY:-e}/${EMPTY-kept}", "fallback/e/"),
        ("${NAME:+set}${MISSING:+not}", "set"),
        ("${MISSING:-$NAME}", "world"),
        ("$ alone, $1 positional", "$ alone,  positional"),
    ],
)
def test_substitution_and_quotes(text: str, expanded: str) -> None:
    assert expand(text, ENV) == expanded


def test_words_split_at_unquoted_whitespace_also_in_values() -> None:
    assert expand_words("a \"b c\" $SPACED '' d\\ e", ENV) == ["a", "b c", "a", "b", "", "d e"]
    assert expand_words("`$NAME x` y", ENV, escape="`") == ["$NAME", "x y"]
    assert split_raw('A="x y" B=z\\ w C') == ['A="x y"', "B=z\\ w", "C"]


@pytest.mark.parametrize(
    ("text", "message"),
    [("'open", "single-quote"), ('"open', "double-quote"), ("${NAME", "missing"), ("${NAME/a/b}", "modifier")],
)
def test_malformed_words_are_refused(text: str, message: str) -> None:
    with pytest.raises(BuildFailed, match=message):
        expand(text, ENV)
    with pytest.raises(BuildFailed, match="MISSING: needed"):
        expand("${MISSING:?needed}", ENV)
