"""The restricted Pod Security Standard checker, rule by rule, and every pod the project renders against it.

The Airflow DAG's pods (``KubernetesPodOperator``) are checked in ``tests/dags/test_dags.py`` and
the KFP steps in ``tests/components/test_kfp.py``, with the same checker.
"""

import copy

import pytest

from components import podspec, pss

COMPLIANT = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p"},
    "spec": {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"name": "w", "emptyDir": {}}, {"name": "s", "secret": {"secretName": "x"}}],
        "initContainers": [{"name": "init", "image": "i", "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
        "containers": [{"name": "c", "image": "i", "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
    },
}


def _with(path: str, value, pod=COMPLIANT):
    """``pod`` with ``value`` set at a dotted ``path`` (list items by name: ``containers.c``)."""
    pod = copy.deepcopy(pod)
    node = pod
    parts = path.split(".")
    for part in parts[:-1]:
        if isinstance(node, list):
            node = next(x for x in node if x.get("name") == part)
        else:
            node = node.setdefault(part, {})
    if isinstance(node, list):
        node.append(value)
    else:
        node[parts[-1]] = value
    return pod


def test_a_compliant_pod_passes():
    assert pss.restricted_violations(COMPLIANT) == []


@pytest.mark.parametrize(("path", "value", "control"), [
    # baseline
    ("spec.securityContext.windowsOptions", {"hostProcess": True}, "HostProcess"),
    ("spec.hostNetwork", True, "Host Namespaces"),
    ("spec.hostPID", True, "Host Namespaces"),
    ("spec.hostIPC", True, "Host Namespaces"),
    ("spec.containers.c.securityContext.privileged", True, "Privileged Containers"),
    ("spec.initContainers.init.securityContext.privileged", True, "Privileged Containers"),
    ("spec.containers.c.securityContext.capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}, "Capabilities"),
    ("spec.volumes.x", {"name": "h", "hostPath": {"path": "/"}}, "HostPath Volumes"),
    ("spec.containers.c.ports", [{"containerPort": 80, "hostPort": 80}], "Host Ports"),
    ("spec.securityContext.appArmorProfile", {"type": "Unconfined"}, "AppArmor"),
    ("metadata.annotations", {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}, "AppArmor"),
    ("spec.containers.c.securityContext.seLinuxOptions", {"type": "spc_t"}, "SELinux"),
    ("spec.securityContext.seLinuxOptions", {"user": "root"}, "SELinux"),
    ("spec.containers.c.securityContext.procMount", "Unmasked", "/proc Mount Type"),
    ("spec.securityContext.seccompProfile", {"type": "Unconfined"}, "Seccomp"),
    ("spec.securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}], "Sysctls"),
    # restricted
    ("spec.volumes.x", {"name": "n", "nfs": {"server": "s", "path": "/"}}, "Volume Types"),
    ("spec.containers.c.securityContext.allowPrivilegeEscalation", True, "Privilege Escalation"),
    ("spec.initContainers.init.securityContext.allowPrivilegeEscalation", None, "Privilege Escalation"),
    ("spec.securityContext.runAsNonRoot", False, "Running as Non-root"),
    ("spec.containers.c.securityContext.runAsNonRoot", False, "Running as Non-root"),
    ("spec.securityContext.runAsUser", 0, "Running as Non-root user"),
    ("spec.containers.c.securityContext.runAsUser", 0, "Running as Non-root user"),
    ("spec.containers.c.securityContext.seccompProfile", {"type": "Unconfined"}, "Seccomp"),
    ("spec.containers.c.securityContext.capabilities", {"drop": ["NET_RAW"]}, "Capabilities"),
    ("spec.containers.c.securityContext.capabilities", {"drop": ["ALL"], "add": ["CHOWN"]}, "Capabilities"),
])
def test_each_control_catches_its_violation(path, value, control):
    found = pss.restricted_violations(_with(path, value))
    assert any(v.startswith(f"{control}:") for v in found), found


def test_non_root_and_seccomp_may_come_from_the_pod_or_from_every_container():
    pod = _with("spec.securityContext", {})  # nothing at pod level: every container must say it
    found = pss.restricted_violations(pod)
    assert sum(v.startswith("Running as Non-root:") for v in found) == 2
    assert sum(v.startswith("Seccomp:") for v in found) == 2
    for name in ("c", "init"):
        pod = _with(f"spec.{'containers' if name == 'c' else 'initContainers'}.{name}.securityContext.runAsNonRoot",
                    True, pod)
        pod = _with(f"spec.{'containers' if name == 'c' else 'initContainers'}.{name}.securityContext.seccompProfile",
                    {"type": "Localhost", "localhostProfile": "p.json"}, pod)
    assert pss.restricted_violations(pod) == []


def test_windows_pods_skip_the_linux_only_controls():
    pod = _with("spec.os", {"name": "windows"})
    pod = _with("spec.containers.c.securityContext", {}, pod)
    pod = _with("spec.initContainers.init.securityContext", {}, pod)
    assert pss.restricted_violations(pod) == []


@pytest.fixture(scope="module")
def rt():
    return podspec.load_runtime()


STAGES = ("download", "validate", "prepare", "train_detector", "train_encoder", "index_gallery", "evaluate")


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_pod_is_restricted_with_a_read_only_root(rt, stage):
    pod = podspec.stage_pod(stage, rt, run_id="r1")
    assert pss.restricted_violations(pod) == []
    assert all(c["securityContext"]["readOnlyRootFilesystem"] for c in pod["spec"]["containers"])
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_command_pods_are_restricted(rt):
    pod = podspec.stage_pod_template("promote", rt, command=podspec.exec_command("lpr promote", restore="evaluate"))
    assert pss.restricted_violations(pod) == []


def test_trainjob_node_pods_are_restricted(rt):
    """The pod template patches of the TrainJob, merged into the torch runtime's node pod as Trainer does."""
    tj = podspec.encoder_trainjob(rt, run_id="r1", num_nodes=2)
    for rank in (0, 1):
        pod = podspec.trainjob_node_pod(tj, node_rank=rank)
        assert pss.restricted_violations(pod) == []
        (node,) = pod["spec"]["containers"]
        assert node["securityContext"]["readOnlyRootFilesystem"] is True
    # without the patch the runtime's node pod would be refused: the patch is what makes it pass
    bare = copy.deepcopy(tj)
    bare["spec"]["runtimePatches"] = []
    assert pss.restricted_violations(podspec.trainjob_node_pod(bare)) != []
