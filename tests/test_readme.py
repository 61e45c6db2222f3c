"""The README tells the truth about the code: its settings, its commands, its links, and stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
import typer.main
from pydantic import AliasChoices, AliasPath

from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_LINES = 220

ENV_NAME = re.compile(r"ECG_INTAKE_[A-Z0-9_]+")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
SPAN = re.compile(r"`([^`\n]+)`")
# `ecg-intake` as a command word, not part of a path, a file name or a pip extra (`ecg-intake[tensorrt]`)
COMMAND = re.compile(r"(?<![\w/.-])ecg-intake[ \t]+([^\s|]+)(?:[ \t]+([^\s|]+))?")
WORD = re.compile(r"[a-z][a-z0-9-]*")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)


def readme() -> str:
    return README.read_text(encoding="utf-8")


def settings_env_names() -> set[str]:
    """Every environment variable Settings reads: prefix + field name, or the field's own aliases."""
    config = Settings.model_config
    prefix = config.get("env_prefix", "")
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        aliases: list[str] = []
        for alias in (field.validation_alias, field.alias):
            if isinstance(alias, str):
                aliases.append(alias)
            elif isinstance(alias, AliasChoices):
                aliases.extend(choice for choice in alias.choices if isinstance(choice, str))
            elif isinstance(alias, AliasPath) and isinstance(alias.path[0], str):
                aliases.append(alias.path[0])
        # pydantic-settings reads an aliased field by its alias alone, without the prefix
        if aliases:
            names.update(alias.upper() for alias in aliases)
        else:
            names.add(f"{prefix}{field_name}".upper())
    return names


def code_texts(markdown: str) -> list[str]:
    """The contents of fenced blocks and of inline code spans outside them."""
    blocks = FENCE.findall(markdown)
    prose = FENCE.sub("", markdown)
    return blocks + SPAN.findall(prose)


def named_commands(markdown: str) -> set[tuple[str, ...]]:
    """`ecg-intake <cmd> [<sub>]` as written in code: lower-case words only (not DIR, --flag or <x>)."""
    found: set[tuple[str, ...]] = set()
    for text in code_texts(markdown):
        for match in COMMAND.finditer(text):
            words = [w for w in match.groups() if w]
            if not words or not WORD.fullmatch(words[0]):
                continue  # `ecg-intake --help`, `ecg-intake <command>`
            path = [words[0]]
            if len(words) > 1 and WORD.fullmatch(words[1]):
                path.append(words[1])
            found.add(tuple(path))
    return found


def unresolved(path: tuple[str, ...]) -> str | None:
    """None when the command path exists in the CLI; else the part that does not."""
    from worker.cli import app

    command = typer.main.get_command(app)
    context = typer.Context(command)
    for depth, word in enumerate(path):
        get = getattr(command, "get_command", None)
        if get is None:  # a leaf command: what follows is its arguments (samples DIR, preprocess FILE)
            return None if depth > 0 else word
        sub = get(context, word)
        if sub is None:
            return " ".join(path[: depth + 1])
        command = sub
    return None


def relative_links(markdown: str) -> list[str]:
    targets = LINK.findall(FENCE.sub("", markdown)) + REFERENCE_LINK.findall(markdown)
    return [t for t in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#)", t, re.IGNORECASE)]


# (1) settings


def test_settings_env_names_are_derived_from_the_model() -> None:
    names = settings_env_names()
    assert len(names) == len(Settings.model_fields)
    assert "ECG_INTAKE_DATABASE_URL" in names
    assert "ECG_INTAKE_DATABASE_URL".lower() not in names


def test_every_env_variable_in_the_readme_is_a_setting() -> None:
    named = set(ENV_NAME.findall(readme()))
    assert named, "the README names no ECG_INTAKE_* variable; the configuration section is gone"
    unknown = sorted(named - settings_env_names())
    assert not unknown, f"README names variables no setting reads: {unknown}"


def test_an_invented_env_variable_would_be_caught() -> None:
    text = "Set `ECG_INTAKE_NO_SUCH_OPTION_XYZ=1` and `ECG_INTAKE_HOME`."
    assert set(ENV_NAME.findall(text)) - settings_env_names() == {"ECG_INTAKE_NO_SUCH_OPTION_XYZ"}


# (2) commands


def test_command_extraction_reads_spans_and_blocks() -> None:
    text = ("Run `ecg-intake db upgrade --revision head`, `ecg-intake samples DIR`, `ecg-intake --help`.\n"
            "```bash\necg-intake worker --queues infer   # one model\n```\n"
            "Data in `./ecg-intake-data`, extra `ecg-intake[tensorrt]`, prose ecg-intake run is not code.\n")
    assert named_commands(text) == {("db", "upgrade"), ("samples",), ("worker",)}


def test_the_resolver_rejects_commands_that_do_not_exist() -> None:
    assert unresolved(("run",)) is None
    assert unresolved(("db", "upgrade")) is None
    assert unresolved(("frobnicate",)) == "frobnicate"
    assert unresolved(("db", "frobnicate")) == "db frobnicate"


def test_the_readme_names_the_main_commands() -> None:
    named = named_commands(readme())
    for expected in [("run",), ("watch",), ("worker",), ("results",), ("doctor",), ("db", "upgrade")]:
        assert expected in named, f"README does not show `ecg-intake {' '.join(expected)}` in code"


@pytest.mark.parametrize("path", sorted(named_commands(readme())), ids=" ".join)
def test_every_command_in_the_readme_exists(path: tuple[str, ...]) -> None:
    missing = unresolved(path)
    assert missing is None, f"README names `ecg-intake {' '.join(path)}`, but `ecg-intake {missing}` does not exist"


# (3) length


def test_readme_is_short() -> None:
    lines = len(readme().splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines; keep it under {MAX_LINES} and move detail to docs/"


# (4) links


def test_link_extraction_skips_urls_and_anchors() -> None:
    text = ("[a](docs/a.md) ![b](docs/b.png) [c](https://x.org) [d](#top) [e](mailto:x@y.z) "
            "[f](docs/f.md#part)\n[g]: deploy/\n```\n[h](inside/code.md)\n```\n")
    assert relative_links(text) == ["docs/a.md", "docs/b.png", "docs/f.md#part", "deploy/"]


def test_every_relative_link_in_the_readme_exists() -> None:
    links = relative_links(readme())
    assert links, "the README links to nothing under docs/"
    broken = [link for link in links if not (README.parent / link.split("#", 1)[0]).exists()]
    assert not broken, f"README links to missing files: {broken}"


def test_the_configuration_page_names_every_setting() -> None:
    page = (README.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = settings_env_names() - set(ENV_NAME.findall(page))
    assert not missing, f"docs/configuration.md does not describe {sorted(missing)}"
