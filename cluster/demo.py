"""`fashion-search demo` and `fashion-search serve`: a cluster, the models, the REST daemon."""
from __future__ import annotations

import os
import secrets
import time
from dataclasses import replace
from pathlib import Path

import ray
from ray import serve

from shards.errors import InvalidInput, StorageError
from shards.shard import ShardConfig

from .proxy_guard import IMPORT_PATH as PROXY_GUARD
from .runtime import open_cluster, ray_environment, stop_local_ray
from .stopping import stop_on_sigterm
from .settings import Settings

PROJECT = Path(__file__).resolve().parents[1]
SAMPLE_CATALOG = PROJECT / "demo" / "catalog"
SAMPLE_QUERIES = PROJECT / "demo" / "samples"
APP = "fashion-search"

# A 2-core machine under load can take longer than Serve's 5 s to start its HTTP proxy;
# and the proxy should answer 503, not a bare 500, when a replica dies mid-request
# (cluster/proxy_guard.py). These must be in the environment before the local Ray starts.
SERVE_ENV = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "120", "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60",
             "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": PROXY_GUARD}


def serve_environment() -> None:
    for k, v in SERVE_ENV.items():
        os.environ.setdefault(k, v)


def check_port_free(host: str, port: int) -> None:
    """A port this machine cannot listen on is a clear error before Ray starts, not Serve's
    proxy failing after the catalog is indexed."""
    import socket
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise InvalidInput(f"cannot serve on {host}:{port}: {why}; --port names another") from None


def start_server(settings: Settings):
    from models.pipeline import Pipeline

    from .rest import build_app
    # the replicas load these files; a missing or wrong one is a clear error here, rather than
    # replicas that Serve starts again and again before it gives up without saying why
    Pipeline.load(device="cpu")
    # absolute, as the replicas see them: a replica's working directory is not the command's
    settings = replace(settings, storage=str(Path(settings.storage).resolve()),
                       samples=str(Path(settings.samples).resolve()))
    serve.start(http_options={"host": settings.host, "port": settings.port})
    try:
        serve.run(build_app(settings), name=APP, route_prefix="/")
    except RuntimeError as exc:   # Serve's "Deploying application ... failed": the replicas' logs say why
        raise StorageError(f"{exc} (the replicas' errors are in Ray's logs, "
                           "/tmp/ray/session_latest/logs/serve/)") from None


def run_demo(settings: Settings, shards: int = 2, log=print, block: bool = True) -> dict:
    t0 = time.perf_counter()
    check_port_free(settings.host, settings.port)
    serve_environment()
    ray_environment()
    ray.init(namespace="fashion-search", include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    cluster = open_cluster(settings.storage, shards=shards, config=ShardConfig(bits=256, hist_bins=64),
                           codes_photos=True)
    from .indexing import index_catalog, read_catalog
    report = index_catalog(cluster, read_catalog(str(SAMPLE_CATALOG)),
                           errors_path=str(Path(settings.storage) / "index-errors.jsonl"), log=lambda s: log(f"  {s}"))
    start_server(settings)
    url = f"http://{settings.host}:{settings.port}/"
    sample = sorted(SAMPLE_QUERIES.glob("*.jpg"))[0] if SAMPLE_QUERIES.is_dir() else "photo.jpg"
    log(f"\nfashion-search is ready in {time.perf_counter() - t0:.0f} s: {url}")
    log(f"  catalog: {report['indexed'] + report['skipped_existing']} items ({report['indexed']} indexed now)")
    log(f"  try:  curl -s -F image=@{sample} {url}search | head -c 600")
    log(f"  API key for writes (X-API-Key): {settings.api_key}")
    log("  Ctrl-C stops it.")
    if block:
        stop_on_sigterm()   # docker stop / systemctl stop: the clean stop below, as on Ctrl-C
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            t = time.perf_counter()
            log("stopping")
            stop_local_ray(cluster)     # run_demo started this Ray: Serve and the actors stop with it
            log(f"stopped in {time.perf_counter() - t:.1f} s")
    return {"url": url, **report}


def demo_settings(host: str, port: int, storage: str, api_key: str | None) -> Settings:
    return Settings(storage=storage, samples=str(SAMPLE_QUERIES), host=host, port=port,
                    api_key=api_key or secrets.token_urlsafe(18))
