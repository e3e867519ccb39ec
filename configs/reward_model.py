"""Reward models on the built-in arithmetic task: a language model with a scalar head on the last
token, trained by one of the objectives of `rewardjax/algorithms/reward_model_objectives.py`.
Held-out metrics: pairwise accuracy on (correct, plausible wrong answer) pairs, the built-in
RewardBench-style benchmark (RewardBench 1 pairs, RewardBench 2 best-of-4 and Ties), best-of-8
reranking of the shipped policy's samples and the goal-state probe (`reward_eval` block;
`launch/eval.py --config=configs/reward_model.py --workdir=<run>` prints the table).

    python launch/train.py --config=configs/reward_model.py --workdir=/tmp/rm
    python launch/train.py --config=configs/reward_model.py:variant=yojo,smoke --workdir=/tmp/yo

Variants (`variant=`; each is a diff of the `algo` block; the objective picks its built-in
records, so e.g. `margin` trains on pairs that carry a margin):

  bt                Bradley-Terry on pairs. InstructGPT, arXiv 2203.02155 §3.5 (eq. 1); TRL
                    RewardTrainer.
  center            (default; the README figure) bt + center_rewards_coefficient 0.01.
                    Eisenstein et al. "Helping or Herding", arXiv 2312.09244 (eq. 2).
  margin            bt with a per-pair margin m inside the sigmoid, from the Llama 2 preference
                    rating; here the rating is how wrong the rejected answer is (1/3 if off by
                    <= 2, 2/3 if <= 10, else 1; tasks.rated_preference_pairs). Llama 2, arXiv
                    2307.09288 §3.2.2 (eq. 2).
  label_flip        MOSS-RLHF II recipe "flip": pairs with negative ensemble preference strength
                    have their labels flipped. Secrets of RLHF II, arXiv 2401.06080 §2 (label
                    flipping).
  label_smoothing   recipe "Soft Label + Margin": label smoothing alpha = label_smoothing (0.1)
                    on the negative-strength pairs plus the adaptive margin on all pairs.
                    arXiv 2401.06080 §2 (eq. 5).
  adaptive_margin   recipe "Margin": the ensemble strength as a margin on every pair. arXiv
                    2401.06080 §2 (eq. 6, read with the margin inside log σ).
                    The three denoising variants train on built-in pairs with label_noise (20%)
                    swapped labels; the preference strength is the mean margin of an ensemble of
                    ensemble_size (10) cheap scorers that misjudge a question with probability
                    ensemble_error (tasks.noisy_preference_pairs).
  contrastive       bt + SimCSE (beta 1, tau 0.05) on the last-token features of all rows, two
                    dropout-0.05 views. arXiv 2401.06080 §3 (contrastive learning for reward
                    modeling). The backbone has no dropout, so the views
                    are dropped out on the features fed to the head.
  win_tie           SoliReward BT with win-tie (paper form): Pass beats Fail, two Pass responses
                    tie (tie_fraction 0.5): half the ties the paper's cross-prompt pairs, half two
                    correct forms of one answer ("14" and "014"; reward_data.tie_pairs). arXiv
                    2512.22170 (BT-WT loss, cross-prompt pairing).
  k_choose_2        all C(K, 2) pairs of K = num_responses (4) ranked responses per prompt, one
                    prompt = one element. arXiv 2203.02155 §3.5 (eq. 1).
  plackett_luce     Plackett-Luce / ListMLE likelihood of the same rankings. DPO, arXiv
                    2305.18290 App. A.3 (Plackett-Luce model); Xia et al. ICML 2008 (ListMLE).
  polar             POLAR: candidates scored against a reference in the same sequence; the first
                    pretrain_steps (600) steps on unlabelled policy-discrimination triplets
                    (reference and positive from one synthetic policy, the negative from
                    another; reward_data.policy_triplets), then ranked triples (top = reference).
                    arXiv 2507.05197 §3.3-3.4.
  yojo              YOJO: the K responses packed in one row, K-way softmax cross-entropy on the
                    best one, each list in two orders. arXiv 2604.10966.
  goal_conditioned  bt + the goal-conditioned contrastive loss on hidden states (beta 0.5, 16
                    position pairs). Nath et al., arXiv 2407.13887.
  noisy_bt          bt on the same noisy pairs as the three denoising variants (their baseline).
  tree / chain      bt on pairs among the leaves of a prefix tree of responses (shared prefixes) /
                    the same number of pairs among independent responses (records=tree_pairs /
                    chain_pairs). Qiu et al., arXiv 2402.10184 (Algorithm 1).
  endogenous        training-free: the shipped policy's endogenous reward alpha log pi(y|x) + V(s1)
                    as the reward model (train.steps 0; the run is its evaluation). Li et al.,
                    arXiv 2506.23235 §3.
  pointwise         binary cross-entropy with the reward as the logit: label 1 for correct, 0
                    for wrong responses. GenRM, arXiv 2408.15240; SoliReward's BCE term, arXiv
                    2512.22170 (official code lian700/SoliReward `loss.py`).
  vpl               VPL: a user latent z inferred from the user's context set of C labelled
                    comparisons (context_size), a reward decoder r(e, z), negative ELBO with a
                    cyclical cosine KL annealing. Poddar et al., arXiv 2408.10075 §3-4. Built-in
                    data: users "concise" (prefers the bare answer) and "working" (prefers
                    "47-8=39\n39") agree that correct beats wrong and disagree on style
                    (data.users; style_fraction of the pairs are style pairs).
  user_bt           Bradley-Terry on the same users' target pairs without context: VPL's
                    baseline, which cannot tell the users apart on style pairs.
"""

