"""A local fork server: the training stack imported once per workflow run, not once per job.

Importing torch, transformers, peft and diffusers costs 6-12 s per process on these machines,
longer than many embedded training jobs themselves. On a local run (not on a cluster) the
workflow starts one server (``onstart`` in the Snakefile) that imports the stack and then
waits on a Unix socket. Each job is still its own Snakemake job with its own outputs, log and
exit status: the job's script (a few lines of Snakemake preamble and ours) connects, hands over
its stdin/stdout/stderr, working directory, environment and argv, and the server forks a child
that runs the *same script file* from the top, in a process where the imports are already done.
The job waits for the child's exit status and exits with it.

The child is a fresh copy of a process that has only imported modules: no model, no RNG draws
that the job does not seed itself, no thread pool started (see :func:`serve`). Anything that
could make it compute differently from a fresh interpreter is a reason to refuse, and a refused
job simply runs in its own process as before:

* an environment that differs in a variable read when the libraries load (thread pools, pinned
  kernels, MKL/oneDNN, Hugging Face offline switches: :data:`LOAD_TIME_ENV`),
* another Python interpreter (a per-rule conda environment),
* peftbench sources edited since the server imported them,
* a cluster job (``SLURM_JOB_ID``): it must run inside its own allocation.

Whether a job ran in the worker is recorded in its provenance (``PEFTBENCH_IN_WORKER``).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import runpy
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TextIO

#: The job's side reads this to find the server; the child sets IN_WORKER (never delegate twice).
SOCKET_ENV = "PEFTBENCH_WORKER"
IN_WORKER_ENV = "PEFTBENCH_IN_WORKER"
#: Environment variables whose value libraries read once, when they load: a job whose value
#: differs from the server's would compute differently in a forked child, so it is refused.
LOAD_TIME_ENV = (
    "OMP_",
    "KMP_",
    "GOTO_",
    "OPENBLAS_",
    "VECLIB_",
    "NUMEXPR_",
    "MKL_",
    "GOMP_",
    "ATEN_",
    "ONEDNN_",
    "DNNL_",
    "TORCH",
    "PYTORCH_",
    "CUDA_",
    "CUBLAS_",
    "NVIDIA_",
    "HF_",
    "HUGGINGFACE_",
    "TRANSFORMERS_",
    "DIFFUSERS_",
    "TOKENIZERS_",
    "PYTHONHASHSEED",
    "PYTHONPATH",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
)
_OWN_ENV = (SOCKET_ENV, IN_WORKER_ENV)
#: Set (unless the caller set them) in every job, in the worker and in a job that runs itself,
#: before torch loads: threads that spin while waiting make a 2-core machine 10x slower when two
#: jobs share it.
JOB_ENV_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
_PACKAGE = Path(__file__).resolve().parents[1]


def load_time_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of ``environ`` that libraries read when they load (see :data:`LOAD_TIME_ENV`)."""
    return {
        key: value
        for key, value in environ.items()
        if key.startswith(LOAD_TIME_ENV) and key not in _OWN_ENV
    }


def source_fingerprint(package: Path = _PACKAGE) -> list[tuple[str, int, int]]:
    """(path, size, mtime in ns) of every Python file of the package: an edit changes it."""
    return sorted(
        (str(path.relative_to(package)), stat.st_size, stat.st_mtime_ns)
        for path in package.rglob("*.py")
        for stat in [path.stat()]
    )


def _recv_line(conn: socket.socket, buffer: bytearray) -> bytes:
    while b"\n" not in buffer:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("the other side closed the connection")
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line


