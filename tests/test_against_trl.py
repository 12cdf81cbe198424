"""The new plugins' losses against TRL's own loss code, on identical inputs.

TRL keeps each loss inside a trainer method; these tests call the method itself on a stand-in for
the trainer (``SimpleNamespace`` with the attributes the method reads), so no model, dataset or
accelerator is built: what is compared is TRL's arithmetic, on log-probs both sides are given.
Where TRL computes in float32 (ORPO casts its inputs) the tolerance is float32's; elsewhere the
inputs are float64 and agreement is to 1e-12.

TRL is in the ``dev`` extra (``make test`` installs it); without it these tests are skipped.
"""

from __future__ import annotations

import os
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
pytest.importorskip(
    "trl", reason="TRL is not installed: pip install -e '.[trl]' (the dev extra installs it)"
)

import rlhf_harness_kto as kto
import rlhf_harness_online_dpo as online_dpo
import rlhf_harness_orpo as orpo
import rlhf_harness_simpo as simpo

B = 16


def random_logps(seed: int, n: int = B, dtype=torch.float64) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 9, (2, n), generator=g).to(dtype)
    logps = -torch.rand(2, n, generator=g, dtype=dtype) * lengths * 2  # sums over tokens
    return logps[0], logps[1], lengths[0], lengths[1]


def accelerator() -> SimpleNamespace:
    return SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x,
                           backward=lambda loss, **kw: loss.backward())


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_simpo_equals_trl_cpo_with_loss_type_simpo(label_smoothing):
    from trl.experimental.cpo import CPOTrainer

    beta, gamma = 2.0, 1.0
    lc, lr, nc, nr = random_logps(0)
    trainer = SimpleNamespace(alpha=0.0, loss_type="simpo", simpo_gamma=gamma, beta=beta,
                              label_smoothing=label_smoothing, accelerator=accelerator())
    # TRL's CPO averages log-probs over tokens for SimPO (average_log_prob) before cpo_loss.
    losses, chosen, rejected = CPOTrainer.cpo_loss(trainer, lc / nc, lr / nr)
    ours, r_chosen, r_rejected = simpo.simpo_loss(lc, lr, nc, nr, beta, gamma, label_smoothing)
    assert ours.item() == pytest.approx(losses.mean().item(), abs=1e-12)
    assert torch.allclose(r_chosen, chosen, atol=1e-12)
    assert torch.allclose(r_rejected, rejected, atol=1e-12)


def test_orpo_odds_ratio_equals_trl():
    from trl.experimental.orpo import ORPOTrainer

    lam = 0.1
    lc, lr, nc, nr = random_logps(1)
    trainer = SimpleNamespace(beta=lam, accelerator=accelerator())
    losses, _, _, mean_ratio, mean_log_odds = ORPOTrainer.odds_ratio_loss(trainer, lc / nc,
                                                                         lr / nr)
    _, _, odds_ratio, log_odds = orpo.orpo_loss(lc, lr, nc, nr, lam)
    # TRL casts to float32: agreement to float32's rounding of O(1) values.
    assert odds_ratio.item() == pytest.approx(-mean_ratio.item(), rel=1e-6, abs=1e-6)
    assert log_odds.mean().item() == pytest.approx(mean_log_odds.item(), rel=1e-6, abs=1e-6)
    assert (lam * odds_ratio).item() == pytest.approx(-losses.mean().item(), rel=1e-6, abs=1e-7)
    # TRL's ORPO loss is its NLL (a token mean over the batch's chosen tokens) minus these
    # losses; with equal lengths the token mean is the paper's per-response mean used here.
    equal = torch.full_like(nc, 3.0)
    loss_eq, _, _, _ = orpo.orpo_loss(lc, lr, equal, equal, lam)
    losses_eq = ORPOTrainer.odds_ratio_loss(trainer, lc / equal, lr / equal)[0]
    trl_nll = -(lc.sum() / equal.sum())
    assert loss_eq.item() == pytest.approx((trl_nll - losses_eq.mean()).item(), rel=1e-6)


def kto_inputs(seed: int, n: int = B):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(n, generator=g, dtype=torch.float64) * 6
    ref = logp + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    kl_logp = -torch.rand(n, generator=g, dtype=torch.float64) * 6
    kl_ref = kl_logp - 0.3 + 0.5 * torch.randn(n, generator=g, dtype=torch.float64)
    desirable = torch.rand(n, generator=g) < 0.5
    return logp, ref, kl_logp, kl_ref, desirable


@pytest.mark.parametrize(("seed", "weights"), [(2, (1.0, 1.0)), (3, (1.0, 1.33))])
def test_kto_equals_trl_compute_loss(seed, weights):
    from trl import KTOTrainer

    beta = 0.1
    logp, ref, kl_logp, kl_ref, desirable = kto_inputs(seed)
    n = len(logp)

    class Model:  # what TRL's forward returns, with a completion of one token per example
        training = True

        def __call__(self, **kwargs):
            return SimpleNamespace(log_probs=logp[:, None], entropy=torch.zeros(n, 1),
                                   mean_logits=torch.zeros(n, 1))

    model = Model()
    trainer = SimpleNamespace(
        model=model, accelerator=accelerator(), aux_loss_enabled=False,
        precompute_ref_logps=True, calculate_KL=True, loss_type="kto", beta=beta,
        desirable_weight=weights[0], undesirable_weight=weights[1],
        _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
        _compute_kl_logps=lambda model, batch: kl_logp,
    )
    inputs = {
        "input_ids": torch.zeros(n, 2, dtype=torch.long),
        "attention_mask": torch.ones(n, 2, dtype=torch.long),
        "completion_mask": torch.ones(n, 2, dtype=torch.long),
        "label": desirable,
        "ref_logps": ref,
        "ref_KL_logps": kl_ref,
    }
    trl_loss = KTOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    z0 = kto.reference_point(kl_logp, kl_ref)
    assert z0.item() == pytest.approx(trainer._metrics["train"]["kl"][-1], abs=1e-12)
    # TRL orders its losses desirable first; the mean does not depend on the order.
    ours, _ = kto.kto_loss(logp, ref, desirable, z0, beta, *weights)
    assert ours.item() == pytest.approx(float(trl_loss), abs=1e-12)


