"""The MLflow server command: database + artifact root, localhost, the URL printed, the whole group stopped."""
import json
import os
import socket

import pytest

from djepa.platform import mlflow_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_start_log_stop(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    root, port = tmp_path / "mlflow", _free_port()
    state = mlflow_server.start(root, port=port)
    try:
        url = f"http://127.0.0.1:{port}"
        out = capsys.readouterr().out
        assert state["url"] == url and f"export MLFLOW_TRACKING_URI={url}" in out and "stop --root" in out
        with pytest.raises(FileExistsError, match="already running"):
            mlflow_server.start(root, port=_free_port())
        client = MlflowClient(url)
        run = client.create_run(client.create_experiment("e2e")).info.run_id
        client.log_metric(run, "fid", 2.5)
        (tmp_path / "grid.png").write_bytes(b"png")
        client.log_artifact(run, str(tmp_path / "grid.png"), "samples")
        assert client.get_run(run).data.metrics["fid"] == 2.5
        # artifacts go through the server into <root>/artifacts, the database is <root>/mlflow.db
        assert list((root / "artifacts").rglob("grid.png")) and (root / "mlflow.db").is_file()
        assert json.loads((root / "server.json").read_text())["pgid"] == state["pgid"]
    finally:
        assert mlflow_server.stop(root)
    with pytest.raises(ProcessLookupError):  # every process of the group is gone, workers included
        os.killpg(state["pgid"], 0)
    assert not (root / "server.json").exists() and not mlflow_server._healthy(state["url"])
    assert not mlflow_server.stop(root)
