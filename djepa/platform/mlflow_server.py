"""The MLflow tracking server of a cluster (or a laptop): a database backend and an artifact store in one root
directory on shared storage, started in its own process group and stopped as a whole.

`mlflow server` spawns helpers (gunicorn/uvicorn workers, a job runner) that outlive a SIGTERM of the main
process, so the server gets a session of its own and stop() signals that whole group.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from djepa.console import say


def _alive(pgid: int) -> bool:
    try:  # reap our own exited children of the group first: a zombie still answers kill(0)
        while os.waitpid(-pgid, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _healthy(url: str) -> bool:
    import requests

    try:
        return requests.get(f"{url}/health", timeout=2).ok
    except requests.RequestException:
        return False


def _state_file(root: Path) -> Path:
    return root / "server.json"


def start(root: str | Path, host: str = "127.0.0.1", port: int = 5000, backend_store_uri: str | None = None,
          timeout: float = 180.0) -> dict:
    """Start the server in the background and wait until it answers; -> its state (url, pgid, ...)."""
    root = Path(root).resolve()
    state_file = _state_file(root)
    if state_file.is_file():
        old = json.loads(state_file.read_text())
        if _alive(old["pgid"]):
            raise FileExistsError(f"an MLflow server from {root} is already running at {old['url']} (process group "
                                  f"{old['pgid']}); stop it with: python jobs/mlflow_server.py stop --root {root}")
        state_file.unlink()
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    backend = backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
    url = f"http://{host}:{port}"
    if _healthy(url):
        raise FileExistsError(f"something already answers at {url}; choose another --port")
    log = open(root / "server.log", "ab")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
           "--artifacts-destination", str(root / "artifacts"), "--host", host, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    state = {"url": url, "pid": proc.pid, "pgid": os.getpgid(proc.pid), "backend_store_uri": backend,
             "artifacts": str(root / "artifacts"), "log": str(root / "server.log"), "command": cmd}
    state_file.write_text(json.dumps(state, indent=1))
    say("mlflow", f"starting `mlflow server` (process group {state['pgid']}, log {state['log']}) ...")
    t0 = time.monotonic()
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() - t0 > timeout:
            _kill(state["pgid"])
            state_file.unlink(missing_ok=True)
            tail = (root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the MLflow server did not come up at {url} ({'exited' if proc.poll() is not None else 'timed out'}); "
                               f"the end of {state['log']}:\n{tail}")
        time.sleep(0.5)  # polling a child we started: nothing to wait on but its HTTP port
    say("mlflow", f"up in {time.monotonic() - t0:.0f}s at {url}")
    say("mlflow", f"  export MLFLOW_TRACKING_URI={url}")
    say("mlflow", f"  ray job submit --runtime-env-json '{{\"env_vars\": {{\"MLFLOW_TRACKING_URI\": \"{url}\"}}}}' ...")
    say("mlflow", f"  stop: python jobs/mlflow_server.py stop --root {root}")
    return state


def _kill(pgid: int, grace: float = 15.0) -> None:
    """SIGTERM to the whole group, then SIGKILL to whatever is left after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        t0 = time.monotonic()
        while _alive(pgid) and time.monotonic() - t0 < wait:
            time.sleep(0.2)
        if not _alive(pgid):
            return


def stop(root: str | Path) -> bool:
    """Stop the server started from `root` (its whole process group); False if none was running."""
    root = Path(root).resolve()
    state_file = _state_file(root)
    if not state_file.is_file():
        say("mlflow", f"no server state in {root}: nothing to stop")
        return False
    state = json.loads(state_file.read_text())
    was = _alive(state["pgid"])
    _kill(state["pgid"])
    state_file.unlink(missing_ok=True)
    say("mlflow", f"stopped the server at {state['url']} (process group {state['pgid']})" if was else
                  f"the server at {state['url']} was no longer running; state removed")
    return was


def serve(root: str | Path, **kwargs) -> None:
    """Start, then stay in the foreground until Ctrl-C or SIGTERM, and stop the group on the way out."""
    start(root, **kwargs)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    try:
        state = json.loads(_state_file(Path(root).resolve()).read_text())
        while not stopping and _alive(state["pgid"]):
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        stop(root)
