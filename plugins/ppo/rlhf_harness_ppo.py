"""Proximal Policy Optimization (PPO) for RLHF, as in Stiennon et al. 2020 and Ouyang et al. 2022.

PPO (Schulman et al. 2017, arXiv:1707.06347) fine-tunes the policy on its own samples to maximise
the KL-regularised reward of the learned reward model r̂ (Ziegler et al. 2019, arXiv:1909.08593;
Stiennon et al. 2020, arXiv:2009.01325, Eq. 1; Ouyang et al. 2022, arXiv:2203.02155, Eq. 2):

    J_β(π) = E_x E_{y~π(·|x)} [ r̂(x, y) − β · log(π(y|x) / π_ref(y|x)) ].

A response y = y_1 … y_T is an episode of T actions (tokens). Following OpenAI's
lm-human-preferences and the "N+ implementation details" of Huang et al. 2024 (arXiv:2403.17031,
reference code ``vwxyzjn/summarize_from_feedback_details``), the reward of token t is

    r_t = −β · k_t + [t = T] · r̂(x, y),    k_t = log π_old(y_t | x, y_<t) − log π_ref(y_t | x, y_<t)

— a KL penalty at *every* token and the score only at the *last* one (EOS, when generated). With
the default estimator k1 (above), E_π Σ_t r_t = J_β's integrand, so the policy gradient of these
rewards is ∇J_β and PPO's fixed point is π*_β ∝ π_ref · exp(r̂/β). k2 = ½(log r)² and
k3 = (r − 1) − log r (r = π_ref/π) are selectable; they are not ∇J_β-consistent as rewards.

One :meth:`PPO.step`:

1. **Rollout** (phase ``generate``): ``rollout_batch_size`` train prompts drawn uniformly with
   replacement, one response each sampled from π at ``temperature`` (``ctx.generator`` only).
2. **Score** (no gradient): r̂(x, y) with the frozen reward model and per-token log π_ref (one
   teacher-forced forward each, phase ``score``); per-token log π_old and V_t, the critic's
   value of the state *before* token t (:class:`harness.policy.ValueModel`) — from the first
   update's own forward when there is one minibatch (see *Old log-probs* below), else from one
   forward of each model of their own (phase ``score``).
3. **Rewards**: a response cut at ``max_new_tokens`` without EOS gets the score
   ``missing_eos_penalty`` instead of r̂ when that is set (N+ details: "penalty_reward_value −1"
   for responses with no EOS); then r_t as above; then, if ``whiten_rewards``, r ← (r − μ)/σ + μ
   over the batch's valid tokens (lm-human-preferences' ``whiten(rewards, shift_mean=False)``).
4. **Advantages**: GAE (Schulman et al. 2016, arXiv:1506.02438), δ_t = r_t + γ V_{t+1} − V_t,
   A_t = δ_t + γλ A_{t+1}, V and A after the last token 0; returns R_t = A_t + V_t; then A is
   whitened over the batch's valid tokens (``whiten_advantages``).
5. **Update** (phase ``train``): ``num_ppo_epochs`` passes, each over ``num_mini_batches`` freshly
   shuffled minibatches, one Adam step each on (:func:`ppo_loss`)

       L = mean_t max(−ρ_t A_t, −clip(ρ_t, 1 − ε, 1 + ε) A_t)
           + c_v · mean_t ½ max((V_t − R_t)², (clip(V_t, V_t^old − ε_v, V_t^old + ε_v) − R_t)²),

   ρ_t = π(y_t | ·) / π_old(y_t | ·), means over the minibatch's valid tokens (TRL's
   ``masked_mean``), one optimiser over the policy and the critic, gradients clipped by their
   global norm. The clipped value loss is PPO2's (OpenAI baselines), kept by lm-human-preferences.
6. **Adaptive KL** (``adaptive_kl``; Ziegler et al. 2019, §2.2 and lm-human-preferences'
   ``AdaptiveKLController``): e = clip(KL / KL_target − 1, −0.2, 0.2), β ← β · (1 + e · n / H),
   with KL the step's ``kl_ref``, n = ``rollout_batch_size`` episodes and H = ``kl_horizon``.

**Temperature.** With ``temperature`` T, the policy PPO samples from and optimises is the
tempered one, softmax(logits/T): T divides the logits in every forward (old, new and reference
log-probs), as lm-human-preferences, the N+ code and TRL do, so the ratio and the KL are between
tempered distributions. At T = 1 (the default) that is π_θ itself, the policy the harness
evaluates; at T ≠ 1 training shapes π_θ^(1/T), not π_θ.

**Old log-probs.** log π_old is computed by the policy's teacher-forced forward on the rollout
rather than taken from the sampler (the N+ code and TRL take the generation's logits): a
KV-cached sampling loop and a teacher-forced forward need not round alike, and with one code path
for old and new log-probs the first update's ratio is exactly 1. With one minibatch
(``num_mini_batches = 1``, the default) the first update's forward *is* that forward — its
rows are the whole rollout and the weights are still θ_old — so its detached log-probs, the
entropies of its logits and its critic values serve as log π_old, the entropy and V_old, and
the advantages are computed from them before its loss (no extra forward of either model; the
same numbers as a separate no-gradient forward, bit for bit on the CPU). With several
minibatches the first one covers only part of the rollout, so one no-gradient forward of the
policy and one of the critic compute them first.

**Critic initialisation** (``value_init``). ``"policy"``: ``task.make_value_model(policy)`` as
is — for LM tasks π_ref's backbone with a fresh scalar head, for tabular tasks a table of zeros.
``"reward"``: then every weight of the critic is overwritten by the reward model's weight of the
same name and shape, as Stiennon et al. ("we initialize the value function to the parameters
of the reward model"), Ouyang et al. and the N+ code do. That needs a
reward model with the critic's architecture: on LM tasks (:class:`harness.models.lm.LMRewardModel`
and :class:`harness.models.lm.LMValueModel` are both a backbone with a scalar head) it copies
everything,
so V_t starts as r̂'s head read before token t. On tabular tasks it is impossible — r̂ is a table
over whole responses, V one over prefixes — and so is it with the oracle
:class:`harness.reward.GoldRewardModel`, which has no weights: :class:`ConfigError` is raised.

**Departures from the references.** The learning rate is constant (lm-human-preferences and the
N+ code anneal it linearly to 0 over the run; a harness algorithm does not know the run's
length). Prompts are drawn with replacement rather than by passes over a shuffled dataset.

**Metrics** (floats, per step; the training ones averaged over the step's
``num_ppo_epochs × num_mini_batches`` updates): the shared ``loss``, ``grad_norm`` (before
clipping), ``kl_ref`` (mean over the rollout's sequences of Σ_t (log π_old − log π_ref): the k1
estimate of KL(π‖π_ref) per sequence), ``entropy`` (mean per-token entropy of π_old on the
rollout), ``response_length``, ``reward`` (mean score after the missing-EOS penalty) and
``score`` (mean r̂ before it); PPO's own ``policy_loss``, ``value_loss``, ``clip_frac`` (fraction
of tokens where the clipped surrogate is the active term), ``value_clip_frac`` (the same for the
value loss), ``approx_kl`` (mean over tokens of ½ (log ρ)², lm-human-preferences' ``approxkl``:
the k2 estimate of KL(π_old‖π_θ) on the rollout), ``ratio_mean`` (mean ρ), ``advantage_mean`` and
``advantage_std`` (of the GAE advantages *before* whitening, over valid tokens),
``return_mean``, and ``kl_coef`` (the β used for this step's rewards).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import torch

from harness import hookimpl, rl
from harness.algorithm import Algorithm, RunContext
from harness.errors import ConfigError
from harness.hookspecs import Register
from harness.pieces import log_uniform, standard_space, trainable_parameters
from harness.policy import Policy, PromptBatch, ResponseBatch, ValueModel
from harness.reward import RewardModel

__all__ = [
    "PPO",
    "AdaptiveKLController",
    "Config",
    "PPOLoss",
    "Rollout",
    "ppo_loss",
    "token_rewards",
]


@dataclass
class Config:
    """PPO hyperparameters. "TRL" is TRL's ``PPOConfig`` (``trl.experimental.ppo``, with
    ``OnPolicyConfig``/``TrainingArguments`` fields); "N+" the reference code of Huang et al.
    2024 (``summarize_from_feedback_details/ppo_left_padding.py`` and its launch scripts);
    "LMHP" OpenAI's lm-human-preferences (``train_policy.py``)."""

    learning_rate: float = 3e-6
    """Adam step size for the policy and the critic (N+: ``lr = 3e-6``; TRL's PPO example uses
    3e-6 too; LMHP: 5e-6). Far too small for tabular tasks, where 0.01–0.1 suits."""
    adam_eps: float = 1e-5
    """Adam's ε (N+: ``eps = 1e-5``; PyTorch's default is 1e-8)."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm of policy and critic together to this (TRL: inherited from
    ``transformers.TrainingArguments.max_grad_norm = 1.0``); None: no clipping (the N+
    script clips none)."""
    rollout_batch_size: int = 512
    """Prompts (= responses, episodes) per step (N+ runs: 64 per GPU × 8 GPUs = 512;
    LMHP's default ``batch_size`` is 64)."""
    num_mini_batches: int = 1
    """Minibatches per epoch; must divide ``rollout_batch_size`` (TRL, N+, LMHP: 1)."""
    num_ppo_epochs: int = 4
    """Passes over each rollout (TRL ``num_ppo_epochs``, N+/LMHP ``noptepochs``: 4)."""
    temperature: float = 1.0
    """Sampling temperature T; logits are divided by T in every forward (module docstring).
    LMHP's policy default is 1.0, which we follow so that the trained policy is the evaluated
    one; TRL and N+ use 0.7."""
    kl_coef: float = 0.05
    """β, the KL penalty's coefficient (TRL ``kl_coef`` and N+: 0.05; LMHP: 0.2). The initial
    value when ``adaptive_kl``."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k1"
    """Per-token KL estimate in the reward (TRL ``kl_estimator``: "k1"; LMHP and N+ use k1).
    Schulman, "Approximating KL Divergence"; see :func:`harness.rl.kl_estimate`."""
    adaptive_kl: bool = False
    """Adapt β towards ``target_kl`` (Ziegler et al. 2019's controller; N+
    ``use_adaptive_kl = False``; TRL's PPO has a fixed β)."""
    target_kl: float = 6.0
    """KL_target of the adaptive controller, in nats per sequence (N+ ``AdaptiveKLParams``
    and TRL's former ``PPOConfig.target``: 6)."""
    kl_horizon: float = 10000.0
    """H of the adaptive controller, in episodes (LMHP and N+: ``horizon = 10000``)."""
    cliprange: float = 0.2
    """ε of the clipped surrogate (TRL, N+, LMHP: 0.2)."""
    cliprange_value: float = 0.2
    """ε_v of the clipped value loss (TRL, N+, LMHP: 0.2)."""
    vf_coef: float = 0.1
    """c_v, the value loss's weight (TRL, N+, LMHP: 0.1)."""
    gamma: float = 1.0
    """γ, the discount over tokens (TRL, N+, LMHP: 1)."""
    lam: float = 0.95
    """λ of GAE (TRL, N+, LMHP: 0.95)."""
    whiten_rewards: bool = False
    """Whiten per-token rewards, keeping their mean (TRL: False; LMHP and the N+ code: True)."""
    whiten_advantages: bool = True
    """Whiten advantages over the batch's valid tokens (LMHP, N+ and TRL always do)."""
    missing_eos_penalty: float | None = None
    """The score that *replaces* r̂ for responses cut at the maximum length without EOS (N+:
    ``non_eos_penalty`` with ``penalty_reward_value = -1``; LMHP the same for its truncation
    token). None: no penalty (TRL's default; TRL's ``missing_eos_penalty`` *subtracts* a value
    instead). Tasks without EOS (the bandit) never trigger it."""
    value_init: Literal["policy", "reward"] = "policy"
    """Initial critic: the task's (``"policy"``) or the reward model's weights (``"reward"``,
    Stiennon et al., Ouyang et al., N+; LM tasks only). See the module docstring."""

    def __post_init__(self) -> None:
        """Checked here, where ``rlhf-harness validate`` sees it (see ``harness.config``)."""
        _check_config(self)


class AdaptiveKLController:
    """β adapted towards a target KL (Ziegler et al. 2019, §2.2; lm-human-preferences).

    ``update(kl, n)``: e = clip(kl / target − 1, −0.2, 0.2), β ← β · (1 + e · n / horizon).
    KL above target raises β, below lowers it, by at most a factor 1 ± 0.2 · n / horizon.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current: float, n_steps: int) -> None:
        error = min(max(current / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


class PPOLoss(NamedTuple):
    """The terms of :func:`ppo_loss`, all scalars; only ``loss`` carries gradient history."""

    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    clip_frac: torch.Tensor
    value_clip_frac: torch.Tensor
    approx_kl: torch.Tensor
    ratio_mean: torch.Tensor


def ppo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    *,
    cliprange: float,
    cliprange_value: float,
    vf_coef: float,
) -> PPOLoss:
    """PPO's loss on ``[B, T]`` per-token tensors (see the module docstring, step 5).

    ``policy_loss`` = token mean of max(−ρA, −clip(ρ, 1 ± ε)A) with ρ = exp(logp − old_logp);
    ``value_loss`` = token mean of ½ max((V − R)², (V_old + clip(V − V_old, ±ε_v) − R)²);
    ``loss`` = policy_loss + vf_coef · value_loss. Token means are over ``mask``'s valid tokens.
    Also: ``clip_frac``, ``value_clip_frac`` (fractions of valid tokens where the clipped term is
    active), ``approx_kl`` (token mean of ½ (logp − old_logp)²) and ``ratio_mean``.
    """
    pg_losses, ratio, clipped = rl.clipped_surrogate(logp, old_logp, advantages, cliprange)
    vf_losses, v_clipped = rl.clipped_value_loss(values, old_values, returns, cliprange_value)
    policy_loss = rl.masked_mean(pg_losses, mask)
    value_loss = rl.masked_mean(vf_losses, mask)
    loss = policy_loss + vf_coef * value_loss
    with torch.no_grad():
        log_ratio = logp - old_logp
        return PPOLoss(
            loss=loss,
            policy_loss=policy_loss.detach(),
            value_loss=value_loss.detach(),
            clip_frac=rl.masked_mean(clipped.to(logp.dtype), mask),
            value_clip_frac=rl.masked_mean(v_clipped.to(values.dtype), mask),
            approx_kl=rl.masked_mean(0.5 * log_ratio**2, mask),
            ratio_mean=rl.masked_mean(ratio, mask),
        )


def token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Per-token rewards ``[B, T]``: −kl_coef · kl at every valid token, plus ``scores[b]`` at
    row b's last valid token; 0 on padding (and a row with no valid token gets nothing)."""
    m = mask.bool()
    zero = torch.zeros((), dtype=kl.dtype, device=kl.device)
    rewards = torch.where(m, -kl_coef * kl, zero)
    lengths = m.sum(-1)
    last = (lengths - 1).clamp(min=0).unsqueeze(-1)
    bonus = torch.where(lengths > 0, scores.to(kl.dtype), zero).unsqueeze(-1)
    return rewards.scatter_add(1, last, bonus)


@dataclass
class Rollout:
    """One step's rollout and everything scored on it (the algorithm keeps the last one)."""

    prompts: PromptBatch
    responses: ResponseBatch
    scores: torch.Tensor
    """[B] r̂(x, y) as the reward model gave it."""
    penalised_scores: torch.Tensor
    """[B] the scores after the missing-EOS penalty (the ones in ``rewards``)."""
    ref_logp: torch.Tensor
    """[B, T] log π_ref per token (tempered), 0 on padding."""
    kl_coef: float
    """β used for ``rewards``."""
    # Set by PPO._advantages, before the first update's loss (None until then).
    old_logp: torch.Tensor | None = None
    """[B, T] log π_old per token (tempered), 0 on padding."""
    entropy: torch.Tensor | None = None
    """[B, T] the entropy of π_old (tempered) at each response position, 0 on padding."""
    old_values: torch.Tensor | None = None
    """[B, T] V_t before the update, 0 on padding."""
    rewards: torch.Tensor | None = None
    """[B, T] per-token rewards (after whitening, if on)."""
    advantages: torch.Tensor | None = None
    """[B, T] GAE advantages (after whitening, if on)."""
    returns: torch.Tensor | None = None
    """[B, T] R_t = A_t + V_t (A before whitening)."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_config(cfg: Config) -> None:
    _check(cfg.learning_rate > 0, f"learning_rate must be > 0, got {cfg.learning_rate}")
    _check(cfg.adam_eps > 0, f"adam_eps must be > 0, got {cfg.adam_eps}")
    _check(
        cfg.max_grad_norm is None or cfg.max_grad_norm > 0,
        f"max_grad_norm must be > 0 or None, got {cfg.max_grad_norm}",
    )
    _check(cfg.rollout_batch_size >= 1, f"rollout_batch_size must be >= 1, got "
           f"{cfg.rollout_batch_size}")
    _check(
        cfg.num_mini_batches >= 1 and cfg.rollout_batch_size % cfg.num_mini_batches == 0,
        f"num_mini_batches ({cfg.num_mini_batches}) must be >= 1 and divide rollout_batch_size "
        f"({cfg.rollout_batch_size})",
    )
    _check(cfg.num_ppo_epochs >= 1, f"num_ppo_epochs must be >= 1, got {cfg.num_ppo_epochs}")
    _check(
        cfg.temperature > 0 and math.isfinite(cfg.temperature),
        f"temperature must be finite and > 0 (PPO needs the log-probs of a stochastic policy), "
        f"got {cfg.temperature}",
    )
    _check(cfg.kl_coef >= 0, f"kl_coef must be >= 0, got {cfg.kl_coef}")
    _check(cfg.target_kl > 0, f"target_kl must be > 0, got {cfg.target_kl}")
    _check(cfg.kl_horizon > 0, f"kl_horizon must be > 0, got {cfg.kl_horizon}")
    _check(0 <= cfg.cliprange < 1, f"cliprange must be in [0, 1), got {cfg.cliprange}")
    _check(cfg.cliprange_value >= 0, f"cliprange_value must be >= 0, got {cfg.cliprange_value}")
    _check(cfg.vf_coef >= 0, f"vf_coef must be >= 0, got {cfg.vf_coef}")
    _check(0 <= cfg.gamma <= 1, f"gamma must be in [0, 1], got {cfg.gamma}")
    _check(0 <= cfg.lam <= 1, f"lam must be in [0, 1], got {cfg.lam}")
    _check(
        cfg.rollout_batch_size >= 2 or not (cfg.whiten_rewards or cfg.whiten_advantages),
        "whitening rewards or advantages needs rollout_batch_size >= 2",
    )


def _token_logprobs(
    model: Policy, prompts: PromptBatch, responses: ResponseBatch, temperature: float,
    *, entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs of softmax(logits / T) (and its entropies, without gradient)."""
    logits = model.logits(prompts, responses).float()
    if temperature != 1.0:  # x / 1 is x: skip a copy of the [B, T, V] logits
        logits = logits / temperature
    pad = ~responses.mask.bool()
    logp = rl.logprobs_from_logits(logits, responses.tokens).masked_fill(pad, 0.0)
    ent = None
    if entropy:
        with torch.no_grad():
            ent = rl.entropy_from_logits(logits).masked_fill(pad, 0.0)
    return logp, ent


def _unshuffle(rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``x`` (rows ``rows`` of a batch, one per row) back in the batch's order."""
    out = torch.empty_like(x)
    out[rows] = x
    return out


def _init_value_from_reward(value_model: ValueModel, reward_model: RewardModel | None) -> None:
    """Copy the reward model's weights into the critic; ConfigError unless all of them match."""
    kind = type(reward_model).__name__
    dst = value_model.state_dict()
    src = {} if reward_model is None else reward_model.state_dict()
    missing = [k for k, v in dst.items() if k not in src or src[k].shape != v.shape]
    if not dst or missing:
        raise ConfigError(
            f"algorithm 'ppo': value_init='reward' initialises the critic "
            f"({type(value_model).__name__}) with the reward model's weights, but the reward "
            f"model ({kind}) has no weight of the same name and shape for "
            f"{len(missing)} of the critic's {len(dst)} ({', '.join(missing[:3]) or 'none'}"
            f"{', ...' if len(missing) > 3 else ''}). That works on LM tasks, whose reward model "
            f"and critic share an architecture; not on tabular tasks (r̂ is a table over "
            f"responses, V over prefixes) nor with the oracle GoldRewardModel (no weights). "
            f"Use value_init='policy'."
        )
    with torch.no_grad():
        value_model.load_state_dict({k: src[k].detach().clone() for k in dst})


class PPO(Algorithm):
    """PPO with a learned critic, per-token KL penalty and GAE (see the module docstring)."""

    name = "ppo"
    Config = Config
    needs = frozenset({"reward"})
    trains_critic = True
    suggested: ClassVar[dict[str, dict[str, Any]]] = {
        "tabular": {"learning_rate": 0.05, "rollout_batch_size": 64, "num_ppo_epochs": 2},
        "neural": {"learning_rate": 1e-3, "rollout_batch_size": 64, "num_ppo_epochs": 2},
    }
    """From suites/quickstart.yaml (bandit; tiny-lm) and the reproductions on the bandit."""
    metrics: ClassVar[dict[str, str]] = {
        "reward": "mean r̂ after the missing-EOS penalty",
        "score": "mean r̂ before the missing-EOS penalty",
        "policy_loss": "the clipped surrogate policy loss",
        "value_loss": "the clipped value loss, mean over tokens of ½ max((V − R)², (V_clip − R)²)",
        "clip_frac": "fraction of tokens where the clipped surrogate is the active term",
        "value_clip_frac": "fraction of tokens where the clipped value loss is the active term",
        "approx_kl": "mean over tokens of ½ (log ρ)², the k2 estimate of KL(π_old‖π_θ)",
        "ratio_mean": "mean ρ = π_θ/π_old over tokens",
        "advantage_mean": "mean GAE advantage before whitening, over valid tokens",
        "advantage_std": "std of the GAE advantages before whitening, over valid tokens",
        "return_mean": "mean GAE return over valid tokens",
        "kl_coef": "the β used for this step's rewards",
    }

    @classmethod
    def tuning_space(cls, policy_kind: str) -> dict[str, dict[str, Any]]:
        """The default search space, log-uniform: learning rates over two decades around those
        that train a table of logits, three for language models (a 0.3M-parameter LM trains at
        1e-3, billion-parameter ones at 1e-5); the KL penalty's coefficient over two decades."""
        return standard_space(policy_kind, kl_coef=log_uniform(0.01, 1.0))

    def __init__(self, config: Config, context: RunContext) -> None:
        super().__init__(config, context)
        if context.reward_model is None:
            raise ConfigError("algorithm 'ppo' needs a reward model")
        self.policy = context.policy
        self.reward_model = context.reward_model
        self.prompts = context.task.train_prompts.to(context.device)
        self.value_model = context.task.make_value_model(self.policy).to(context.device)
        if config.value_init == "reward":
            _init_value_from_reward(self.value_model, self.reward_model)
        self.value_model.train()
        policy_params = trainable_parameters(self.policy)
        value_params = trainable_parameters(self.value_model)
        self.params = policy_params + value_params
        self.optimizer = rl.adam(
            [{"params": policy_params}, {"params": value_params}],
            lr=config.learning_rate,
            eps=config.adam_eps,
        )
        self.kl_ctl = AdaptiveKLController(config.kl_coef, config.target_kl, config.kl_horizon)
        self.rollout: Rollout | None = None
        """The last step's rollout (for inspection and tests)."""

    def models_resident(self) -> int:
        return 4  # policy, reference, reward model, critic

    # --- one step --------------------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        cfg = self.config
        rollout = self._rollout()
        stats = self._update(rollout)
        self.rollout = rollout
        assert rollout.old_logp is not None and rollout.entropy is not None
        assert rollout.old_values is not None and rollout.returns is not None
        mask = rollout.responses.mask.bool()
        kl_ref = float(rl.masked_sum(rollout.old_logp - rollout.ref_logp, mask, dim=1).mean())
        if cfg.adaptive_kl:
            self.kl_ctl.update(kl_ref, cfg.rollout_batch_size)
        advantages = rollout.returns - rollout.old_values  # GAE's A_t, before whitening
        adv_std = rl.masked_var(advantages, mask).sqrt() if int(mask.sum()) > 1 else 0.0
        return {
            **stats,
            "kl_ref": kl_ref,
            "entropy": float(rl.masked_mean(rollout.entropy, mask)),
            "response_length": float(mask.sum(-1).float().mean()),
            "reward": float(rollout.penalised_scores.mean()),
            "score": float(rollout.scores.mean()),
            "advantage_mean": float(rl.masked_mean(advantages, mask)),
            "advantage_std": float(adv_std),
            "return_mean": float(rl.masked_mean(rollout.returns, mask)),
            "kl_coef": rollout.kl_coef,
        }

    def _rollout(self) -> Rollout:
        """Steps 1–2: sample, then score r̂ and log π_ref (without gradient). With several
        minibatches, also π_old and V_old, then steps 3–4; with one, the first update does."""
        cfg, ctx, meter = self.config, self.ctx, self.ctx.meter
        g = ctx.generator
        with meter.phase("generate"), torch.no_grad():
            rows = torch.randint(
                len(self.prompts), (cfg.rollout_batch_size,), generator=g, device=g.device
            ).to(self.prompts.index.device)
            prompts = self.prompts.select(rows)
            responses = self.policy.sample(
                prompts,
                max_new_tokens=ctx.task.max_new_tokens,
                temperature=cfg.temperature,
                generator=g,
            )
        tokens = int(responses.mask.sum())
        meter.generated(self.policy, len(prompts), tokens)

        with meter.phase("score"), torch.no_grad():
            scores = self.reward_model(prompts, responses).float()
            ref_logp, _ = _token_logprobs(
                ctx.reference, prompts, responses, cfg.temperature, entropy=False
            )
            for model in (self.reward_model, ctx.reference):
                meter.forward(model, tokens)
            penalised = scores
            if cfg.missing_eos_penalty is not None:
                finished = self._finished(responses)
                penalised = torch.where(
                    finished, scores, torch.full_like(scores, cfg.missing_eos_penalty)
                )
        rollout = Rollout(
            prompts=prompts,
            responses=responses,
            scores=scores,
            penalised_scores=penalised,
            ref_logp=ref_logp,
            kl_coef=self.kl_ctl.value,
        )
        if cfg.num_mini_batches > 1:  # the first update sees part of the rollout: score it all
            with meter.phase("score"), torch.no_grad():
                old_logp, entropy = _token_logprobs(
                    self.policy, prompts, responses, cfg.temperature, entropy=True
                )
                old_values = self.value_model(prompts, responses).float()
                for model in (self.policy, self.value_model):
                    meter.forward(model, tokens)
                assert entropy is not None
                self._advantages(rollout, old_logp, entropy, old_values)
        return rollout

    def _advantages(
        self, ro: Rollout, old_logp: torch.Tensor, entropy: torch.Tensor, old_values: torch.Tensor
    ) -> None:
        """Steps 3–4 from π_old's log-probs and V_old: per-token rewards, then GAE advantages
        and returns; stores them, with their inputs, in ``ro``."""
        cfg = self.config
        mask = ro.responses.mask.bool()
        kl = rl.kl_estimate(old_logp, ro.ref_logp, cfg.kl_estimator)
        rewards = token_rewards(ro.penalised_scores, kl, mask, ro.kl_coef)
        if cfg.whiten_rewards:
            rewards = rl.masked_whiten(rewards, mask, shift_mean=False)
        advantages, returns = rl.gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = rl.masked_whiten(advantages, mask)
        ro.old_logp, ro.entropy, ro.old_values = old_logp, entropy, old_values
        ro.rewards, ro.advantages, ro.returns = rewards, advantages, returns

    def _update(self, ro: Rollout) -> dict[str, float]:
        """Step 5: epochs of shuffled minibatch updates; returns the averaged training metrics.

        Without advantages yet (one minibatch), the first update's forward gives log π_old,
        the entropy and V_old: its rows are the whole rollout (shuffled) and θ is still θ_old.
        """
        cfg, meter = self.config, self.ctx.meter
        g = self.ctx.generator
        size = cfg.rollout_batch_size // cfg.num_mini_batches
        totals: dict[str, float] = {}
        updates = 0
        with meter.phase("train"):
            self.policy.train()
            self.value_model.train()
            for _ in range(cfg.num_ppo_epochs):
                order = torch.randperm(cfg.rollout_batch_size, generator=g, device=g.device)
                order = order.to(ro.ref_logp.device)
                for rows in order.split(size):
                    prompts, responses = ro.prompts.select(rows), ro.responses.select(rows)
                    mask = responses.mask.bool()
                    first = ro.advantages is None
                    logp, entropy = _token_logprobs(
                        self.policy, prompts, responses, cfg.temperature, entropy=first
                    )
                    values = self.value_model(prompts, responses).float()
                    if first:
                        assert entropy is not None
                        with torch.no_grad():
                            old_logp = _unshuffle(rows, logp.detach())
                            old_values = _unshuffle(rows, values.detach())
                            self._advantages(ro, old_logp, _unshuffle(rows, entropy), old_values)
                    assert ro.old_logp is not None and ro.advantages is not None
                    assert ro.old_values is not None and ro.returns is not None
                    out = ppo_loss(
                        logp,
                        ro.old_logp[rows],
                        ro.advantages[rows],
                        values,
                        ro.old_values[rows],
                        ro.returns[rows],
                        mask,
                        cliprange=cfg.cliprange,
                        cliprange_value=cfg.cliprange_value,
                        vf_coef=cfg.vf_coef,
                    )
                    self.optimizer.zero_grad(set_to_none=True)
                    out.loss.backward()
                    grad_norm = rl.clip_grad_norm(self.params, cfg.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)  # free them before the next forward
                    tokens = int(mask.sum())
                    meter.train(self.policy, tokens)
                    meter.train(self.value_model, tokens, count_tokens=False)  # the critic
                    for key, value in out._asdict().items():
                        totals[key] = totals.get(key, 0.0) + float(value.detach())
                    totals["grad_norm"] = totals.get("grad_norm", 0.0) + float(grad_norm)
                    updates += 1
        return {key: value / updates for key, value in totals.items()}

    def _finished(self, responses: ResponseBatch) -> torch.Tensor:
        """[B] bool: the response ended with EOS (a policy without EOS never truncates)."""
        if responses.finished is not None:
            return responses.finished.bool()
        eos = self.policy.eos_id
        if eos is None:
            return torch.ones(len(responses), dtype=torch.bool, device=responses.tokens.device)
        return ((responses.tokens == eos) & responses.mask.bool()).any(-1)


@hookimpl
def register_algorithms(register: Register) -> None:
    register(PPO.name, PPO)
