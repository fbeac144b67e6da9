"""Resolve and load pretrained weights from local files only (nothing is downloaded).

A weights spec is one of:

- ``"none"``: random initialisation;
- a path to a checkpoint file (a state dict, or a dict holding one under ``state_dict`` /
  ``model``; a ``module.`` prefix from DDP is stripped);
- a name resolved in the local torch hub cache (``$TORCH_HOME/hub/checkpoints``): a torchvision
  weights name for the architecture (``IMAGENET1K_V1``, ``DEFAULT``,
  ``ResNet18_Weights.IMAGENET1K_V1``) or a checkpoint file name
  (``resnet18-f37072fd.pth``). A name that is not found raises :class:`WeightsNotFoundError`
  listing every place it looked.

The ``open_clip:<model>`` backbones take their own kind of spec (:func:`resolve_open_clip_weights`):
a checkpoint file (an open_clip or OpenAI CLIP state dict, a full CLIP checkpoint or the visual
tower alone; :func:`load_open_clip_visual_state` extracts the visual tower) or an open_clip
pretrained tag (``openai``, ``laion2b_s34b_b79k``, ...), found in the Hugging Face cache or, on a
machine that can reach the Hub, fetched into it by open_clip's own download. Offline
(``HF_HUB_OFFLINE=1``, or the Hub unreachable) a tag that is not cached is an error that says where
the cache is and how to fill it; nothing waits on the network.
"""

from __future__ import annotations

import os
import socket
import warnings
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from torchvision.models import get_model_weights

__all__ = [
    "WeightsNotFoundError",
    "hub_checkpoint_dirs",
    "resolve_weights",
    "load_state_dict_file",
    "hf_hub_cache_dir",
    "resolve_open_clip_weights",
    "load_open_clip_visual_state",
]

#: seconds to wait for the Hub's host before a tag download is given up (no network: fail fast)
HUB_CONNECT_TIMEOUT = 5.0


class WeightsNotFoundError(FileNotFoundError):
    """A weights name or path that resolves to no local file."""


def hub_checkpoint_dirs() -> list[Path]:
    """Directories searched for named checkpoints: the torch hub cache's ``checkpoints``."""
    return [Path(torch.hub.get_dir()) / "checkpoints"]


def _torchvision_file_names(arch: str, name: str) -> list[str]:
    """File names a torchvision weights name of ``arch`` would be cached under."""
    try:
        enum = get_model_weights(arch)
    except (ValueError, KeyError):
        return []
    short = name.split(".", 1)[1] if "." in name and name.split(".", 1)[0] == enum.__name__ else name
    if short == "DEFAULT":
        member = enum.DEFAULT
    else:
        member = enum.__members__.get(short)
    if member is None:
        return []
    return [os.path.basename(member.url)]


def resolve_weights(spec: str | None, arch: str) -> Path | None:
    """Turn a weights spec into a local file (None for ``"none"``).

    Args:
        spec: ``"none"``, a file path, or a name (see the module docstring).
        arch: the architecture name, used to resolve torchvision weights names.

    Raises:
        WeightsNotFoundError: the spec names no existing file; the message lists the places
            searched.
    """
    if spec is None or str(spec).lower() in ("", "none", "null"):
        return None
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    looks_like_path = os.sep in spec or spec.startswith(".") or spec.startswith("~")
    candidates = [spec] if spec.endswith((".pth", ".pt", ".bin", ".safetensors")) else []
    candidates += _torchvision_file_names(arch, spec)
    searched = []
    if not looks_like_path:
        for directory in hub_checkpoint_dirs():
            for name in candidates:
                searched.append(str(directory / name))
                if (directory / name).is_file():
                    return directory / name
    where = "\n  ".join([str(path)] + searched)
    hint = "" if candidates or looks_like_path else f" ({spec!r} is not a torchvision weights name of {arch!r})"
    raise WeightsNotFoundError(
        f"weights {spec!r} for {arch!r} not found{hint}; nothing is downloaded. Looked at:\n  {where}"
    )


