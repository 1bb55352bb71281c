"""Reading a weights file: a missing, unreadable or wrong one is a clear InvalidInput, not a traceback."""
from __future__ import annotations

from pathlib import Path

import torch

from shards.errors import InvalidInput


def read_weights(path, kind: str, needs: tuple[str, ...], weights_only: bool = True) -> dict:
    """torch.load of a checkpoint this project wrote; `needs` are the keys a `kind` checkpoint carries
    (a text model's file given where the attribute model's is expected lacks them)."""
    path = Path(path)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=weights_only)
    except FileNotFoundError:
        raise InvalidInput(f"no {kind} weights at {path}") from None
    except Exception as exc:  # torch raises many kinds for a file it cannot read back
        raise InvalidInput(f"{path} is not a weights file ({type(exc).__name__}: {str(exc)[:200]})") from None
    missing = [k for k in needs if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise InvalidInput(f"{path} holds no {kind} weights (it lacks {', '.join(missing)})")
    return ck
