"""Files copied into model versions as they are (e.g. the onnx-python backend's `model.py`)."""

from __future__ import annotations

from pathlib import Path

ONNX_PYTHON_MODEL = Path(__file__).with_name("onnx_python_model.py")
