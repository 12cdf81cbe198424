"""Checking a loaded suite against the plugin host: plugin names, algorithm configs, task params,
data needs, comparisons, placement on devices, LoRA, tuning spaces; and its warnings.

:func:`check_suite` runs every check and returns the suite's runs
(:func:`~harness.suite.expansion.expand`); each error is one line naming the file, the line and
the key.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from harness.config import build_config, check_space, config_dict, rejected_key
from harness.errors import ConfigError, HarnessError
from harness.suite import schema
from harness.suite.expansion import _sweep_points, count_runs, expand, shown_label, tuned_labels
from harness.suite.hashing import file_digest
from harness.suite.loading import _line_index, _nearest_line
from harness.suite.model import RunSpec, Suite
from harness.suite.schema import AlgorithmSpec, CompareSpec, PolicySpec


def _check_data_needs(suite: Suite, i: int, alg: AlgorithmSpec, cls: Any, where: Any) -> None:
    """Refuse, in one line, an algorithm whose ``needs`` the suite's data cannot feed
    (:data:`harness.algorithm.NEEDS`): pairs from data marked unpaired, or a label-noise rate
    the suite does not know (data from a file) or that is not below 1/2."""
    prefs = suite.preferences
    if "preferences" in cls.needs and prefs.unpaired:
        raise ConfigError(
            f"{where('preferences', 'unpaired')}: preferences.unpaired: algorithms.{i} "
            f"('{alg.name}') needs preference pairs, and the suite marks its data unpaired "
            f"(only algorithms that need 'unpaired' examples, e.g. kto, can learn from them)"
        )
    if "label_noise" not in cls.needs:
        return
    key = getattr(cls, "label_noise_key", None)
    points = [{**alg.config, **alg.per_task.get(t.name, {}), **p}
              for t in suite.tasks for p in _sweep_points(alg.sweep)]
    for values in points:
        own = values.get(key) if key else None
        if own is not None:
            epsilon, at = own, ("algorithms", i, "config", key)
            if key in alg.sweep:
                at = ("algorithms", i, "sweep", key)
        elif prefs.file is not None:
            hint = f"; set config.{key}" if key else ""
            raise ConfigError(
                f"{where('algorithms', i, 'name')}: algorithms.{i}.name: '{alg.name}' needs the "
                f"rate ε at which the labels were flipped, and preferences.file's is unknown "
                f"(only simulated data have a known preferences.flip_rate){hint}"
            )
        else:
            epsilon, at = prefs.flip_rate, ("preferences", "flip_rate")
        if not epsilon < 0.5:
            raise ConfigError(
                f"{where(*at)}: {'.'.join(map(str, at))}: '{alg.name}' needs a label-noise rate "
                f"ε below 0.5, got {epsilon} (at 0.5 the labels carry no information)"
            )


def check_suite(
    suite: Suite, path: str | Path, host: Any, *, allow_large: bool = False
) -> list[RunSpec]:
    """Check plugin names and configs against the plugin host; return the expanded runs.

    A suite of more than :data:`MAX_RUNS` runs is refused unless ``allow_large``.
    """
    try:
        lines = _line_index(Path(path).read_text())
    except (OSError, UnicodeDecodeError, RecursionError, yaml.YAMLError):
        lines = {}

    def where(*keys: Any) -> str:
        line = _nearest_line(lines, keys)
        return f"{path}:{line}" if line else str(path)

    runs = count_runs(suite)  # before checking every sweep point: a huge grid is refused at once
    if runs > schema.MAX_RUNS and not allow_large:
        raise ConfigError(
            f"{path}: the suite expands to {runs:,} runs (tasks × instances × replicates × "
            "algorithm configs); "
            f"more than {schema.MAX_RUNS:,} needs --allow-large"
        )

    def known(kind: str, name: str, *keys: Any) -> Any:
        try:
            return host.get(kind, name)
        except HarnessError as exc:
            raise ConfigError(f"{where(*keys)}: {'.'.join(map(str, keys))}: {exc}") from None

    known("preference_model", suite.preferences.preference_model, "preferences", "preference_model")
    known("preference_model", suite.reward_model.preference_model, "reward_model",
          "preference_model")
    for j, name in enumerate(suite.evaluation.evaluators):
        known("evaluator", name, "evaluation", "evaluators", j)
    # Tasks before algorithms: a misspelt task is named where it is misspelt, not where an
    # algorithm's per_task names it correctly.
    for i, task in enumerate(suite.tasks):
        cls = known("task", task.name, "tasks", i, "name")
        key = rejected_key(cls.Params, task.params)
        build_config(cls.Params, task.params,
                     where=f"{where('tasks', i, 'params', key)}: tasks.{i}.params ({task.name})")
    task_names = [t.name for t in suite.tasks]
    labels: set[str] = set()
    classes = []
    for i, alg in enumerate(suite.algorithms):
        cls = known("algorithm", alg.name, "algorithms", i, "name")
        classes.append(cls)
        label = alg.label or alg.name
        if label in labels:
            raise ConfigError(
                f"{where('algorithms', i)}: algorithms.{i}: two algorithms are labelled "
                f"'{label}'; give each a distinct 'label'"
            )
        labels.add(label)
        for key in alg.sweep:
            if key in alg.config:
                raise ConfigError(
                    f"{where('algorithms', i, 'sweep', key)}: algorithms.{i}.sweep.{key}: also "
                    f"set in config; a field is either fixed or swept"
                )
        for point in _sweep_points(alg.sweep):
            values = {**alg.config, **point}
            key = rejected_key(cls.Config, values)
            part = "sweep" if key in point else "config"
            at = f"algorithms.{i}.{part}" + (f".{key}" if key else "")
            build_config(cls.Config, values,
                         where=f"{where('algorithms', i, part, key)}: {at} ({alg.name})")
        for task_name, overrides in alg.per_task.items():
            if task_name not in task_names:
                hint = difflib.get_close_matches(str(task_name), task_names, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ConfigError(
                    f"{where('algorithms', i, 'per_task', task_name)}: algorithms.{i}.per_task."
                    f"{task_name}: no task '{task_name}' in this suite{suggestion}; tasks: "
                    f"{', '.join(task_names)}"
                )
            for point in _sweep_points(alg.sweep):
                values = {**alg.config, **overrides, **point}
                key = rejected_key(cls.Config, values)
                if key in point:
                    keys: tuple[Any, ...] = ("sweep", key)
                elif key in overrides:
                    keys = ("per_task", task_name, key)
                else:
                    keys = ("config", key)
                at = f"algorithms.{i}." + ".".join(str(k) for k in keys if k is not None)
                build_config(cls.Config, values,
                             where=f"{where('algorithms', i, *keys)}: {at} ({alg.name}, task "
                             f"{task_name})")
        _check_data_needs(suite, i, alg, cls, where)
    needs_reward = any("reward" in c.needs for c in classes) or (
        "proxy_reward" in suite.evaluation.evaluators)
    if suite.preferences.unpaired and suite.reward_model.kind == "fitted" and needs_reward:
        raise ConfigError(
            f"{where('reward_model', 'kind')}: reward_model.kind: a fitted reward model needs "
            f"preference pairs, but preferences.unpaired is true (line "
            f"{_nearest_line(lines, ('preferences', 'unpaired')) or '?'}); use kind: gold or "
            f"paired data"
        )
    _check_shown_labels(suite, where)
    _check_policy(suite, host, where)
    if suite.tuning is not None:
        _check_tuning(suite, host, where)
    names = {alg.name for alg in suite.algorithms}
    labels_known = {alg.label or alg.name for alg in suite.algorithms}
    for i, claim in enumerate(suite.claims or []):
        for j, label in enumerate(claim.order):
            if label not in labels_known and label not in names:
                raise ConfigError(
                    f"{where('claims', i, 'order', j)}: claims.{i}.order.{j}: no algorithm "
                    f"labelled or named '{label}' in this suite (labels: "
                    f"{', '.join(sorted(labels_known))})"
                )
        if len(set(claim.order)) != len(claim.order):
            raise ConfigError(f"{where('claims', i, 'order')}: claims.{i}.order: a "
                              "configuration appears twice")
    _check_compare(suite, where)
    if suite.preferences.file is not None:
        try:
            file_digest(suite.preferences.file)
        except OSError as exc:
            raise ConfigError(f"{where('preferences', 'file')}: preferences.file: cannot read "
                              f"{suite.preferences.file!r} ({exc.strerror or exc})") from None
    return expand(suite, host, allow_large=allow_large)


def compare_names(suite: Suite) -> list[str]:
    """What an entry of ``compare`` may name: a label, an algorithm name, or a sweep point's
    configuration as reports show it (``dpo[beta=0.1]``)."""
    names: dict[str, None] = {}
    for alg in suite.algorithms:
        names[alg.label or alg.name] = None
        names[alg.name] = None
        for point in _sweep_points(alg.sweep):
            names[shown_label(alg.label or alg.name, point)] = None
    return list(names)


def _check_compare(suite: Suite, where: Callable[..., str]) -> None:
    """Every configuration ``compare`` names is one of the suite's (:func:`compare_names`)."""
    if suite.compare is None:
        return
    known = compare_names(suite)
    labels = ", ".join(sorted({a.label or a.name for a in suite.algorithms}))
    if isinstance(suite.compare, CompareSpec):
        named = [(("compare", "baseline"), suite.compare.baseline)]
    else:
        named = [(("compare", i, j), name) for i, pair in enumerate(suite.compare)
                 for j, name in enumerate(pair)]
    for keys, name in named:
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(
                f"{where(*keys)}: {'.'.join(map(str, keys))}: no algorithm labelled or named "
                f"'{name}' in this suite{suggestion} (labels: {labels})"
            )


