"""Static checks of the Dockerfiles (no Docker engine here): pinned bases, non-root user, lock-first layers.

A small strict parser (line continuations, comments, ``ARG`` defaults) reads each Dockerfile; the
rules are checked on the parsed instructions and cross-checked with ``components/runtime.yaml``
and ``requirements/lock.txt``, which the images must agree with.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
TRAIN = DOCKER / "train.Dockerfile"
AIRFLOW = DOCKER / "airflow.Dockerfile"
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
                "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword, its raw argument text and the line it starts on."""

    keyword: str
    value: str
    line: int


class DockerfileError(ValueError):
    """A Dockerfile that breaks a rule; the message names the file and line."""


def parse(text: str, name: str = "Dockerfile") -> list[Instruction]:
    """Instructions of a Dockerfile (continuations joined, comments and directives dropped)."""
    out: list[Instruction] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, value = buf.partition(" ")
        if keyword.upper() not in INSTRUCTIONS:
            raise DockerfileError(f"{name}:{start}: unknown instruction {keyword!r}")
        if keyword != keyword.upper():
            raise DockerfileError(f"{name}:{start}: write instructions in upper case ({keyword!r})")
        out.append(Instruction(keyword, value.strip(), start))
        buf = ""
    if buf:
        raise DockerfileError(f"{name}: the file ends inside a continued line")
    return out


def _substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    """``ARG NAME=default`` values (the last one wins)."""
    args = {}
    for i in instructions:
        if i.keyword == "ARG" and "=" in i.value:
            key, _, default = i.value.partition("=")
            args[key.strip()] = default.strip().strip('"')
    return args


def check(instructions: list[Instruction], name: str = "Dockerfile") -> None:
    """The rules every image follows; raises :class:`DockerfileError` at the first broken one."""
    args = arg_defaults(instructions)
    froms = [i for i in instructions if i.keyword == "FROM"]
    if not froms or instructions[0].keyword not in ("FROM", "ARG"):
        raise DockerfileError(f"{name}: must start with FROM (or ARG)")
    for i in froms:
        image = _substitute(i.value.split()[0], args)
        if "@sha256:" in image:
            continue
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if not tag or tag == "latest" or "$" in tag:
            raise DockerfileError(f"{name}:{i.line}: FROM {image} is not pinned to a version tag")
    for i in instructions:
        if re.search(r"(^|[:\s])latest(\s|$)", i.value):
            raise DockerfileError(f"{name}:{i.line}: 'latest' is not a version")
        if i.keyword == "ADD" and re.search(r"https?://", i.value):
            raise DockerfileError(f"{name}:{i.line}: ADD of a URL: download in a RUN with a checksum instead")
        if i.keyword == "RUN" and "apt-get install" in i.value and "--no-install-recommends" not in i.value:
            raise DockerfileError(f"{name}:{i.line}: apt-get install without --no-install-recommends")
        if i.keyword == "RUN" and re.search(r"\bsudo\b", i.value):
            raise DockerfileError(f"{name}:{i.line}: sudo in a RUN")
    users = [i for i in instructions if i.keyword == "USER"]
    if not users:
        raise DockerfileError(f"{name}: no USER: the image would run as root")
    user = _substitute(users[-1].value, args).partition(":")[0]
    if user in ("root", "0") or "$" in user:
        raise DockerfileError(f"{name}:{users[-1].line}: the last USER must be a non-root user, got {user!r}")
    lock_copy = next((n for n, i in enumerate(instructions)
                      if i.keyword == "COPY" and "requirements/lock.txt" in i.value), None)
    for n, i in enumerate(instructions):
        if i.keyword == "RUN" and "pip install" in i.value and "lock.txt" in i.value:
            if lock_copy is None or lock_copy > n:
                raise DockerfileError(f"{name}:{i.line}: pip install from the lock before the lock is copied")
        if i.keyword == "COPY" and shlex.split(i.value)[-2:-1] == ["."] and (lock_copy is None or lock_copy > n):
            raise DockerfileError(f"{name}:{i.line}: copy the lock (and install it) before the whole project")


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / "lock.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


@pytest.fixture(scope="module")
def runtime():
    return yaml.safe_load((REPO / "components" / "runtime.yaml").read_text())


@pytest.mark.parametrize("path", [TRAIN, AIRFLOW], ids=lambda p: p.name)
def test_dockerfiles_follow_the_rules(path):
    check(parse(path.read_text(), path.name), path.name)


