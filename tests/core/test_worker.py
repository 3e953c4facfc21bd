"""The local fork server (peftbench/core/worker.py): a job handed to it behaves like a job run in
its own process (streams, exit status, working directory, environment), a job it must not take
runs itself, and a job's child never outlives the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peftbench.core import worker

REPO = Path(__file__).resolve().parents[2]
# A job script as Snakemake runs it: the hand-off first, then the job's own work.
JOB = """
import os, sys, tempfile, time
sys.path.insert(0, {repo!r})
from peftbench.core.worker import delegate
delegate(__file__)
where = "worker" if os.environ.get("PEFTBENCH_IN_WORKER") else "own"
print(where, os.getpid(), os.getcwd(), sys.argv[1:], tempfile.gettempdir())
print("to stderr", file=sys.stderr)
print("set by imports:", os.environ.get("TORCH_SET_BY_IMPORT"), file=sys.stderr)
if sys.argv[1] == "sleep":
    open("child.pid", "w").write(str(os.getpid()))
    time.sleep(60)
if sys.argv[1] == "lazy":
    print("imported already:", "lazy_module" in sys.modules, file=sys.stderr)
    import lazy_module
    sys.exit(0)
if sys.argv[1] == "raise":
    raise ValueError("the job's own error")
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture
def server(tmp_path: Path):
    """A server with a light preload on a socket for jobs with 1 thread. The preloaded module
    sets a variable when imported, as torch does (TORCHINDUCTOR_CACHE_DIR)."""
    sockets = tmp_path / "sockets"
    sockets.mkdir()
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "sets_env.py").write_text(
        "import os\nos.environ.setdefault('TORCH_SET_BY_IMPORT', 'by the import')\n"
    )
    (modules / "lazy_module.py").write_text("")
    env = {
        **os.environ,
        **dict.fromkeys(worker.THREAD_ENV, "1"),
        "PYTHONPATH": str(modules),
    }
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "peftbench.core.worker", "--socket", str(sockets / "threads-1")]
        + ["--preload", "json,sets_env", "--parent", str(os.getpid())],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while not (sockets / "threads-1").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        time.sleep(0.05)
    yield sockets, env, tmp_path / "server.log"
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def job(tmp_path: Path, env: dict, *args: str, **popen) -> subprocess.CompletedProcess:
    script = tmp_path / "job.py"
    script.write_text(JOB.format(repo=str(REPO)))
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        **popen,
    )


def test_a_job_runs_itself_without_a_worker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != worker.SOCKET_ENV}
    proc = job(tmp_path, env, "0")
    assert proc.returncode == 0 and proc.stdout.startswith("own")


def test_the_worker_runs_the_job_like_its_own_process(server, tmp_path: Path) -> None:
    sockets, env, log = server
    env = {**env, worker.SOCKET_ENV: str(sockets), "TMPDIR": str(tmp_path)}
    proc = job(tmp_path, env, "3")
    assert proc.returncode == 3, proc.stderr
    where, pid, cwd, argv, tmp = proc.stdout.split(maxsplit=4)
    assert where == "worker" and cwd == str(tmp_path / "work") and argv == "['3']"
    assert tmp.strip() == str(tmp_path), "TMPDIR is the job's, not the server's"
    # The job's environment lacks what the server's imports set; a fresh process's imports would
    # set it, so the child has it too.
    assert proc.stderr.splitlines() == ["to stderr", "set by imports: by the import"]
    assert f"job {pid}:" in log.read_text()

    failed = job(tmp_path, env, "raise")
    assert failed.returncode == 1
    assert "ValueError: the job's own error" in failed.stderr


def test_a_job_with_other_load_time_settings_runs_itself(server, tmp_path: Path) -> None:
    sockets, env, log = server
    env = {**env, worker.SOCKET_ENV: str(sockets), "ATEN_CPU_CAPABILITY": "default"}
    proc = job(tmp_path, env, "0")
    assert proc.returncode == 0 and proc.stdout.startswith("own")
    assert "environment differs from the worker's in ATEN_CPU_CAPABILITY" in proc.stderr
    # Another thread count has no server at all: the job does not even ask.
    two = {**env, **dict.fromkeys(worker.THREAD_ENV, "2")}
    two.pop("ATEN_CPU_CAPABILITY")
    assert job(tmp_path, two, "0").stdout.startswith("own")
    # Cluster jobs run inside their own allocation.
    slurm = {**env, "SLURM_JOB_ID": "7"}
    slurm.pop("ATEN_CPU_CAPABILITY")
    assert job(tmp_path, slurm, "0").stdout.startswith("own")


def test_refusals_name_their_reason() -> None:
    env = worker.load_time_env(os.environ)
    fingerprint = worker.source_fingerprint()
    request = {
        "python": os.path.realpath(sys.executable),
        "prefix": sys.prefix,
        "package": str(worker._PACKAGE),
        "env": dict(os.environ),
    }
    assert worker._refusal(request, env, fingerprint) is None
    assert "sources changed" in worker._refusal(request, env, fingerprint[1:])
    assert "another Python" in worker._refusal({**request, "prefix": "/elsewhere"}, env, [])
    assert "another peftbench" in worker._refusal({**request, "package": "/x"}, env, [])
    other = {
        **request,
        "env": {**os.environ, "HF_HUB_OFFLINE": "0" if env.get("HF_HUB_OFFLINE") == "1" else "1"},
    }
    assert "HF_HUB_OFFLINE" in worker._refusal(other, env, fingerprint)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_the_child_never_outlives_its_job(server, tmp_path: Path, signum: int) -> None:
    sockets, env, _ = server
    env = {**env, worker.SOCKET_ENV: str(sockets)}
    script = tmp_path / "job.py"
    script.write_text(JOB.format(repo=str(REPO)))
    (tmp_path / "work").mkdir()
    client = subprocess.Popen(
        [sys.executable, str(script), "sleep"], cwd=tmp_path / "work", env=env
    )
    pid_file = tmp_path / "work/child.pid"
    deadline = time.monotonic() + 30
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(pid_file.read_text())
    assert child != client.pid, "the job ran in the worker's child"
    os.kill(client.pid, signum)
    client.wait(timeout=30)
    if signum == signal.SIGTERM:
        # The job waited until the child was gone, so it leaves no writer behind.
        assert client.returncode == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists()


def test_modules_a_job_imported_are_imported_for_the_next_jobs(server, tmp_path: Path) -> None:
    """Libraries import much lazily (diffusers' model classes, scipy): the first job pays for it,
    the server then imports what it reported, and later jobs start with it."""
    sockets, env, log = server
    env = {**env, worker.SOCKET_ENV: str(sockets)}
    first = job(tmp_path, env, "lazy")
    assert first.returncode == 0 and first.stdout.startswith("worker")
    assert "imported already: False" in first.stderr
    deadline = time.monotonic() + 10
    while "modules that a job imported" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = job(tmp_path, env, "lazy")
    assert "imported already: True" in second.stderr
