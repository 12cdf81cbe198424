"""The models: the implementations of policies and models that tasks and the engine build.

It owns the tabular policies and their models (:mod:`~harness.models.tabular`), the causal-LM
policy, value and reward models with their generation and log-probabilities
(:mod:`~harness.models.lm`), LoRA adapters (:mod:`~harness.models.lora`), offloading frozen
models off the device (:mod:`~harness.models.offload`), loading from the Hugging Face Hub
(:mod:`~harness.models.hub`), the write-once on-disk cache that pre-trained models and shared
artefacts are kept in (:mod:`~harness.models.cache`) and the CPU stand-in of an accelerator
(:mod:`~harness.models.device_trace`). It may import the public API (the modules at the top of
``harness`` and :mod:`harness.tasks.base`) and nothing else of ``harness``: no engine, suite,
report, developer tool or command line, so that a task or a plugin that builds a model loads no
engine. This ``__init__`` imports nothing: import the modules.
"""
