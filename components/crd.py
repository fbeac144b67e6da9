"""Validate custom resources against the vendored Kubeflow Trainer CRDs, as the API server would.

A CRD's OpenAPI schema is *structural*: the API server prunes a field it does not know, silently,
unless field validation is strict (``kubectl apply --validate=strict``, the default of recent
``kubectl``), which refuses it. A JSON Schema check of the raw schema would let such a field
through; :func:`strict_schema` closes every object that lists its properties (except where the CRD
keeps unknown fields, ``x-kubernetes-preserve-unknown-fields``), so a misspelt or unsupported field
in a rendered ``TrainJob`` fails here instead of vanishing on the cluster.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMAS = Path(__file__).with_name("schemas")
TRAINJOB_CRD = SCHEMAS / "trainer.kubeflow.org_trainjobs.yaml"


def crd_schema(crd_path: str | Path, version: str) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of ``version`` in the CRD file ``crd_path``.

    Raises:
        KeyError: the CRD has no such version.
    """
    docs = [d for d in yaml.safe_load_all(Path(crd_path).read_text()) if d]
    for v in docs[0]["spec"]["versions"]:
        if v["name"] == version:
            return v["schema"]["openAPIV3Schema"]
    raise KeyError(f"{crd_path}: no version {version!r}")


def strict_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with unknown fields refused wherever the API server's strict validation refuses them."""
    out = copy.deepcopy(dict(schema))

    def close(node: Any) -> None:
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(out)
    return out


@lru_cache(maxsize=4)
def _trainjob_validator(version: str):
    schema = strict_schema(crd_schema(TRAINJOB_CRD, version))
    return jsonschema.Draft7Validator(schema)


def validate_trainjob(trainjob: Mapping[str, Any]) -> None:
    """Validate a ``TrainJob`` against the vendored CRD, unknown fields refused.

    Raises:
        jsonschema.ValidationError: the first violation, with its path.
    """
    version = str(trainjob.get("apiVersion", "")).rpartition("/")[2]
    _trainjob_validator(version).validate(dict(trainjob))
