"""The Serve application as an import path (`cluster.serve_entry:app`), for KubeRay's
RayService and `serve run`. Settings come from the environment."""
import os

from .model_record import check_models
from .runtime import open_cluster
from .settings import Settings

_settings = Settings(storage=os.environ.get("FASHION_STORAGE", "/mnt/fashion"),
                     api_key=os.environ.get("FASHION_API_KEY") or None,
                     samples=os.environ.get("FASHION_SAMPLES", ""))
open_cluster(_settings.storage, shards=int(os.environ.get("FASHION_SHARDS", "4")))
check_models(_settings.storage)   # the catalog's codes came from the models this app serves with

from .rest import build_app  # noqa: E402  (the cluster must exist before the front asks for it)

app = build_app(_settings)
