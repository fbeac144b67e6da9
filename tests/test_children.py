"""Child processes end with the command that started them (``lpr_core.children``), and ``lpr demo``
stopped with SIGTERM mid-stage leaves neither its stage processes nor its image server behind."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from lpr_core import children

REPO = Path(__file__).resolve().parents[1]

# a child that starts a grandchild in its group and one that escapes into a session of its own
FAMILY = textwrap.dedent("""
    import json, os, subprocess, sys, time
    inner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    escaped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    json.dump({"child": os.getpid(), "inner": inner.pid, "escaped": escaped.pid}, open(sys.argv[1], "w"))
    time.sleep(600)
""")

COMMAND = textwrap.dedent("""
    import subprocess, sys
    from lpr_core import children
    cmd = [sys.executable, sys.argv[1], sys.argv[2]]
    if sys.argv[3] == "group":
        children.run_in_group(cmd)
    else:
        subprocess.call(cmd)
""")


def _survivors(pids, timeout_s=15.0):
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for pid in pids:
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.Error:
                continue
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _start(tmp_path, mode):
    (tmp_path / "family.py").write_text(FAMILY)
    (tmp_path / "command.py").write_text(COMMAND)
    pids = tmp_path / "pids.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "command.py"), str(tmp_path / "family.py"), str(pids),
                             mode], env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while not pids.exists() or not pids.read_text():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.2)
    return proc, json.loads(pids.read_text())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_command_ends_its_whole_family(tmp_path, signum):
    proc, pids = _start(tmp_path, "group")
    try:
        os.kill(proc.pid, signum)
        code = proc.wait(timeout=30)
        # SystemExit(143) for SIGTERM; an uncaught KeyboardInterrupt ends Python by SIGINT itself
        assert code == (128 + signum if signum == signal.SIGTERM else -signal.SIGINT)
        assert _survivors(pids.values()) == []
    finally:
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_without_a_group_the_family_outlives_the_command(tmp_path):
    """The control: what the check above would see without ``child_group`` (so it can fail)."""
    proc, pids = _start(tmp_path, "plain")
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        assert set(_survivors(pids.values(), timeout_s=1)) == set(pids.values())
    finally:
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# a command whose SIGTERM lands on a thread other than the main one, while the main thread waits on
# a child that runs on and prints nothing
OTHER_THREAD = textwrap.dedent("""
    import signal, subprocess, sys, threading, time
    from lpr_core import children

    def other():
        time.sleep(1.0)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        time.sleep(60)

    threading.Thread(target=other, daemon=True).start()
    silent = [sys.executable, "-c", "import time; time.sleep(600)"]
    if sys.argv[1] == "run_in_group":
        children.run_in_group(silent)
    with children.child_group(silent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        if sys.argv[1] == "lines":
            list(children.lines(proc))
        elif sys.argv[1] == "wait":
            children.wait(proc)
        else:
            children.communicate(proc)
""")


@pytest.mark.parametrize("how", ["lines", "wait", "communicate", "run_in_group"])
def test_a_signal_landing_on_another_thread_still_stops_the_command(tmp_path, how):
    (tmp_path / "command.py").write_text(OTHER_THREAD)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "command.py"), how],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    try:
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_handlers_are_restored_and_exit_codes_kept():
    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    assert children.run_in_group([sys.executable, "-c", "raise SystemExit(4)"]) == 4
    with pytest.raises(subprocess.CalledProcessError):
        children.run_in_group([sys.executable, "-c", "raise SystemExit(4)"], check=True)
    with children.child_group([sys.executable, "-c", "import time; time.sleep(60)"], grace_s=1) as proc:
        assert signal.getsignal(signal.SIGTERM) is not before[0]
    assert proc.returncode is not None  # stopped when the block ended
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    with children.terminate_raises(), pytest.raises(SystemExit) as exc:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert exc.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before[0]


# ------------------------------------------------------------------------------------------ lpr demo

SLOW_STAGE = textwrap.dedent("""
    import json, os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    json.dump({"stage": os.getpid(), "child": child.pid}, open("stage.json", "w"))
    time.sleep(600)
""")


@pytest.mark.integration
def test_lpr_demo_stopped_mid_stage_leaves_no_process_and_closes_its_image_server(tmp_path):
    """``lpr demo`` on a project whose first stage runs until stopped: SIGTERM to ``lpr`` ends
    ``dvc repro``, the stage and the stage's own child, and the image server stops answering."""
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True)
    (tmp_path / "stage.py").write_text(SLOW_STAGE)
    (tmp_path / "dvc.yaml").write_text("stages:\n  download:\n    cmd: python stage.py\n    deps: [stage.py]\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(tmp_path / "demo.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "lpr_core.cli", "demo", "--size", "tiny", "--port", str(port),
                                 "--root", str(tmp_path)], cwd=tmp_path, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "stage.json").exists() or not (tmp_path / "stage.json").read_text():
            assert proc.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the demo's stage did not start"
            time.sleep(0.3)
        pids = json.loads((tmp_path / "stage.json").read_text())
        family = psutil.Process(proc.pid).children(recursive=True)
        assert {pids["stage"], pids["child"]} <= {p.pid for p in family}
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the image server is up
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert _survivors([p.pid for p in family]) == []
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
