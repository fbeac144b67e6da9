"""The kubelet stand-in: run one rendered ``v1/Pod`` as a process group on this machine.

What a kubelet does for the pipeline's pods, and nothing more: give the container a fresh copy of
the image's file system, its ``emptyDir`` mounts, its environment (values, ``secretKeyRef`` and
``envFrom`` resolved from a secrets dict), its ``workingDir``, ``command`` and ``args``, and its
user when the machine allows it. Absolute image paths (``/opt/lpr``, the mounts) are mapped to
folders of the pod's own directory by :func:`map_value`; ``/dev/shm`` stays the machine's. The
pure parts (:func:`path_map`, :func:`map_value`, :func:`resolve_env`) are tested on their own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Where the image holds the project (docker/train.Dockerfile: ``COPY . /opt/lpr``).
IMAGE_PROJECT = "/opt/lpr"
#: The image's ``WORKDIR``: the working directory of a container that names none.
IMAGE_WORKDIR = "/workspace"
#: Mounts left to the machine (no per-pod folder can stand in for shared memory).
HOST_MOUNTS = ("/dev/shm",)
#: The locked environment stands for the image's installed packages: its paths are this machine's
#: and never mapped, wherever the checkout lives (a clone under ``/tmp`` holds its ``.venv`` there).
INSTALLED = (sys.prefix,)


class PodSpecError(ValueError):
    """A pod the stand-in cannot run (a secret key it cannot resolve, no container)."""


def path_map(pod: Mapping[str, Any], root: Path) -> dict[str, Path]:
    """Image path -> this machine's folder, for the image's project and every mount of the container."""
    (container,) = pod["spec"]["containers"]
    mounts = [m["mountPath"] for m in container.get("volumeMounts", []) if m["mountPath"] not in HOST_MOUNTS]
    paths = [IMAGE_PROJECT, *mounts]
    if IMAGE_WORKDIR not in paths:
        paths.append(IMAGE_WORKDIR)
    return {p: root / p.strip("/").replace("/", "_") for p in paths}


def map_value(value: str, mapping: Mapping[str, Path]) -> str:
    """``value`` with a leading image path (or one after ``:``, as in ``PATH``) replaced by its folder."""
    def one(part: str) -> str:
        if any(part == kept or part.startswith(kept.rstrip("/") + "/") for kept in INSTALLED):
            return part
        for image_path in sorted(mapping, key=len, reverse=True):
            if part == image_path or part.startswith(image_path.rstrip("/") + "/"):
                return str(mapping[image_path]) + part[len(image_path.rstrip("/")):]
        return part

    return ":".join(one(p) for p in value.split(":")) if value.startswith("/") else value


def resolve_env(container: Mapping[str, Any], secrets: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The container's environment as the kubelet sets it: ``envFrom`` secrets, then ``env`` in order.

    A ``secretKeyRef`` to a missing secret or key leaves the variable unset when ``optional``,
    and is an error otherwise (the kubelet refuses to start the container).
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("secretRef")
        if ref is None:
            raise PodSpecError(f"envFrom {source}: only secretRef is supported")
        if ref["name"] not in secrets and not ref.get("optional"):
            raise PodSpecError(f"envFrom: secret {ref['name']!r} not found")
        env.update({source.get("prefix", "") + k: v for k, v in secrets.get(ref["name"], {}).items()})
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            raise PodSpecError(f"env {item['name']}: only value and secretKeyRef are supported")
        value = secrets.get(ref["name"], {}).get(ref["key"])
        if value is not None:
            env[item["name"]] = value
        elif not ref.get("optional"):
            raise PodSpecError(f"env {item['name']}: key {ref['key']!r} of secret {ref['name']!r} not found")
    return env


def pod_user(pod: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """The container's ``runAsUser``/``runAsGroup`` (the container's context wins over the pod's)."""
    (container,) = pod["spec"]["containers"]
    pod_ctx, ctx = pod["spec"].get("securityContext") or {}, container.get("securityContext") or {}
    return ctx.get("runAsUser", pod_ctx.get("runAsUser")), ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))


def can_run_as(uid: int | None, gid: int | None, python: str) -> tuple[bool, str]:
    """Whether this machine can start the locked interpreter as ``uid``; with the reason when not."""
    if uid is None or uid == os.geteuid():
        return True, "the current user"
    if os.geteuid() != 0:
        return False, f"runAsUser {uid} not applied: setuid needs root"
    try:
        probe = subprocess.run([python, "-c", "pass"], user=uid, group=gid, extra_groups=[], capture_output=True,
                               cwd="/", check=False)
        error = probe.stderr.decode(errors="replace").strip()[-160:] if probe.returncode else ""
    except OSError as exc:
        error = str(exc)
    if error:
        return False, (f"runAsUser {uid} not applied: the locked environment's interpreter ({python}) cannot be "
                       f"run by that user on this machine ({error})")
    return True, f"uid {uid}"


def start(pod: Mapping[str, Any], root: Path, image: Path, secrets: Mapping[str, Mapping[str, str]],
          image_env: Mapping[str, str], log: Path, as_user: bool = False) -> subprocess.Popen:
    """Start ``pod``'s container under ``root`` (fresh: the image copied, the mounts empty).

    Args:
        pod: the rendered pod (one container).
        root: an empty folder for the pod's file systems.
        image: the image's project folder (copied to the pod's ``/opt/lpr``).
        secrets: secret name -> key -> value.
        image_env: the image's ``ENV`` (paths in image terms, mapped like the pod's).
        log: the container's log (stdout and stderr).
        as_user: run as the pod's ``runAsUser``/``runAsGroup`` (see :func:`can_run_as`).
    """
    (container,) = pod["spec"]["containers"]
    mapping = path_map(pod, root)
    shutil.copytree(image, mapping[IMAGE_PROJECT], symlinks=True)
    for folder in mapping.values():
        folder.mkdir(parents=True, exist_ok=True)
    env = {k: map_value(v, mapping) for k, v in {**image_env, **resolve_env(container, secrets)}.items()}
    argv = [map_value(a, mapping) for a in [*container.get("command", []), *container.get("args", [])]]
    cwd = mapping[container.get("workingDir") or IMAGE_WORKDIR]
    user: dict[str, Any] = {}
    if as_user:
        uid, gid = pod_user(pod)
        for folder in mapping.values():
            for path in [folder, *folder.rglob("*")]:
                os.lchown(path, uid, gid)
        user = {"user": uid, "group": gid, "extra_groups": []}
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, **user)
