"""The Serve application as an import path (`cluster.serve_entry:app`), for KubeRay's
RayService and `serve run`. Settings come from the environment."""
import os

from .runtime import open_cluster
from .settings import Settings

_settings = Settings(storage=os.environ.get("FASHION_STORAGE", "/mnt/fashion"),
                     api_key=os.environ.get("FASHION_API_KEY") or None,
                     samples=os.environ.get("FASHION_SAMPLES", ""))
open_cluster(_settings.storage, shards=int(os.environ.get("FASHION_SHARDS", "4")), codes_photos=True)

from .rest import build_app  # noqa: E402  (the cluster must exist before the front asks for it)

app = build_app(_settings)