def _send(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


# ---- the job's side -----------------------------------------------------------------------------


def delegate(script: str, environ: Mapping[str, str] = os.environ) -> None:
    """Run this job's ``script`` (Snakemake's ``__real_file__``) in the local worker and exit
    with its status; return without doing anything when there is no worker or it refuses, so
    the caller goes on and runs the job itself. Call it first thing in a job script."""
    for key, value in JOB_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    folder = environ.get(SOCKET_ENV)
    if not folder or environ.get(IN_WORKER_ENV) or environ.get("SLURM_JOB_ID"):
        return
    # Snakemake exports the job's thread count (OMP_NUM_THREADS and the like); libraries read it
    # when they load, so only a server started with the same count can take the job.
    path = str(Path(folder) / f"threads-{environ.get('OMP_NUM_THREADS', 'unset')}")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        request = {
            "script": str(Path(script).resolve()),
            "argv": sys.argv,
            "cwd": os.getcwd(),
            "env": dict(environ),
            "python": os.path.realpath(sys.executable),
            "prefix": sys.prefix,
            "package": str(_PACKAGE),
        }
        data = json.dumps(request).encode() + b"\n"
        socket.send_fds(conn, [data], [0, 1, 2])
        buffer = bytearray()
        answer = json.loads(_recv_line(conn, buffer))
    except OSError:
        conn.close()
        return  # no worker (gone, or never started): run here
    if not answer.get("accepted"):
        print(f"peftbench worker: running in this process: {answer.get('reason')}", file=sys.stderr)
        conn.close()
        return
    sys.exit(_wait_for_exit(conn, buffer))


def _wait_for_exit(conn: socket.socket, buffer: bytearray) -> int:
    """The child's exit status; on SIGINT/SIGTERM ask the server to kill the child and wait
    until it is gone, so that Snakemake never cleans up outputs a child is still writing."""
    stop: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        if not stop:
            stop.append(signum)
            _send(conn, {"kill": True})

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    try:
        status = json.loads(_recv_line(conn, buffer))["exit"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"peftbench worker: lost the worker while the job ran: {exc}", file=sys.stderr)
        return 1
    return 128 + stop[0] if stop else int(status)


# ---- the server's side --------------------------------------------------------------------------


def _refusal(request: dict, own_env: dict[str, str], fingerprint: list) -> str | None:
    """Why this job must run in its own process, or None."""
    if (request.get("python"), request.get("prefix")) != (
        os.path.realpath(sys.executable),
        sys.prefix,
    ):
        return f"another Python ({request.get('prefix')}) than the worker's ({sys.prefix})"
    if request.get("package") != str(_PACKAGE):
        return f"another peftbench ({request.get('package')}) than the worker's ({_PACKAGE})"
    theirs = load_time_env(request.get("env", {}))
    if theirs != own_env:
        differing = sorted(set(theirs.items()) ^ set(own_env.items()))
        names = sorted({key for key, _ in differing})
        return f"environment differs from the worker's in {', '.join(names)}"
    if source_fingerprint() != fingerprint:
        return "peftbench sources changed since the worker started"
    return None


def _run_child(
    request: dict,
    fds: list[int],
    inherited: list[socket.socket],
    set_by_imports: dict,
    learned: Path,
) -> None:
    """In the forked child: become the job, run its script, exit with its status."""
    imported_before = set(sys.modules)
    for sock in inherited:  # the server's sockets: only the server may answer on them
        sock.close()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the job's own streams, for its lifetime
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for key, value in set_by_imports.items():  # what the job's own imports would have set
        os.environ.setdefault(key, value)
    os.environ[IN_WORKER_ENV] = "1"
    tempfile.tempdir = None  # a fresh process reads TMPDIR (set per job by Snakemake) when asked
    sys.argv = list(request["argv"])
    code = 0
    try:
        runpy.run_path(request["script"], run_name="__main__")
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - the job's failure, reported as a fresh process would
        traceback.print_exc()
        code = 1
    _report_imports(learned, imported_before)
    _exit_like_interpreter(code)


def _report_imports(learned: Path, before: set[str]) -> None:
    """Tell the server which modules this job imported that it had not (libraries import many
    lazily: diffusers' model classes, scipy, requests), so that later jobs find them imported."""
    names = sorted(name for name in set(sys.modules) - before if not name.startswith("__"))
    try:
        staging = learned / f".{os.getpid()}.json"
        staging.write_text(json.dumps(names))
        staging.replace(learned / f"{os.getpid()}.json")
    except OSError:
        pass  # only an optimisation


def _learn_imports(path: Path, log: TextIO) -> int:
    """Import (in the server) the modules a finished job reported; how many were new."""
    try:
        names = json.loads(path.read_text())
        path.unlink()
    except (OSError, ValueError):
        return 0
    new = 0
    for name in sorted(names, key=lambda n: n.count(".")):  # packages before their modules
        if name in sys.modules:
            continue
        try:
            __import__(name)
            new += 1
        except BaseException:  # noqa: BLE001 - e.g. a module of the job's own script folder
            pass
    if new:
        print(f"imported {new} modules that a job imported", file=log)
    return new


def _exit_like_interpreter(code: int) -> None:
    """What interpreter shutdown does for a job (atexit handlers, among them logging's, which
    flushes the job's log; its standard streams flushed), without unwinding into the server's
    loop. Not a sweep of every open file object: walking the heap costs 0.5 s per job with the
    training stack loaded, and a job's own files are closed by the code that writes them."""
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        os._exit(code)


def serve(
    path: Path,
    preload: Iterable[str],
    parent: int | None = None,
    idle_s: float = 3600.0,
    log: TextIO | None = None,
) -> None:
    """Import ``preload``, then serve jobs on the Unix socket ``path`` until SIGTERM, until the
    process ``parent`` (the Snakemake run) is gone, or after ``idle_s`` seconds without a job.

    Single-threaded on purpose: a fork copies only the calling thread, so a lock held by another
    thread would stay locked in every child."""
    log = log or sys.stderr
    start = time.perf_counter()
    for key, value in JOB_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # What the job's environment must match: the server's before the imports, which set a few
    # variables themselves (torch: TORCHINDUCTOR_CACHE_DIR), as they would in the job's process.
    own_env = load_time_env(os.environ)
    before = dict(os.environ)
    for name in preload:
        __import__(name)
    set_by_imports = {k: v for k, v in os.environ.items() if k not in before}
    problem = _fork_probe()
    if problem:
        print(f"not serving: {problem}", file=log)
        return
    fingerprint = source_fingerprint()
    learned = path.with_name(path.name + ".imports")
    learned.mkdir(exist_ok=True)
    print(f"imported {', '.join(preload)} in {time.perf_counter() - start:.1f} s", file=log)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = path.with_name(path.name + ".new")
    staging.unlink(missing_ok=True)
    listener.bind(str(staging))
    listener.listen(64)
    os.replace(staging, path)  # jobs see the socket only once it accepts
    server_pid = os.getpid()
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    served, last_job = 0, time.monotonic()
    try:
        accepting = True
        while not stopping and (accepting or children):
            for key, _ in selector.select(timeout=1.0):
                if key.fileobj is listener:
                    conn, _ = listener.accept()
                    inherited = [listener, conn, *children.values()]
                    pid = _accept(
                        conn, inherited, own_env, set_by_imports, fingerprint, learned, log
                    )
                    if pid:
                        children[pid] = conn
                        selector.register(conn, selectors.EVENT_READ, pid)
                        served += 1
                else:
                    # The job asked to stop, or died: its child must not outlive it.
                    selector.unregister(key.fileobj)
                    _kill(key.data)
            for pid, conn in list(children.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    if _registered(selector, conn):
                        selector.unregister(conn)
                    code = os.waitstatus_to_exitcode(status)
                    try:
                        _send(conn, {"exit": code if code >= 0 else 128 - code})
                    except OSError:
                        pass
                    conn.close()
                    del children[pid]
                    last_job = time.monotonic()
                    if _learn_imports(learned / f"{pid}.json", log):
                        set_by_imports.update(
                            {k: v for k, v in os.environ.items() if k not in before}
                        )
                        problem = _fork_probe()  # an import may have started a thread pool
                        if problem and accepting:
                            # Running jobs finish; new ones find no socket and run themselves.
                            print(f"not taking jobs any more: {problem}", file=log)
                            accepting = False
                            selector.unregister(listener)
                            listener.close()
                            path.unlink(missing_ok=True)
            if parent and not _alive(parent):
                break
            if not children and time.monotonic() - last_job > idle_s:
                break
    finally:
        if os.getpid() == server_pid:
            for pid in children:
                _kill(pid)
            path.unlink(missing_ok=True)
            shutil.rmtree(learned, ignore_errors=True)
            print(f"served {served} jobs; stopping", file=log)


def _fork_probe(timeout_s: float = 30.0) -> str | None:
    """Fork a child that does what jobs do with threads (a multi-threaded torch reduction and
    matrix product, a numpy BLAS product) and must exit in time; why not, or None. A fork copies
    only the calling thread, so a library whose thread pool started during the imports (OpenBLAS
    starts one; it shuts it down around a fork) must survive that, or every job would hang."""
    pid = os.fork()
    if pid == 0:
        try:  # only what the server imported: the check must not import anything itself
            torch, np = sys.modules.get("torch"), sys.modules.get("numpy")
            if torch is not None:
                torch.set_num_threads(2)
                x = torch.ones(512, 512)
                float((x @ x).sum())
            if np is not None:
                float(np.ones((256, 256)).dot(np.ones((256, 256))).sum())
        except BaseException:  # noqa: BLE001 - any failure means: do not serve
            os._exit(1)
        os._exit(0)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return None if code == 0 else f"a forked child failed its check (exit {code})"
        time.sleep(0.05)
    _kill(pid)
    os.waitpid(pid, 0)
    return f"a forked child hung in its check for {timeout_s:.0f} s"


def _registered(selector: selectors.BaseSelector, conn: socket.socket) -> bool:
    try:
        selector.get_key(conn)
    except KeyError:
        return False
    return True


def _accept(
    conn: socket.socket,
    inherited: list[socket.socket],
    own_env: dict,
    set_by_imports: dict,
    fingerprint: list,
    learned: Path,
    log: TextIO,
) -> int | None:
    """Read one job's request; fork its child, or refuse. The child's pid, or None."""
    try:
        conn.settimeout(10)
        data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        buffer = bytearray(data)
        request = json.loads(_recv_line(conn, buffer))
        conn.settimeout(None)
    except (OSError, ValueError) as exc:
        print(f"bad request: {exc}", file=log)
        conn.close()
        return None
    reason = _refusal(request, own_env, fingerprint) if len(fds) == 3 else "no streams passed"
    if reason:
        print(f"refused {request.get('script')}: {reason}", file=log)
        _send(conn, {"accepted": False, "reason": reason})
        conn.close()
        for fd in fds:
            os.close(fd)
        return None
    for stream in (sys.stdout, sys.stderr, log):
        stream.flush()
    pid = os.fork()
    if pid == 0:
        _run_child(request, fds, inherited, set_by_imports, learned)
    for fd in fds:
        os.close(fd)
    _send(conn, {"accepted": True, "pid": pid})
    print(f"job {pid}: {request['script']}", file=log)
    return pid


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- the workflow's side (Snakefile onstart / onsuccess / onerror) ------------------------------


#: What every training job imports, whatever its task; the tasks' run modules come on top.
STACK = ("torch", "transformers", "peft", "snakemake.iocontainers", "snakemake.logging")


#: What Snakemake exports to every job as its thread count (snakemake/shell.py).
THREAD_ENV = (
    "OMP_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def start(preload: Iterable[str], threads: Iterable[int], log_dir: Path) -> list[subprocess.Popen]:
    """Start one server per thread count in ``threads`` (the jobs it serves run with that many)
    and point this process's jobs at them (``os.environ``, which local jobs inherit). Returns at
    once: jobs that start before the imports are done run themselves."""
    folder = Path(tempfile.mkdtemp(prefix="peftbench-worker-"))  # short: socket paths are <108 B
    log_dir.mkdir(parents=True, exist_ok=True)
    processes = []
    for count in sorted(set(threads)):
        env = {**os.environ, **dict.fromkeys(THREAD_ENV, str(count))}
        with open(log_dir / f"worker-threads-{count}.log", "w") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "peftbench.core.worker"]
                    + ["--socket", str(folder / f"threads-{count}")]
                    + ["--preload", ",".join(preload), "--parent", str(os.getpid())],
                    cwd=_PACKAGE.parent,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches the jobs; servers stop after them
                )
            )
    os.environ[SOCKET_ENV] = str(folder)
    return processes


def stop(processes: Iterable[subprocess.Popen]) -> None:
    """Stop the servers (they kill children whose job is gone) and forget their sockets."""
    folder = os.environ.pop(SOCKET_ENV, None)
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="peftbench's local fork server (see docstring)")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--preload", default="", help="comma-separated modules to import")
    parser.add_argument("--parent", type=int, help="stop when this process is gone")
    parser.add_argument("--idle", type=float, default=3600.0)
    args = parser.parse_args(argv)
    serve(args.socket, [m for m in args.preload.split(",") if m], args.parent, args.idle)


if __name__ == "__main__":
    main()