LOW_PRECISION_WEIGHTS = ("bfloat16", "float16")
"""``hf`` weight dtypes without float32 master weights: an optimizer updates them in place."""


def check_placement(
    suite: Suite, path: str | Path, host: Any, *, executor: str = "local"
) -> list[str]:
    """Check what the suite asks of the devices, for ``executor``; return warnings (one line
    each: ``file:line: warning: key: ...``).

    Errors (:class:`ConfigError`, one line: file, line, key) for what cannot be honoured:

    - ``device: cuda`` under the ``ray`` executor with ``gpus_per_run: 0``: Ray hides the GPUs
      from a task that requests none, so every run would fail;
    - ``precision: bf16`` where this host would run it without native bf16: ``device: auto`` on
      a host without CUDA (the runs would be on the CPU), or a CUDA device older than compute
      capability 8.0. (Under Ray, and for ``device: cuda`` on a host without a GPU, the device
      is the run's machine's: the run checks it.)

    Warnings for what works but is likely not meant:

    - ``device: auto`` under Ray with ``gpus_per_run: 0``: every run on the CPU;
    - an ``hf`` task with ``bfloat16``/``float16`` weights trained with Adam at a learning rate
      below 1e-4: an update smaller than half a bf16 ulp of a weight (2⁻⁹·|w|) rounds away, so
      every weight larger than lr·2⁹ in magnitude never changes.
    """
    import torch

    path = Path(path)
    lines = _line_index(path.read_text()) if path.exists() else {}

    def where(*keys: Any) -> str:
        line = _nearest_line(lines, keys)
        return f"{path}:{line}" if line else str(path)

    def at(key: str) -> tuple[str, str]:  # the key's own line if the file sets it
        return (where(key), key) if (key,) in lines else (where("device"), key)

    warnings: list[str] = []
    if executor == "ray" and suite.gpus_per_run == 0 and suite.device != "cpu":
        place, key = at("gpus_per_run")
        if suite.device == "cuda":
            raise ConfigError(
                f"{place}: {key}: device cuda under the ray executor needs gpus_per_run > 0 "
                f"(Ray hides the GPUs from a run that requests none)"
            )
        warnings.append(
            f"{place}: warning: {key}: 0 with device auto under the ray executor: Ray hides the "
            f"GPUs from a run that requests none, so every run is on the CPU"
        )
    if executor == "ray" and suite.gpus_per_run % 1:
        place, key = at("gpus_per_run")
        warnings.append(
            f"{place}: warning: {key}: {suite.gpus_per_run:g} is a fraction of a GPU: Ray "
            f"packs runs onto one GPU, where they share its memory (each run's memory plan is "
            f"its own) and its time, so their timings are not comparable"
        )
    if suite.precision == "bf16" and executor != "ray":
        cuda = torch.cuda.is_available()
        if suite.device == "auto" and not cuda:
            raise ConfigError(
                f"{where('precision')}: precision: bf16 with device auto, on a host without a "
                f"CUDA device: the runs would be on the CPU; use precision fp32, or a GPU host"
            )
        if cuda and suite.device != "cpu" and not torch.cuda.is_bf16_supported(
                including_emulation=False):
            raise ConfigError(
                f"{where('precision')}: precision: bf16, but this host's CUDA device "
                f"({torch.cuda.get_device_name()}) has no native bf16 arithmetic (compute "
                f"capability 8.0 or later); use precision fp32"
            )
    for i, task in enumerate(suite.tasks):
        dtype = task.params.get("dtype")
        if task.name != "hf" or dtype not in LOW_PRECISION_WEIGHTS:
            continue
        for j, alg in enumerate(suite.algorithms):
            cls = host.algorithm(alg.name)
            # With LoRA the policy trains float32 adapters (peft keeps them in float32 over a
            # low-precision base): only a full-weight critic trains weights of the base's dtype.
            critic = bool(getattr(cls, "trains_critic", False))
            policy = alg.policy if alg.policy is not None else suite.policy
            lora = policy is not None and policy.lora is not None
            if lora and not critic:
                continue
            trained = "a critic of" if lora else "weights trained by"
            rates = []
            for point in _sweep_points(alg.sweep):
                values = {**alg.config, **alg.per_task.get(task.name, {}), **point}
                config = config_dict(build_config(cls.Config, values))
                optimizer = str(config.get("optimizer", "adam"))
                rate = config.get("learning_rate")
                if isinstance(rate, int | float) and 0 < rate < 1e-4 and optimizer.startswith(
                        "adam"):
                    rates.append(float(rate))
            if rates:
                warnings.append(
                    f"{where('tasks', i, 'params', 'dtype')}: warning: tasks.{i}.params.dtype: "
                    f"{dtype} "
                    f"{trained} algorithms.{j} ({alg.name}) with Adam at learning_rate "
                    f"{min(rates):g}: an update below half an ulp (2^-9·|w|) rounds away, so no "
                    f"weight larger than {min(rates) * 2**9:.2g} in magnitude ever changes; "
                    f"load float32 weights and set precision: bf16 instead"
                )
    return warnings


