"""The kubelet stand-in runs a rendered pod against the rehearsal's S3 server: its own folders, the
secret's credentials, the store reached, the whole process group killed at once."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from components import podspec
from tests.rehearsal import kubelet, services

pytestmark = [pytest.mark.slow, pytest.mark.integration]

POD_SCRIPT = """
import os, subprocess, sys, s3fs
fs = s3fs.S3FileSystem()  # credentials and endpoint from the environment, as DVC and the stages read them
fs.pipe_file("lpr/pods/hello.txt", os.getcwd().encode())
print("cwd", os.getcwd()); print("home", os.environ["HOME"]); print("tmp", os.environ["TMPDIR"])
print("project", os.path.isfile(os.path.join(os.environ["PYTHONPATH"], "marker.txt")))
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("child", child.pid, flush=True)
child.wait()
"""


def test_a_pod_reaches_the_store_with_its_secret_in_its_own_folders_and_dies_whole(tmp_path):
    image = tmp_path / "image"
    image.mkdir()
    (image / "marker.txt").write_text("the image's project")
    pod = podspec.stage_pod("validate", podspec.load_runtime(), run_id="r1")
    pod["spec"]["containers"][0].update(command=["python", "-c", POD_SCRIPT], args=[])
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": "/home/lpr", "TMPDIR": "/tmp",
           "PYTHONPATH": "/opt/lpr"}
    with services.object_store(tmp_path) as store:
        root = tmp_path / "pod"
        root.mkdir()
        proc = kubelet.start(pod, root, image, services.secrets(store), env, tmp_path / "pod.log")
        log = tmp_path / "pod.log"
        deadline = time.monotonic() + 120
        while "child" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert store.fs().cat_file("lpr/pods/hello.txt").decode() == str(root / "workspace")
        lines = dict(line.split(" ", 1) for line in log.read_text().splitlines())
        assert lines["cwd"] == str(root / "workspace") and lines["home"] == str(root / "home_lpr")
        assert lines["tmp"] == str(root / "tmp") and lines["project"] == "True"
        child = int(lines["child"])
        os.killpg(proc.pid, signal.SIGKILL)  # what the rehearsal does to a training pod
        proc.wait()
        for _ in range(50):
            if not alive(child):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the pod's child {child} outlived the pod's SIGKILL")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
