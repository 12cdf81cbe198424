"""Loading ``transformers`` models without reaching the Hugging Face Hub at run time.

From transformers 4.54 ``from_pretrained`` can replace layers of a model by *Hub kernels*:
code fetched from Hub repositories (``kernels-community/...``) by the ``kernels`` package. From
5.x this is on by default (``use_kernels=None`` means on, and ``kernels`` is a dependency), and
every ``model.train()`` / ``model.eval()`` re-kernelizes the model for the new mode. On CUDA
that maps, for Llama, RMSNorm, the rotary embedding and (in eval mode only) SiLU to Hub kernels:

- on a host without Hub access the first ``train()`` raises (the kernel repository's publisher
  cannot be verified, or with ``HF_HUB_OFFLINE=1`` it is not in the local cache), so every
  language-model run would fail;
- with access, sampling (eval mode) and training run different code for the same layer, so a
  policy's sampling log-probs and its training log-probs no longer come from one function;
- on the CPU a mode switch costs several milliseconds instead of well under one.

So every model the harness loads with ``from_pretrained`` is loaded with ``use_kernels=False``
(:func:`pretrained_kwargs`), in the parent and in every worker (the loaders are the same code),
and copies of it (π_ref, the reward model's backbone) inherit the setting. A suite that wants
Hub kernels asks for them where it loads the model: the ``hf`` task's ``hub_kernels: true``.
Models built from a config (``from_config``: tiny-lm, the memory plan) never kernelize.
"""

from __future__ import annotations

from typing import Any

HUB_KERNELS_SINCE = "4.54"
"""The first transformers release whose ``from_pretrained`` knows ``use_kernels``."""


def transformers_has_hub_kernels() -> bool:
    """Whether the installed transformers can swap layers for Hub kernels (>= 4.54)."""
    from importlib.metadata import version

    from packaging.version import Version

    return Version(version("transformers")) >= Version(HUB_KERNELS_SINCE)


def pretrained_kwargs(*, hub_kernels: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``from_pretrained`` that say whether to use Hub kernels.

    Off by default. On a transformers older than 4.54 (no Hub kernels) there is nothing to turn
    off, and the argument is left out, since those releases pass unknown keywords on to the model's
    constructor; asking for kernels there is an error.
    """
    if not transformers_has_hub_kernels():
        if hub_kernels:
            from harness.errors import ConfigError

            raise ConfigError(f"hub_kernels: true needs transformers >= {HUB_KERNELS_SINCE}")
        return {}
    return {"use_kernels": bool(hub_kernels)}


def uses_hub_kernels(model: Any) -> bool:
    """Whether ``model`` (a ``PreTrainedModel`` or any module) has Hub kernels switched on, so
    that its next ``train()`` / ``eval()`` would kernelize it (and, on CUDA, fetch code)."""
    return bool(getattr(model, "use_kernels", False))