from configs import base, common
from rewardjax import pretrained

# Each variant is a diff of the reward model's `algo` block (TRL RewardConfig names).
VARIANTS = {name: dict(loss_type=name) for name in (
    "bt", "margin", "label_flip", "label_smoothing", "adaptive_margin", "contrastive", "win_tie",
    "k_choose_2", "plackett_luce", "polar", "yojo", "goal_conditioned", "pointwise", "vpl")}
VARIANTS.update(
    center=dict(loss_type="bt", center_rewards_coefficient=0.01),
    noisy_bt=dict(loss_type="bt", records="noisy_pairs"),
    polar=dict(loss_type="polar", pretrain_steps=600),
    tree=dict(loss_type="bt", records="tree_pairs"),
    chain=dict(loss_type="bt", records="chain_pairs"),
    endogenous=dict(loss_type="bt"),
    user_bt=dict(loss_type="bt", records="user_target_pairs"))
# Full-run `train` block of the variants whose run differs from the others': VPL and its BT
# baseline (the README row) train on user pairs for 800 steps of 32 records (~3 min for VPL,
# whose rows include the context sets, at ~190 GFLOP/s), one KL annealing cycle per run.
USER_RUN = dict(steps=800, batch_size=32, eval_every=200)
TRAIN = {"vpl": USER_RUN, "user_bt": USER_RUN}


def get_config(arg=None):
  arg = common.parse_arg(arg, choices={"variant": VARIANTS, "size": common.MODELS},
                         variant="center", size="tiny", smoke=False)
  c = base.get_config(smoke=arg.smoke, size=arg.size, algorithm="reward_model")
  c.algo.update(VARIANTS[arg.variant])
  if not arg.smoke:
    # 8 pairs per training question (distinct wrong answers): the model learns to verify
    # instead of remembering pairs; with 1 pair per question held-out accuracy stalls at ~80%.
    # From the shipped model (configs/pretrain.py); the warm start is used only with
    # --config.model.checkpoint="".
    c.data.update(difficulty=1, num_train=20_000, num_eval=512, bucket=8)
    c.algo.update(pairs_per_question=8)
    c.warmstart.update(steps=2500, batch_size=128, learning_rate=1e-3)
    c.train.update(steps=1200, batch_size=64, eval_every=200)
    c.optim.update(learning_rate=3e-4, warmup_steps=50, schedule="cosine")
    c.reward_eval.update(questions=256, best_of_n=8, best_of_n_questions=256)
    c.train.update(TRAIN.get(arg.variant, {}))
    if c.algo.loss_type == "vpl":
      c.algo.update(kl_anneal_period=c.train.steps)
  else:
    c.reward_eval.update(questions=4, best_of_n=2, best_of_n_questions=4)
  if arg.variant == "endogenous":
    # Training-free: the shipped policy's own log-likelihood reward is evaluated; train.py
    # runs no step and reports the same evaluation as launch/eval.py.
    c.train.update(steps=0, export_hf=False)
    c.reward_eval.update(scorer="endogenous", policy=pretrained.ARITH)
  return c
