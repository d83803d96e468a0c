"""The MLflow tracking server: a database backend and an artifact store under one root on shared storage.

    python jobs/mlflow_server.py start --root /shared/mlflow              # foreground; Ctrl-C stops it
    python jobs/mlflow_server.py start --root /shared/mlflow --detach     # background (a cluster's head node)
    python jobs/mlflow_server.py stop  --root /shared/mlflow              # stops its whole process group

It binds 127.0.0.1 unless --host says otherwise: on a cluster, the head node's private address, so that
training workers reach it and the internet does not. Jobs find it through MLFLOW_TRACKING_URI (the
start command prints the `ray job submit --runtime-env-json` that passes it).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from djepa.platform.mlflow_server import serve, start, stop  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("--root", required=True, help="directory for mlflow.db, artifacts/, server.log, server.json")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--backend-store-uri", help="a database URI (default sqlite:///<root>/mlflow.db), "
                                                "e.g. postgresql://user@db/mlflow")
    ap.add_argument("--detach", action="store_true", help="start in the background and return")
    args = ap.parse_args()
    try:
        if args.action == "stop":
            stop(args.root)
        elif args.detach:
            start(args.root, host=args.host, port=args.port, backend_store_uri=args.backend_store_uri)
        else:
            serve(args.root, host=args.host, port=args.port, backend_store_uri=args.backend_store_uri)
    except (FileExistsError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
