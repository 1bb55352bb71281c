"""Settings of the serving daemon, with safe defaults (environment variables override)."""
from __future__ import annotations

import os
from dataclasses import dataclass


def _env(name, default, cast=str):
    v = os.environ.get(name)
    return default if v is None else cast(v)


@dataclass(frozen=True)
class Settings:
    storage: str = "./fashion-search-data"
    samples: str = ""
    host: str = "127.0.0.1"                       # loopback unless told otherwise
    port: int = 8000
    api_key: str | None = None                    # None: writes and admin answer 403
    max_upload_bytes: int = _env("FASHION_MAX_UPLOAD", 10 * 1024 * 1024, int)
    max_pixels: int = _env("FASHION_MAX_PIXELS", 40_000_000, int)
    rate_limit: float = _env("FASHION_RATE_LIMIT", 50.0, float)    # requests/s per client
    max_batch: int = 32
    replicas: int = _env("FASHION_REPLICAS", 1, int)
    shard_timeout_s: float = 5.0
