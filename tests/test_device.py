"""Device selection: what can be checked without a GPU."""

from __future__ import annotations

import pytest
import torch

from harness.errors import ConfigError
from harness.runner import resolve_device


def test_auto_picks_cuda_only_when_torch_sees_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cpu") == "cpu"


def test_cuda_without_a_gpu_is_a_named_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device 'cuda' requested, but torch sees no CUDA"):
        resolve_device("cuda")
