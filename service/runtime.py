"""onnxruntime, imported with its telemetry off: import `ort` from here, never onnxruntime itself.

onnxruntime otherwise tries to send telemetry at interpreter exit, and where DNS is closed (our
containers, CI) the process then hangs about 10 s on shutdown. The variable must be set before
the first import, so this module is the one place that imports onnxruntime.
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import onnxruntime as ort

__all__ = ["ort"]