def _check_shown_labels(suite: Suite, where: Callable[..., str]) -> None:
    """Refuse two configurations that reports would show, and so count, as one: a label that
    reads like another algorithm's sweep point (``x[beta=0.1]``), or two sweep values that
    print alike (``0.1`` and ``"0.1"``)."""
    seen: dict[str, tuple[int, dict[str, Any]]] = {}
    for i, alg in enumerate(suite.algorithms):
        for point in _sweep_points(alg.sweep):
            name = shown_label(alg.label or alg.name, point)
            if name in seen:
                j = seen[name][0]
                other = f"algorithms.{j}" if j != i else "another of its sweep points"
                raise ConfigError(
                    f"{where('algorithms', i)}: algorithms.{i}: a configuration shown as "
                    f"{name!r} is also {other}'s; reports would merge the two; give each a "
                    f"distinct 'label' (or distinct sweep values)"
                )
            seen[name] = (i, point)


def suite_warnings(suite: Suite, host: Any) -> list[str]:
    """What may be a slip though valid: a learning rate outside the range its plugin declares
    for the task's policy kind (:meth:`~harness.algorithm.Algorithm.tuning_space`), with which
    a policy may not move at all (or diverge)."""
    from harness.algorithm import policy_kind

    out = []
    tuned = set(tuned_labels(suite))
    for alg in suite.algorithms:
        label = alg.label or alg.name
        if label in tuned:
            continue
        cls = host.algorithm(alg.name)
        for task in suite.tasks:
            kind = policy_kind(host.task(task.name).kind)
            rates = cls.tuning_space(kind).get("learning_rate") or {}
            if "low" not in rates:
                continue
            if "learning_rate" in alg.sweep:  # the swept values are the ones that run
                values = list(alg.sweep["learning_rate"])
            else:
                values = [getattr(build_config(cls.Config, {
                    **alg.config, **alg.per_task.get(task.name, {})}), "learning_rate", None)]
            for lr in values:
                if isinstance(lr, int | float) and not rates["low"] <= lr <= rates["high"]:
                    out.append(
                        f"algorithms '{label}' on {task.name}: learning_rate {lr:g} is outside "
                        f"{rates['low']:g}–{rates['high']:g}, the range plugin '{alg.name}' "
                        f"declares for {kind} policies; the policy may not move (or may diverge)"
                    )
    return out


