"""The Dockerfile read as text, a fast tier below tests/images (which builds and runs it),
checked against the packaging it installs: the targets exist, what they run resolves to real
console scripts and modules, the operator image gets no torch, and every image runs as a
numeric non-root user."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from kubenas.api.experiment import TrialTemplate

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
OPERATOR_UID = 65532  # the chart's runAsUser and the operator's default for trial pods


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        found = [args for kw, args in self.instructions if kw == keyword]
        return found[-1] if found else None


def _stages() -> dict[str, Stage]:
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            assert match, line
            current = Stage(match.group(2) or str(len(stages)), match.group(1))
            stages[current.name] = current
        elif current is not None:
            current.instructions.append((keyword, args.strip()))
    return stages


STAGES = _stages()


def _chain(target: str) -> list[Stage]:
    """The target and every stage it builds on or copies from."""
    seen: list[Stage] = []
    todo = [target]
    while todo:
        stage = STAGES.get(todo.pop())
        if stage is None or stage in seen:
            continue
        seen.append(stage)
        todo.append(stage.base)
        todo += [
            m.group(1)
            for kw, args in stage.instructions
            if kw == "COPY"
            for m in [re.search(r"--from=(\S+)", args)]
            if m
        ]
    return seen


def _exec_form(args: str | None) -> list[str]:
    assert args is not None and args.startswith("["), f"use the exec form: {args}"
    value = json.loads(args)
    assert isinstance(value, list)
    return [str(v) for v in value]


def _pip_installs(stages: list[Stage]) -> list[list[str]]:
    installs = []
    for stage in stages:
        for keyword, args in stage.instructions:
            if keyword != "RUN":
                continue
            for command in re.split(r"&&|;", args):
                words = shlex.split(command)
                if words and words[0].endswith("pip") and "install" in words:
                    installs.append(words)
    return installs


@pytest.mark.parametrize("target", ["operator", "trainer"])
def test_target_is_a_slim_stage_copying_a_built_environment(target: str) -> None:
    """The runtime stage copies the dependencies' environment from a build stage (one layer,
    cached while pyproject.toml stays the same) and installs only the project over it, without
    its dependencies, so a code change rebuilds a small layer instead of a 6.5 GB one."""
    stage = STAGES[target]
    copies = [args for kw, args in stage.instructions if kw == "COPY"]
    assert copies and all("--from=" in c for c in copies), "runtime stage copies build output only"
    environment = next(c for c in copies if c.endswith("/opt/kubenas /opt/kubenas"))
    assert "dependencies" in environment, environment
    installs = _pip_installs([stage])
    assert installs and all("--no-deps" in words for words in installs), installs
    assert stage.base not in STAGES, "the runtime stage starts from a clean base image"


@pytest.mark.parametrize("target", ["operator", "trainer"])
def test_runs_as_numeric_non_root_user(target: str) -> None:
    user = STAGES[target].last("USER")
    assert user is not None and re.fullmatch(r"\d+(:\d+)?", user), f"USER {user} is not numeric"
    assert int(user.split(":")[0]) == OPERATOR_UID


def test_operator_entry_point_is_the_console_script_the_chart_runs() -> None:
    entry = _exec_form(STAGES["operator"].last("ENTRYPOINT"))
    cmd = _exec_form(STAGES["operator"].last("CMD"))
    scripts = PYPROJECT["project"]["scripts"]
    assert entry[0] in scripts, f"{entry[0]} is not a console script of pyproject.toml"
    module, _, function = scripts[entry[0]].partition(":")
    source = REPO / "operator" / (module.replace(".", "/") + ".py")
    assert re.search(rf"^def {function}\(", source.read_text(), re.M), f"{module}:{function}"
    assert cmd == ["operator"]
    chart = yaml.safe_load((REPO / "charts/kubenas/values.yaml").read_text())
    assert chart["operator"]["command"] == entry
    assert chart["operator"]["podSecurityContext"]["runAsUser"] == OPERATOR_UID


def test_trainer_entry_point_is_the_trainer_module_trials_run() -> None:
    entry = _exec_form(STAGES["trainer"].last("ENTRYPOINT"))
    assert entry[:2] == ["python", "-m"]
    package = entry[2]
    assert (REPO / "trainer" / package / "__main__.py").is_file()
    packages = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert f"trainer/{package}" in packages, "the wheel ships the trainer package"
    assert TrialTemplate(dataset="digits").command == entry, "trials run the image's entry point"


def test_operator_image_installs_no_torch() -> None:
    installs = _pip_installs(_chain("operator"))
    assert installs, "the operator target installs the package"
    for words in installs:
        assert not any("trainer" in w or "torch" in w for w in words), words
    assert not any("torch" in d for d in PYPROJECT["project"]["dependencies"])


def test_trainer_image_installs_the_trainer_extra() -> None:
    installs = _pip_installs(_chain("trainer"))
    assert any(".[trainer]" in words for words in installs), installs
    extra = PYPROJECT["project"]["optional-dependencies"]["trainer"]
    assert any(d.startswith("torch") for d in extra)


def test_dockerignore_lets_every_copied_source_in() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for stage in STAGES.values():
        for keyword, args in stage.instructions:
            if keyword == "COPY" and "--from=" not in args:
                for source in args.split()[:-1]:
                    assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
                    assert (REPO / source).exists(), source
