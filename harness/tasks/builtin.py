"""The core's built-in tasks, registered through the ``register_tasks`` hook like a plugin's."""

from __future__ import annotations

from harness.hookspecs import Register, hookimpl
from harness.tasks.bandit import BanditTask
from harness.tasks.hf import HFTask
from harness.tasks.sentiment import SentimentTask
from harness.tasks.tiny_lm import TinyLMTask
from harness.tasks.token import TokenTask


@hookimpl
def register_tasks(register: Register) -> None:
    register(BanditTask.name, BanditTask)
    register(TokenTask.name, TokenTask)
    register(TinyLMTask.name, TinyLMTask)
    register(HFTask.name, HFTask)
    register(SentimentTask.name, SentimentTask)