def tuning_space(suite: Suite, host: Any, label: str, task: str) -> dict[str, dict[str, Any]]:
    """The checked search space of a tuned label on a task: the suite's, else the plugin's."""
    assert suite.tuning is not None
    alg = next(a for a in suite.algorithms if (a.label or a.name) == label)
    space = suite.tuning.space.get(label)
    if space is None:
        from harness.algorithm import policy_kind

        cls = host.algorithm(alg.name)
        space = cls.tuning_space(policy_kind(host.task(task).kind))
    return check_space(space, f"tuning.space.{label}")


def _check_policy(suite: Suite, host: Any, where: Callable[..., str]) -> None:
    """Each algorithm's policy section (its own, else the suite's) against the tasks and the
    algorithm: its switches need neural policies, and LoRA an algorithm that does not declare
    it cannot train adapters."""
    from harness.algorithm import policy_kind

    for i, alg in enumerate(suite.algorithms):
        policy, at = (alg.policy, ("algorithms", i, "policy")) if alg.policy is not None else \
            (suite.policy, ("policy",))
        if policy.is_default:
            continue
        key = next(k for k in ("lora", "activation_checkpointing", "offload_frozen")
                   if getattr(policy, k) != PolicySpec.model_fields[k].default)
        name = ".".join(map(str, (*at, key)))
        for task in suite.tasks:
            if policy_kind(host.task(task.name).kind) != "neural":
                raise ConfigError(
                    f"{where(*at, key)}: {name}: applies to neural policies (a language "
                    f"model); task '{task.name}' has a tabular policy"
                )
        if policy.lora is not None:
            _check_lora_targets(suite, host, where, at, policy.lora.target_modules,
                                policy.lora.r)
        if policy.lora is not None and not getattr(host.algorithm(alg.name), "supports_lora",
                                                   True):
            raise ConfigError(
                f"{where(*at, 'lora')}: {'.'.join(map(str, at))}.lora: algorithm '{alg.name}' "
                f"(algorithms.{i}) declares that it cannot train LoRA adapters "
                f"(supports_lora = False)"
            )


