"""DPO family on built-in synthetic preference pairs (DPO, arXiv 2305.18290). Pairs: a correct
and a plausible wrong answer to the same problem. Each variant names its paper:

  sigmoid, hinge, ipo, nca_pair, bco_pair, sppo_hard, aot, aot_unpaired, apo_zero, apo_down,
  discopop, sft, sigmoid_norm, cdpo, robust, exo_pair
                 the TRL `DPOTrainer` loss types (IPO arXiv 2310.12036, cDPO, rDPO
                 2403.00409, SLiC 2305.10425, NCA 2402.05369, BCO 2404.04656, SPPO 2405.00675,
                 AOT 2406.05882, APO 2408.06266, DiscoPOP 2406.08414, EXO 2402.00856)
  simpo          SimPO arXiv 2405.14734 (reference-free; TRL CPOTrainer defaults)
  orpo           ORPO arXiv 2403.07691 (reference-free)
  kto            KTO arXiv 2402.01306 (pairs as unpaired examples + mismatched KL rows)
  cream          CREAM arXiv 2410.12735 (consistency-regularised soft labels)
  treg           T-REG arXiv 2412.02685 (token-reward regulariser; needs per-token
                 reference log-probs in the batch)
  dno            DNO arXiv 2404.03715 (DNO-Prct: reference = previous iterate)
  sspo           SPO (self-supervised preference degrees) arXiv 2409.17791

    python launch/train.py --config=configs/dpo.py --workdir=/tmp/dpo
    python launch/train.py --config=configs/dpo.py:variant=ipo,smoke --workdir=/tmp/ipo
    python launch/train.py --config=configs/dpo.py:variant=kto,smoke --workdir=/tmp/kto
"""

from configs import base, common

VARIANTS = {name: dict(loss_type=name) for name in (
    "sigmoid", "hinge", "ipo", "nca_pair", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")}
VARIANTS.update(
    cdpo=dict(loss_type="sigmoid", label_smoothing=0.1),
    robust=dict(loss_type="robust", label_smoothing=0.1),
    exo_pair=dict(loss_type="exo_pair", label_smoothing=1e-3),   # EXO eps (0 is outside (0, 1))
    # beta stays 0.1 below (get_config sets it): TRL's SimPO, ORPO and KTO defaults, DNO's eta.
    simpo=dict(loss_type="simpo", simpo_gamma=0.5, label_smoothing=0.0),
    orpo=dict(loss_type="orpo"),
    kto=dict(loss_type="kto", desirable_weight=1.0, undesirable_weight=1.0),
    cream=dict(loss_type="cream", responses_per_question=5),     # CREAM samples N = 5
    treg=dict(loss_type="treg", treg_alpha=0.25, treg_token_reduction="sum"),
    dno=dict(loss_type="dno", dno_win_rates=False),              # DNO-Prct: hard labels
    sspo=dict(loss_type="sspo", sspo_weight=1.0, sspo_max_removed=2),
)


def get_config(arg=None):
  arg = common.parse_arg(arg, choices={"variant": VARIANTS, "size": common.MODELS},
                         variant="sigmoid", size="tiny", smoke=False)
  c = base.get_config(smoke=arg.smoke, size=arg.size, algorithm="dpo")
  c.algo.update(VARIANTS[arg.variant])
  if not arg.smoke:
    # From the shipped model (configs/pretrain.py); the warm start is used only with
    # --config.model.checkpoint="".
    c.data.update(difficulty=1, num_train=20_000, num_eval=256, bucket=8)
    c.warmstart.update(steps=2500, batch_size=128, learning_rate=1e-3)
    c.train.update(steps=150, batch_size=32, eval_every=50)
    # At 1e-4 both log-probs of a pair fall (DPO's likelihood displacement) and greedy accuracy
    # drops by ~10 points; at 3e-5 by 3.5 (92.2% -> 88.7%) at preference accuracy 68%.
    c.optim.update(learning_rate=3e-5, warmup_steps=5)
    c.reward_eval.update(questions=256, best_of_n=8, best_of_n_questions=256)
  common.pod_config(c, arg.size)
  return c