def load_state_dict_file(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file into a flat state dict (``module.`` prefixes stripped)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a state dict (got {type(obj).__name__})")
    return {k.removeprefix("module."): v for k, v in obj.items()}


# ------------------------------------------------------------------------------------ open_clip


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes", "on")


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache open_clip downloads into, read from the environment now
    (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``)."""
    env = os.environ
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    if not cache:
        cache = os.path.join(env.get("HF_HOME") or os.path.join("~", ".cache", "huggingface"), "hub")
    return Path(os.path.expandvars(os.path.expanduser(cache)))


def _hub_offline() -> bool:
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a dependency of open_clip
        return True
    return bool(constants.HF_HUB_OFFLINE)


def _hub_endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _reachable(url: str, timeout: float) -> str | None:
    """None when a TCP connection to ``url``'s host opens within ``timeout`` s, else the reason."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"cannot reach {parts.hostname}:{port} ({exc})"


def _open_clip_hub_files(hf_hub: str) -> tuple[str, list[str]]:
    """``org/repo/`` or ``org/repo/file`` of an open_clip pretrained config -> the repository and
    the candidate file names, safetensors first (as open_clip's own download prefers them)."""
    repo_id, filename = os.path.split(hf_hub)
    if not filename:
        return repo_id, ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    names = [filename]
    if filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    return repo_id, names


def resolve_open_clip_weights(spec: str | None, model_name: str) -> tuple[Path | None, dict[str, Any]]:
    """Turn the ``weights:`` of an ``open_clip:<model_name>`` backbone into a local file.

    Args:
        spec: ``"none"``, a checkpoint file path, or an open_clip pretrained tag of the model.
        model_name: the open_clip model name (``ViT-B-32``, ``ViT-B-32-quickgelu``, ...).

    Returns:
        The file (None for ``"none"``) and the tag's open_clip pretrained config (``{}`` for a
        file): its ``quick_gelu``, ``mean`` and ``std`` say how the weights were trained.

    Raises:
        WeightsNotFoundError: a path that does not exist, a name that is no tag of the model, or a
            tag whose weights are neither cached nor fetchable now (offline); the message names
            the cache and how to put the weights there.
    """
    if spec is None or str(spec).lower() in ("", "none", "null"):
        return None, {}
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return path, {}
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model_name, spec) if not (os.sep in spec or spec.startswith((".", "~"))) else {}
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise WeightsNotFoundError(
            f"weights {spec!r} for open_clip:{model_name} are neither a file ({path} does not exist) nor an "
            f"open_clip pretrained tag of {model_name!r} (its tags: {', '.join(tags) or 'none'})"
        )
    cache = hf_hub_cache_dir()
    hf_hub = cfg.get("hf_hub") or ""
    if not hf_hub:  # pragma: no cover - every open_clip tag has a Hub copy today
        raise WeightsNotFoundError(
            f"open_clip tag {spec!r} of {model_name!r} has no Hugging Face Hub copy; download {cfg.get('url')} "
            "on a machine with internet and set weights: to the file's path"
        )
    from huggingface_hub import try_to_load_from_cache

    repo_id, names = _open_clip_hub_files(hf_hub)
    for name in names:
        found = try_to_load_from_cache(repo_id, name, cache_dir=str(cache))
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found), cfg
    endpoint = _hub_endpoint()
    why = "offline (HF_HUB_OFFLINE is set)" if _hub_offline() else _reachable(endpoint, HUB_CONNECT_TIMEOUT)
    if why is None:
        from huggingface_hub import hf_hub_download

        errors = []
        for name in names:
            try:
                return Path(hf_hub_download(repo_id, name, cache_dir=str(cache), endpoint=endpoint)), cfg
            except Exception as exc:  # noqa: BLE001 - every failure is reported below
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
        why = "the download failed: " + "; ".join(errors)
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    raise WeightsNotFoundError(
        f"open_clip weights {spec!r} of {model_name!r} are not in the local cache and could not be fetched: "
        f"{why}.\n"
        f"Looked for {' or '.join(names)} of the Hub repository {repo_id} in the cache {cache} "
        f"(HF_HUB_CACHE or HF_HOME set it).\n"
        "To put them there: on a machine with internet run\n"
        f"  python -c \"import open_clip; open_clip.create_model('{model_name}', pretrained='{spec}')\"\n"
        f"and copy its {folder.name} folder (from its own Hugging Face cache) to {folder}; "
        f"or download {endpoint}/{repo_id}/resolve/main/{names[-1]} and set weights: to that file's path."
    )


def _read_checkpoint(path: Path) -> tuple[dict[str, Any], bool]:
    """A checkpoint file's tensors and whether it was a TorchScript archive (OpenAI's CLIP files)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu"), False
    scripted = False
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            scripted = any(n.endswith("constants.pkl") for n in zf.namelist())
    if scripted:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; the release is TorchScript
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as exc:  # noqa: BLE001
            raise ValueError(f"{path}: a TorchScript archive that could not be read: {exc}") from exc
        return dict(state), True
    try:
        return load_state_dict_file(path), False
    except Exception as exc:  # noqa: BLE001 - name the file, keep the cause
        raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc


#: prefixes under which a checkpoint holds the visual tower: a CLIP model, an encoder of this
#: project (``RiceModel.backbone.visual``), a bare ``OpenClipBackbone``
_VISUAL_PREFIXES = ("visual.", "backbone.visual.", "model.visual.", "clip.visual.")


def load_open_clip_visual_state(path: str | Path) -> tuple[dict[str, Any], bool]:
    """The visual tower's state dict from a checkpoint file.

    Accepts an open_clip ``CLIP`` state dict or training checkpoint (``state_dict``, ``module.``
    prefixes), OpenAI's TorchScript CLIP archive, a ``.safetensors`` file, an encoder written by
    this project, or the visual tower's own state dict.

    Returns:
        The state dict with the tower's own key names (``conv1.weight``, ``transformer.resblocks...``)
        and whether the file was a TorchScript archive (OpenAI's releases, trained with QuickGELU).

    Raises:
        ValueError: the file holds no visual tower; the message names it.
    """
    path = Path(path)
    state, scripted = _read_checkpoint(path)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    for prefix in _VISUAL_PREFIXES:
        tower = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if tower:
            return tower, scripted
    if "conv1.weight" in state:
        return state, scripted
    raise ValueError(
        f"{path}: no CLIP visual tower in this checkpoint (no key under {', '.join(_VISUAL_PREFIXES)} and no "
        f"conv1.weight; its first keys: {sorted(state)[:6]})"
    )