def _check_lora_targets(suite: Suite, host: Any, where: Callable[..., str], at: tuple[Any, ...],
                        targets: list[str] | None, rank: int) -> None:
    """LoRA targets and rank against each task's model, where it can be read without a
    download: a ``tiny-lm`` model, an ``hf`` model in a local folder (built from its config on
    the meta device). A hub model's are checked when its run starts."""
    from harness.engine.memory import model_skeleton
    from harness.models.lora import adapted_width, linear_module_names

    for task in suite.tasks:
        cls = host.task(task.name)
        params = build_config(cls.Params, task.params)
        model = model_skeleton(cls, params, local_only=True)
        if model is None:
            continue
        names = linear_module_names(model)
        width = adapted_width(model, [t for t in targets if t in names] if targets else None)
        if width is not None and rank > width:
            key = ".".join(map(str, (*at, "lora", "r")))
            raise ConfigError(
                f"{where(*at, 'lora', 'r')}: {key}: {rank} is above {width}, the narrowest "
                f"adapted layer of {type(model).__name__} (task '{task.name}'); an adapter's "
                f"rank is at most its layer's width"
            )
        missing = [t for t in (targets or []) if t not in names]
        if missing:
            key = ".".join(map(str, (*at, "lora", "target_modules")))
            raise ConfigError(
                f"{where(*at, 'lora', 'target_modules')}: {key}: "
                f"{', '.join(repr(t) for t in missing)} matches no module of "
                f"{type(model).__name__} (task '{task.name}'); its linear layers: "
                f"{', '.join(names)}"
            )