def test_online_dpo_labels_and_loss_equal_trl_training_step():
    from trl.experimental.online_dpo import OnlineDPOTrainer

    beta, n, t = 0.1, 6, 4
    g = torch.Generator().manual_seed(4)
    token_logp = -torch.rand(2 * n, t, generator=g, dtype=torch.float64)
    token_ref = token_logp + 0.3 * torch.randn(2 * n, t, generator=g, dtype=torch.float64)
    completion_mask = torch.ones(2 * n, t, dtype=torch.long)
    completion_mask[3, 2:] = 0
    completion_mask[n + 1, 1:] = 0
    rewards = torch.randn(2 * n, generator=g, dtype=torch.float64)
    rewards[n + 2] = rewards[2]  # a tie: both sides give it to the first sample
    policy = token_logp.clone().requires_grad_(True)
    ref_model = object()

    def forward(model, prompt_ids, prompt_mask, completion_ids, completion_mask_, vision=None):
        return token_ref if model is ref_model else policy

    trainer = SimpleNamespace(
        args=SimpleNamespace(use_vllm=False, missing_eos_penalty=None, loss_type="sigmoid",
                             optim="adamw_torch", n_gpu=1, gradient_accumulation_steps=1,
                             torch_empty_cache_steps=None),
        _generate=lambda model, prompts, images=None: (
            torch.zeros(2 * n, 1, dtype=torch.long), torch.ones(2 * n, 1, dtype=torch.long),
            torch.ones(2 * n, t, dtype=torch.long), completion_mask, None),
        eos_token_ids=[0], _forward=forward, ref_model=ref_model,
        processing_class=SimpleNamespace(batch_decode=lambda ids, **kw: ["y"] * len(ids)),
        _calculate_rewards_from_functions=lambda **kw: rewards.clone(),
        reward_funcs=None, stats=defaultdict(list), accelerator=accelerator(), beta=beta,
        state=SimpleNamespace(global_step=0),
    )
    trl_loss = OnlineDPOTrainer.training_step(trainer, torch.nn.Identity(), {"prompt": ["x"] * n})
    seq_logp = (token_logp * completion_mask).sum(-1)
    seq_ref = (token_ref * completion_mask).sum(-1)
    first = online_dpo.label_pairs(rewards[:n], rewards[n:], "argmax")
    ours, chosen, rejected = online_dpo.online_dpo_loss(seq_logp, seq_ref, first, beta)
    assert ours.item() == pytest.approx(trl_loss.item(), abs=1e-12)
    assert (chosen - rejected).mean().item() == pytest.approx(
        trainer.stats["rewards/margins"][-1], abs=1e-12)


def _branch(source: str, loss_type: str) -> str:
    """The body of ``if/elif loss_type == "<loss_type>":`` in TRL's DPO loss code."""
    start = source.index(f'loss_type == "{loss_type}":')
    end = source.find("elif loss_type ==", start + 1)
    return source[start:end]


def test_trl_sigmoid_dpo_ignores_label_smoothing_so_cdpo_is_not_it():
    """The rdpo plugin's docstring: TRL's robust loss reads label_smoothing (rDPO), its sigmoid
    loss does not, so it is not cDPO; cDPO differs from it at ε > 0 (0.524 against 0.474 at
    h = 0.5, ε = 0.1) and equals it at ε = 0."""
    import inspect

    import rlhf_harness_rdpo as rdpo
    from trl import DPOTrainer

    source = inspect.getsource(DPOTrainer._compute_loss)
    assert "label_smoothing" in _branch(source, "robust")
    assert "label_smoothing" not in _branch(source, "sigmoid")
    assert "-F.logsigmoid(self.beta * delta_score)" in _branch(source, "sigmoid")
    zero = torch.zeros(1, dtype=torch.float64)
    h = torch.tensor([0.5], dtype=torch.float64)  # β = 1: the margin is the log-ratio difference
    cdpo, *_ = rdpo.cdpo_loss(h, zero, zero, zero, 1.0, 0.1)
    plain = -torch.nn.functional.logsigmoid(h)
    assert plain.item() == pytest.approx(0.47408, abs=1e-5)
    assert cdpo.item() == pytest.approx(0.52408, abs=1e-5)
    assert rdpo.cdpo_loss(h, zero, zero, zero, 1.0, 0.0)[0].item() == pytest.approx(plain.item())


def test_trl_grpo_defaults_to_the_length_weighted_dapo_loss():
    """The gspo plugin's docstring: its per-sequence mean is TRL's loss_type="grpo", not TRL's
    default "dapo" (which divides by the batch's token count)."""
    import dataclasses

    import rlhf_harness_gspo as gspo
    from trl import GRPOConfig

    default = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}["loss_type"]
    assert default == "dapo"
    assert 'set ``loss_type="grpo"`` there' in " ".join(gspo.__doc__.split())
