"""The Pod Security Standard "restricted" (Kubernetes v1.32) as a checker of Pod manifests.

The rules are those of the Kubernetes page "Pod Security Standards" for v1.32: every control of
the *baseline* profile, then those *restricted* adds. :func:`restricted_violations` returns one line
per violated control, naming the field, so a test can assert an empty list and a reader can see
why a pod would be refused by a namespace labelled ``pod-security.kubernetes.io/enforce:
restricted``. Controls that only apply to Windows pods (``spec.os.name: windows``) are skipped
for them, as the standard says.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

#: Capabilities baseline allows adding (the container runtimes' default set).
BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
#: The only capability restricted allows adding (after dropping ALL).
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
#: Sysctls baseline allows (the "safe" set as of v1.32).
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes"})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
#: Volume types restricted allows (every other type, hostPath included, is refused).
RESTRICTED_VOLUME_TYPES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"})
_SECCOMP_OK = ("RuntimeDefault", "Localhost")
_CONTAINER_KINDS = ("containers", "initContainers", "ephemeralContainers")


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for kind in _CONTAINER_KINDS:
        for c in spec.get(kind) or []:
            yield f"spec.{kind}[{c.get('name', '?')}]", c


def baseline_violations(pod: Mapping[str, Any]) -> list[str]:
    """The baseline controls ``pod`` (a ``v1/Pod`` manifest) violates, one line each."""
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    psc = spec.get("securityContext") or {}
    out: list[str] = []
    # HostProcess
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("HostProcess: spec.securityContext.windowsOptions.hostProcess must be unset or false")
    for where, c in _containers(spec):
        if ((c.get("securityContext") or {}).get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"HostProcess: {where}.securityContext.windowsOptions.hostProcess must be unset or false")
    # Host namespaces
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(f"Host Namespaces: spec.{key} must be unset or false")
    for where, c in _containers(spec):
        sc = c.get("securityContext") or {}
        # Privileged containers
        if sc.get("privileged"):
            out.append(f"Privileged Containers: {where}.securityContext.privileged must be unset or false")
        # Capabilities
        added = set((sc.get("capabilities") or {}).get("add") or []) - BASELINE_CAPABILITIES
        if added:
            out.append(f"Capabilities: {where}.securityContext.capabilities.add has {sorted(added)}")
        # Host ports
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"Host Ports: {where}.ports[].hostPort must be unset or 0")
        # AppArmor, SELinux, /proc mount, seccomp (container level)
        out += _apparmor(sc, f"{where}.securityContext") + _selinux(sc, f"{where}.securityContext")
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"/proc Mount Type: {where}.securityContext.procMount must be unset or Default")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"Seccomp: {where}.securityContext.seccompProfile.type must not be Unconfined")
    # HostPath volumes
    for v in spec.get("volumes") or []:
        if "hostPath" in v:
            out.append(f"HostPath Volumes: spec.volumes[{v.get('name')}].hostPath is forbidden")
    # AppArmor and SELinux (pod level), the AppArmor annotations
    out += _apparmor(psc, "spec.securityContext") + _selinux(psc, "spec.securityContext")
    for key, value in (meta.get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                value == "runtime/default" or str(value).startswith("localhost/")):
            out.append(f"AppArmor: metadata.annotations[{key}] must be runtime/default or localhost/*")
    # Seccomp (pod level)
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append("Seccomp: spec.securityContext.seccompProfile.type must not be Unconfined")
    # Sysctls
    for s in psc.get("sysctls") or []:
        if s.get("name") not in SAFE_SYSCTLS:
            out.append(f"Sysctls: spec.securityContext.sysctls[{s.get('name')}] is not in the safe set")
    return out


def _apparmor(sc: Mapping[str, Any], where: str) -> list[str]:
    kind = (sc.get("appArmorProfile") or {}).get("type")
    return [] if kind in (None, "RuntimeDefault", "Localhost") else [
        f"AppArmor: {where}.appArmorProfile.type must be unset, RuntimeDefault or Localhost"]


def _selinux(sc: Mapping[str, Any], where: str) -> list[str]:
    opts = sc.get("seLinuxOptions") or {}
    out = []
    if opts.get("type", "") not in SELINUX_TYPES:
        out.append(f"SELinux: {where}.seLinuxOptions.type {opts.get('type')!r} is not allowed")
    for key in ("user", "role"):
        if opts.get(key):
            out.append(f"SELinux: {where}.seLinuxOptions.{key} must be unset")
    return out


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """The restricted controls (baseline included) ``pod`` (a ``v1/Pod`` manifest) violates, one line each.

    An empty list means a namespace enforcing ``restricted`` at v1.32 admits the pod.
    """
    out = baseline_violations(pod)
    spec = pod.get("spec") or {}
    psc = spec.get("securityContext") or {}
    linux = ((spec.get("os") or {}).get("name")) != "windows"
    # Volume types
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            out.append(f"Volume Types: spec.volumes[{v.get('name')}] is {sorted(kinds - RESTRICTED_VOLUME_TYPES)}; "
                       f"allowed: {', '.join(sorted(RESTRICTED_VOLUME_TYPES))}")
    pod_non_root = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if psc.get("runAsNonRoot") is False:
        out.append("Running as Non-root: spec.securityContext.runAsNonRoot must not be false")
    if psc.get("runAsUser") == 0:
        out.append("Running as Non-root user: spec.securityContext.runAsUser must not be 0")
    if linux and pod_seccomp is not None and pod_seccomp not in _SECCOMP_OK:
        out.append("Seccomp: spec.securityContext.seccompProfile.type must be RuntimeDefault or Localhost")
    for where, c in _containers(spec):
        sc = c.get("securityContext") or {}
        # Privilege escalation (Linux)
        if linux and sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"Privilege Escalation: {where}.securityContext.allowPrivilegeEscalation must be false")
        # Running as non-root: the container's own field, or the pod's when the container's is unset
        non_root = sc.get("runAsNonRoot")
        if non_root is False or (non_root is None and not pod_non_root):
            out.append(f"Running as Non-root: {where}.securityContext.runAsNonRoot must be true "
                       "(or spec.securityContext.runAsNonRoot true and this one unset)")
        if sc.get("runAsUser") == 0:
            out.append(f"Running as Non-root user: {where}.securityContext.runAsUser must not be 0")
        # Seccomp (Linux): RuntimeDefault or Localhost, on the container or inherited from the pod
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if linux and not (seccomp in _SECCOMP_OK or (seccomp is None and pod_seccomp in _SECCOMP_OK)):
            out.append(f"Seccomp: {where}.securityContext.seccompProfile.type must be RuntimeDefault or Localhost "
                       "(or unset with the pod's set so)")
        # Capabilities (Linux): drop ALL, add at most NET_BIND_SERVICE
        caps = sc.get("capabilities") or {}
        if linux and "ALL" not in (caps.get("drop") or []):
            out.append(f"Capabilities: {where}.securityContext.capabilities.drop must include ALL")
        added = set(caps.get("add") or []) - RESTRICTED_CAPABILITIES
        if linux and added:
            out.append(f"Capabilities: {where}.securityContext.capabilities.add may only hold NET_BIND_SERVICE, "
                       f"has {sorted(added)}")
    return out