def _check_tuning(suite: Suite, host: Any, where: Callable[..., str]) -> None:
    """The tuning section against the suite: labels, spaces, objective, instances."""
    tuning = suite.tuning
    assert tuning is not None
    labels = {a.label or a.name: a for a in suite.algorithms}
    for key in ("algorithms", "space"):
        for j, label in enumerate(getattr(tuning, key) or []):
            if label not in labels:
                at = ("tuning", key, j) if key == "algorithms" else ("tuning", key, label)
                hint = difflib.get_close_matches(label, list(labels), n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ConfigError(f"{where(*at)}: tuning.{key}: no algorithm labelled "
                                  f"'{label}'{suggestion}; labels: {', '.join(labels)}")
    tasks = [t.name for t in suite.tasks]
    for name in tuning.trials_per_task:
        if name not in tasks:
            raise ConfigError(f"{where('tuning', 'trials_per_task', name)}: tuning."
                              f"trials_per_task.{name}: no such task in this suite (tasks: "
                              f"{', '.join(tasks)})")
    overlap = sorted(set(tuning.instances) & set(suite.all_instances))
    if overlap:
        raise ConfigError(
            f"{where('tuning', 'instances')}: tuning.instances: {overlap[0]} is also one of the "
            f"suite's seeds; the comparison must run on instances the tuning never saw"
        )
    needed = {"final_gold": ["gold_reward"], "gold_at_kl": ["gold_reward", "kl_ref"],
              "j_beta": ["gold_reward", "kl_ref"]}[tuning.objective]
    missing = [e for e in needed if e not in suite.evaluation.evaluators]
    if missing:
        raise ConfigError(
            f"{where('tuning', 'objective')}: tuning.objective: {tuning.objective} needs the "
            f"evaluator{'s' if len(missing) > 1 else ''} {', '.join(missing)} in "
            f"evaluation.evaluators"
        )
    for label in tuned_labels(suite):
        alg = labels[label]
        if alg.sweep:
            raise ConfigError(
                f"{where('algorithms', suite.algorithms.index(alg), 'sweep')}: "
                f"algorithms.{suite.algorithms.index(alg)}.sweep: '{label}' is tuned; its "
                f"search space replaces a sweep (give one or the other)"
            )
        cls = host.algorithm(alg.name)
        for task in suite.tasks:
            at = ("tuning", "space", label) if label in tuning.space else ("tuning",)
            try:
                space = tuning_space(suite, host, label, task.name)
            except ConfigError as exc:
                detail = str(exc)
                if label not in tuning.space:
                    from harness.algorithm import policy_kind

                    kind = policy_kind(host.task(task.name).kind)
                    detail += (f" (plugin '{alg.name}' declares no search space for {kind} "
                               f"policies: give tuning.space.{label})")
                raise ConfigError(f"{where(*at)}: {detail}") from None
            names = {f.name for f in dataclasses.fields(cls.Config)}
            for name in space:
                if name not in names:
                    raise ConfigError(f"{where(*at)}: tuning.space.{label}.{name}: not a field "
                                      f"of {alg.name}'s Config")
                dist = space[name]
                values = dist["choices"] if "choices" in dist else [dist["low"], dist["high"]]
                base = {**alg.config, **alg.per_task.get(task.name, {})}
                for value in values:  # each value the search may give must make a Config
                    build_config(cls.Config, {**base, name: value},
                                 where=f"{where(*at)}: tuning.space.{label}.{name} "
                                 f"({alg.name}, value {value!r})")
