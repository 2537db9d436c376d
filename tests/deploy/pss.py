"""The Kubernetes Pod Security Standards, "restricted" profile (latest), as checks on a pod spec.

Written from https://kubernetes.io/docs/concepts/security/pod-security-standards/ — every control of
the baseline profile plus the restricted additions. ``violations(pod_spec)`` returns one line per
broken control (empty: the pod would be admitted by ``pod-security.kubernetes.io/enforce: restricted``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# baseline
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}  # fmt: skip
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
# restricted
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip
RESTRICTED_ADD_CAPABILITIES = {"NET_BIND_SERVICE"}
SECCOMP_OK = {"RuntimeDefault", "Localhost"}


def containers(pod: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod.get(field) or []:
            yield f"{field}[{container.get('name', '?')}]", container


def violations(pod: dict[str, Any]) -> list[str]:
    return [*_baseline(pod), *_restricted(pod)]


def _baseline(pod: dict[str, Any]) -> Iterator[str]:
    pod_sc = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            yield f"host namespaces: {field} must be false"
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        yield "HostProcess: securityContext.windowsOptions.hostProcess must be false"
    for volume in pod.get("volumes") or []:
        if "hostPath" in volume:
            yield f"hostPath volumes: volume {volume.get('name')} is a hostPath"
    yield from _selinux("pod", pod_sc.get("seLinuxOptions"))
    if (pod_sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        yield "seccomp: pod seccompProfile must not be Unconfined"
    yield from _apparmor("pod", pod_sc.get("appArmorProfile"))
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            yield f"sysctls: {sysctl.get('name')} is not a safe sysctl"
    annotations = pod.get("_annotations") or {}
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
            value == "runtime/default" or value.startswith("localhost/")
        ):
            yield f"AppArmor: annotation {key}={value} is not allowed"
    for where, container in containers(pod):
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            yield f"privileged: {where} must not be privileged"
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            yield f"HostProcess: {where} must not be a host process"
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            yield f"capabilities: {where} adds {sorted(added - BASELINE_CAPABILITIES)}"
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                yield f"host ports: {where} uses hostPort {port['hostPort']}"
        yield from _selinux(where, sc.get("seLinuxOptions"))
        if sc.get("procMount") not in (None, "Default"):
            yield f"/proc mount type: {where} procMount must be Default"
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            yield f"seccomp: {where} seccompProfile must not be Unconfined"
        yield from _apparmor(where, sc.get("appArmorProfile"))


def _selinux(where: str, options: dict[str, Any] | None) -> Iterator[str]:
    if not options:
        return
    if options.get("type", "") not in SELINUX_TYPES:
        yield f"SELinux: {where} type {options.get('type')} is not allowed"
    for field in ("user", "role"):
        if options.get(field):
            yield f"SELinux: {where} must not set seLinuxOptions.{field}"


def _apparmor(where: str, profile: dict[str, Any] | None) -> Iterator[str]:
    if profile and profile.get("type") not in ("RuntimeDefault", "Localhost"):
        yield f"AppArmor: {where} profile type {profile.get('type')} is not allowed"


def _restricted(pod: dict[str, Any]) -> Iterator[str]:
    pod_sc = pod.get("securityContext") or {}
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            yield f"volume types: volume {volume.get('name')} is {sorted(kinds)}"
    pod_non_root = pod_sc.get("runAsNonRoot") is True
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_sc.get("runAsUser") == 0:
        yield "running as non-root user: pod runAsUser must not be 0"
    for where, container in containers(pod):
        sc = container.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            yield f"privilege escalation: {where} must set allowPrivilegeEscalation: false"
        non_root = sc.get("runAsNonRoot")
        if non_root is False or (non_root is None and not pod_non_root):
            yield f"running as non-root: {where} needs runAsNonRoot: true (pod or container)"
        if sc.get("runAsUser") == 0:
            yield f"running as non-root user: {where} runAsUser must not be 0"
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in SECCOMP_OK:
            yield f"seccomp: {where} needs seccompProfile RuntimeDefault or Localhost (pod or container)"
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            yield f"capabilities: {where} must drop ALL"
        added = set(capabilities.get("add") or [])
        if added - RESTRICTED_ADD_CAPABILITIES:
            yield f"capabilities: {where} may add only NET_BIND_SERVICE, adds {sorted(added)}"


def pod_spec_of(resource: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template spec of a workload (with its annotations under ``_annotations``), else None."""
    kind = resource.get("kind")
    if kind == "Pod":
        template = resource
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        template = resource["spec"]["template"]
    elif kind == "CronJob":
        template = resource["spec"]["jobTemplate"]["spec"]["template"]
    else:
        return None
    spec = dict(template.get("spec") or {})
    spec["_annotations"] = (template.get("metadata") or {}).get("annotations") or {}
    return spec