def test_train_image_matches_runtime_yaml_and_the_lock(runtime):
    instructions = parse(TRAIN.read_text(), TRAIN.name)
    args = arg_defaults(instructions)
    base = instructions[0].value
    assert base.startswith("nvidia/cuda:") and "runtime" in base, "a CUDA runtime base"
    workdirs = [i.value for i in instructions if i.keyword == "WORKDIR"]
    assert workdirs[-1] == runtime["workdir"]
    user = _substitute([i for i in instructions if i.keyword == "USER"][-1].value, args)
    assert user.partition(":")[0] == str(runtime["run_as_user"])
    assert 'useradd --uid "${LPR_UID}"' in next(i.value for i in instructions if "useradd" in i.value)
    assert args["LPR_UID"] == str(runtime["run_as_user"])
    runs = " ".join(i.value for i in instructions if i.keyword == "RUN")
    assert "pip install --no-deps -r /tmp/requirements/lock.txt" in runs
    assert "pip uninstall -y faiss-cpu" in runs and "faiss-gpu.txt" in runs
    faiss = dict(line.split("==") for line in (DOCKER / "faiss-gpu.txt").read_text().splitlines()
                 if "==" in line and not line.startswith("#"))
    assert faiss["faiss-gpu"] == lock_pins()["faiss-cpu"], "faiss-gpu must be the lock's faiss version"
    assert "python3.11" in runs
    ignore = (DOCKER / "train.Dockerfile.dockerignore").read_text().split()
    for path in (".venv", "data", ".dvc/cache", "mlruns", ".git"):
        assert path in ignore


def test_airflow_image_matches_the_lock():
    instructions = parse(AIRFLOW.read_text(), AIRFLOW.name)
    args = arg_defaults(instructions)
    pins = lock_pins()
    assert instructions[0].value == f"apache/airflow:{pins['apache-airflow']}-python3.11"
    assert args["AIRFLOW_VERSION"] == pins["apache-airflow"]
    assert args["CNCF_KUBERNETES_VERSION"] == pins["apache-airflow-providers-cncf-kubernetes"]
    copies = [shlex.split(i.value) for i in instructions if i.keyword == "COPY"]
    assert any(c[-2:] == ["dags", "/opt/airflow/dags"] for c in copies)
    env = " ".join(i.value for i in instructions if i.keyword == "ENV")
    assert "LPR_RUNNER=kubernetes" in env and "LPR_PROJECT_DIR=/opt/lpr" in env
    ignore = (DOCKER / "airflow.Dockerfile.dockerignore").read_text().splitlines()
    sources = {s for c in copies for s in c[:-1] if not s.startswith("--")}
    for source in sources:
        assert f"!{source}" in ignore or f"!{source}/**" in ignore, f"{source} is excluded from the context"


@pytest.mark.parametrize(("text", "message"), [
    ("FROM ubuntu\nUSER 1000\n", "not pinned"),
    ("FROM ubuntu:latest\nUSER 1000\n", "not pinned"),
    ("ARG BASE=python\nFROM ${BASE}\nUSER app\n", "not pinned"),
    ("FROM python:3.11-slim\nRUN true\n", "no USER"),
    ("FROM python:3.11-slim\nUSER app\nRUN id\nUSER root\n", "non-root"),
    ("ARG UID=0\nFROM python:3.11-slim\nUSER ${UID}\n", "non-root"),
    ("FROM python:3.11-slim\nRUN pip install -r lock.txt\nCOPY requirements/lock.txt .\nUSER 1\n", "before the lock"),
    ("FROM python:3.11-slim\nCOPY . /app\nCOPY requirements/lock.txt .\nUSER 1\n", "before the whole project"),
    ("FROM python:3.11-slim\nRUN apt-get install -y git\nUSER 1\n", "no-install-recommends"),
    ("FROM python:3.11-slim\nADD https://example.com/x.tgz /x\nUSER 1\n", "ADD of a URL"),
    ("FROM python:3.11-slim\nrun true\n", "upper case"),
    ("FROM python:3.11-slim\nRUN true \\\n", "ends inside"),
])
def test_the_checks_catch_broken_dockerfiles(text, message):
    with pytest.raises(DockerfileError, match=message):
        check(parse(text, "bad.Dockerfile"), "bad.Dockerfile")
