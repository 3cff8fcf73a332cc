from __future__ import annotations

import importlib.metadata as md
import platform


def library_versions() -> dict[str, str]:
    """Versions that decide whether a result can be reproduced bit for bit."""
    out = {"python": platform.python_version()}
    for dist in ("attribkit", "torch", "timm", "torchattacks", "numpy", "safetensors"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out
