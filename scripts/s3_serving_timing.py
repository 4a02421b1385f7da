"""Time to first model ready: a local folder vs tritonserver reading S3 directly vs a synced local copy.

Starts moto's S3 server on 127.0.0.1 (as the tests do), publishes REPOSITORY, then alternates the
three ways N times. Also times publishing and re-publishing (library and whole CLI process).

    PYTHONPATH=$PWD .venv/bin/python scripts/s3_serving_timing.py model_repository 3
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.deploy.conftest import moto_server  # noqa: E402


def main(repo: Path, runs: int) -> None:
    from dnx.deploy.publish import publish
    from dnx.storage.remote import local_copy
    from dnx.serving.server import TritonServer

    work = Path(tempfile.mkdtemp(prefix="dnx-s3-timing-"))
    try:
        with moto_server(work / "moto.log") as srv:
            os.environ.update(srv.env())
            uri = f"s3://{srv.bucket}/timing"
            for label in ("publish (first)", "publish (unchanged)"):
                t = time.perf_counter()
                r = publish(repo, uri, endpoint_url=srv.url, progress=False)
                print(f"{label:28s} {time.perf_counter() - t:6.2f} s  {r.uploaded_bytes} bytes uploaded")
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "dnx.cli", "publish", "-r", str(repo), uri, "--json"],
                                 env={**os.environ, "AWS_ENDPOINT_URL": srv.url}, capture_output=True, text=True, check=True)
            print(f"{'dnx publish CLI (unchanged)':28s} {time.perf_counter() - t:6.2f} s  "
                  f"{json.loads(out.stdout)['uploaded_bytes']} bytes uploaded")

            def ready(repository, **kw) -> float:
                t = time.perf_counter()
                with TritonServer(repository, mode="local", grpc_port=0, http_port=0, metrics_port=0,
                                  log_file=work / "tritonserver.log", **kw) as server:
                    assert server.loaded, server.skipped
                    return time.perf_counter() - t

            times: dict[str, list[float]] = {"local folder": [], "S3, Triton direct": [], "S3, sync (cold)": [], "S3, sync (cached)": []}
            cache = work / "cache"
            for _ in range(runs):
                times["local folder"].append(ready(repo))
                times["S3, Triton direct"].append(ready(uri, endpoint_url=srv.url))
                shutil.rmtree(cache, ignore_errors=True)
                for label in ("S3, sync (cold)", "S3, sync (cached)"):
                    t = time.perf_counter()
                    copy = local_copy(uri, endpoint_url=srv.url, cache_dir=cache)
                    times[label].append(time.perf_counter() - t + ready(copy))
            base = statistics.median(times["local folder"])
            for label, values in times.items():
                med = statistics.median(values)
                print(f"{label:28s} median {med:5.2f} s ({med / base:4.2f}x local)  runs {[round(v, 2) for v in values]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "model_repository"), int(sys.argv[2]) if len(sys.argv) > 2 else 3)
