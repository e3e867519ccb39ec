"""GRPO step time: rewardjax vs TRL's GRPOTrainer on the same tiny Qwen2, alternating in one run.

Run: `python benchmarks/grpo_step.py` (CPU, about 3 minutes; `pip install -e .[bench]` for TRL,
else only rewardjax is timed). One optimizer step is the whole GRPO iteration: sample
8 prompts x 8 completions of exactly 32 new tokens (EOS never ends a row: rewardjax passes no
EOS id, TRL sets `min_new_tokens=32`), reward them (a trivial host-side function), reference
log-probs (beta = 0.04), loss, backward and AdamW. rewardjax runs the GRPO program's batch
stages and update step (`algorithms.grpo.build`: `make_batch`, `make_step`), jitted by
`train.jit_step`, exactly as `train.run` does; TRL runs `GRPOTrainer.train()`, and a callback
times each TRL step and then one rewardjax step, so both see the same machine load.
Medians over `--steps` steps after `--warmup` (rewardjax's first step includes compilation).
Both are float32, on the weights of one safetensors file (`rewardjax.models.hf.save_pretrained`);
TRL runs with `gradient_checkpointing=False` (its default recomputes the forward pass), so both
do the same arithmetic. Run it on an idle machine: the load average is printed with the result.

Model FLOPs per step (stated so the figure can be checked; the FLOP/s figures use them, so
they compare to TRL's and to the usual MFU; rewardjax's reference and training passes compute
each prompt once per group of G, and the script also prints what it executes):
  F(n, c) = 2 * P * n + 4 * L * H * K * c         one forward over n positions whose summed
                                                   attention context is c
  step    = F(gen) + F(ref) + 3 * F(train)         sampling; reference log-probs; forward and
                                                   backward (= 2 forwards) of the policy
P = parameters used in matmuls (all but the embedding lookup; the tied unembedding counts),
L layers, H query heads, K head dim. Sampling runs B*(S+T-1) positions (prompt + every new
token but the last); the reference and policy passes run B*(S+T). Old-policy log-probs are
not counted: with one update per batch they equal the policy's (TRL skips them; rewardjax
reads the sampler's own, `RolloutBatch.sampler_logprobs`, without a second pass).
"""

import argparse
import os
import statistics
import string
import sys
import tempfile
import time

import jax
import ml_collections
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import machine  # noqa: E402 (benchmarks/machine.py, next to this script)

from rewardjax import optim, recipes, sharding, train, train_state  # noqa: E402
from rewardjax.algorithms import base, grpo  # noqa: E402
from rewardjax.models import hf, transformer  # noqa: E402
from rewardjax.rewards import composition  # noqa: E402

# 4 specials + 60 characters = the 64-token vocabulary of the benchmark model.
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
ALPHABET = string.digits + string.ascii_lowercase + string.ascii_uppercase[:24]


def tiny_qwen2() -> transformer.ModelConfig:
  """Qwen2 architecture: hidden 256, MLP 1024, 4 layers, 4 heads / 2 kv heads, tied, V = 64."""
  return transformer.ModelConfig(
      vocab_size=64, hidden_size=256, intermediate_size=1024, num_layers=4, num_heads=4,
      num_kv_heads=2, head_dim=64, qkv_bias=True, tie_word_embeddings=True,
      max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def tokenizer(*, eos: bool = True):
  """Character-level HF tokenizer over the 64-token vocabulary; `<bos>` starts every prompt."""
  from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors  # noqa
  from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

  vocab = {t: i for i, t in enumerate(SPECIALS + tuple(ALPHABET))}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
  tok.decoder = decoders.Fuse()
  tok.post_processor = processors.TemplateProcessing(
      single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
  return PreTrainedTokenizerFast(
      tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", unk_token="<unk>",
      eos_token="<eos>" if eos else None, padding_side="left",
      clean_up_tokenization_spaces=False)


def random_texts(count: int, length: int, seed: int) -> list[str]:
  rng = np.random.default_rng(seed)
  return ["".join(rng.choice(list(ALPHABET), length)) for _ in range(count)]


def write_model(directory: str, seed: int = 0) -> transformer.ModelConfig:
  """Random tiny Qwen2 weights as config.json + model.safetensors (read by both sides)."""
  config = tiny_qwen2()
  hf.save_pretrained(transformer.Transformer(config, rngs=nnx.Rngs(seed)), directory)
  return config


def forward_flops(config: transformer.ModelConfig, matmul_params: int, rows: int,
                  positions: int, first_position: int = 0) -> float:
  """F(n, c) of the module docstring for `rows` rows of `positions` causal positions each."""
  context = rows * sum(first_position + p + 1 for p in range(positions))
  attention = 4 * config.num_layers * config.num_heads * config.head_dim * context
  return 2.0 * matmul_params * rows * positions + attention


def matmul_params(config: transformer.ModelConfig) -> int:
  abstract = nnx.eval_shape(lambda: transformer.Transformer(config, rngs=nnx.Rngs(0)))
  total = transformer.count_params(nnx.split(abstract, nnx.Param)[1])
  # The embedding is a lookup, but the tied unembedding is a [D, V] matmul: count it once.
  return total - config.vocab_size * config.hidden_size * (0 if config.tie_word_embeddings
                                                           else 1)


def machine_line() -> str:
  load = " ".join(f"{x:.1f}" for x in os.getloadavg())
  return (f"machine: {os.cpu_count()} CPUs, load average (1/5/15 min) {load}; "
          f"jax {jax.__version__}")


def trivial_reward(texts) -> list[float]:
  """Share of lowercase characters: cheap, and different across a group's samples."""
  return [sum(c.islower() for c in t) / max(len(t), 1) for t in texts]


def make_setup(tok, mesh, model_config, *, batch_size: int, prompt_len: int,
               completion_len: int, chunk_size: int, group: int = 1, recipe=None,
               records=None) -> base.Setup:
  """The `base.Setup` an algorithm is built from (what `train.make_job` resolves from a
  config): `batch_size` prompts (or pairs) per step, bucket 16."""
  return base.Setup(
      tokenizer=tok, mesh=mesh, model=model_config,
      data=base.DataOptions(fmt="short", bucket=16, max_prompt_length=prompt_len,
                            max_completion_length=completion_len),
      sampling=base.SamplingOptions(num_generations=group, max_new_tokens=completion_len,
                                    temperature=1.0, top_p=1.0, top_k=0),
      problems={}, records=records or {}, recipe=recipe, batch_size=batch_size,
      eval_batch_size=batch_size, seed=0, chunk_size=chunk_size)


def timed_program(program: base.Program, state, state_sharding, mesh):
  """A zero-argument function running one full step of `program` as `train.train_steps`
  does: `make_batch`, then the step jitted by `train.jit_step` (explicit shardings, donated
  state), waited for. Returns (run, the last batch holder) for shape checks."""
  rng = jax.random.key(0)
  holder = {"state": state, "step": 0, "step_fn": None, "batch": None}

  def run():
    step = holder["step"]
    step_rng = jax.random.fold_in(rng, step)
    batch, _ = program.make_batch(holder["state"], step, step_rng)
    holder["batch"] = batch
    if holder["step_fn"] is None:
      holder["step_fn"] = train.jit_step(program, state_sharding, batch, mesh)
    holder["state"], metrics = holder["step_fn"](holder["state"], batch, step_rng)
    jax.block_until_ready((holder["state"], metrics))
    holder["step"] += 1

  return run, holder


def initial_state(model_dir: str, mesh):
  """(TrainState with a reference copy, its shardings) of the saved model, with TRL's AdamW
  defaults (lr 1e-6, b2 0.999, clip 1.0)."""
  model = hf.from_pretrained(model_dir, param_dtype="float32")
  params = nnx.to_pure_dict(nnx.split(model, nnx.Param)[1])
  tx = optim.make_optimizer(optim.AdamW(learning_rate=1e-6, schedule="constant", b2=0.999,
                                        max_grad_norm=1.0), total_steps=10**6)
  return train_state.create_state(lambda _: model, tx, mesh, jax.random.key(0), params=params,
                                  with_ref=True)


def rewardjax_step(model_dir: str, prompts: list[str], args):
  """A zero-argument function running one full rewardjax GRPO step (batch stages + update)."""
  tok = tokenizer(eos=False)  # no EOS id: every row samples exactly max_new_tokens tokens
  mesh = sharding.make_mesh()
  state, state_sharding = initial_state(model_dir, mesh)
  # The prompt source and a one-term reward composition, as a recipe supplies them.
  recipe = recipes.Recipe(
      source=recipes.RecordStream([{"prompt": p} for p in prompts], args.prompts, seed=0),
      rewards=composition.Composition((composition.Term(
          "lowercase", lambda scored: trivial_reward(scored.texts)),)))
  setup = make_setup(tok, mesh, tiny_qwen2(), batch_size=args.prompts,
                     prompt_len=args.prompt_len, completion_len=args.new_tokens,
                     chunk_size=args.chunk_size, group=args.group, recipe=recipe)
  options = ml_collections.ConfigDict(dict(grpo.DEFAULTS, loss_type="grpo", beta=args.beta,
                                           advantage="grpo", scale_rewards="group"))
  run, holder = timed_program(grpo.build(options, setup), state, state_sharding, mesh)

  def checked():
    run()
    assert holder["batch"].completion_mask.shape == (args.prompts * args.group, args.new_tokens)

  return checked


def step_timer(between_steps):
  """(TrainerCallback, times): the callback appends each TRL step's seconds to `times`, then
  runs `between_steps()` (outside TRL's timed window), so the two sides alternate."""
  from transformers import TrainerCallback  # noqa: PLC0415

  times = []

  class Alternate(TrainerCallback):
    def on_step_begin(self, *_, **__):
      self.start = time.perf_counter()

    def on_step_end(self, *_, **__):
      times.append(time.perf_counter() - self.start)
      between_steps()

  return Alternate(), times


def add_runner_arguments(parser) -> None:
  """The flags every step benchmark shares (threads, which sides run, workdir)."""
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--chunk_size", type=int, default=1024)
  parser.add_argument("--torch_threads", type=int, default=2)
  parser.add_argument("--no_trl", action="store_true", help="time rewardjax only")
  parser.add_argument("--trl_only", action="store_true", help="time TRL only (no alternation)")
  parser.add_argument("--workdir", default="")


def time_both(rj_step, trl_run_fn, args) -> tuple[list[float], list[float]]:
  """Per-step seconds of rewardjax (`rj_step()`, None = skip) and TRL (`trl_run_fn(between)`,
  skipped when trl is missing or --no_trl), one rewardjax step after each TRL step."""
  rj_times = []

  def timed_rewardjax():
    if rj_step is None:
      return
    start = time.perf_counter()
    rj_step()
    rj_times.append(time.perf_counter() - start)

  try:
    import trl  # noqa: F401, PLC0415
    have_trl = not args.no_trl
  except ImportError:
    have_trl = False
  if have_trl:
    return rj_times, trl_run_fn(timed_rewardjax)
  for _ in range(args.warmup + args.steps):
    timed_rewardjax()
  return rj_times, []


def trl_run(model_dir: str, prompts: list[str], args, between_steps):
  """Trains TRL's GRPOTrainer for warmup + steps steps; returns its per-step seconds.

  `between_steps()` runs after each TRL step (outside TRL's timed window).
  """
  import torch  # noqa: PLC0415
  from datasets import Dataset  # noqa: PLC0415
  from trl import GRPOConfig, GRPOTrainer  # noqa: PLC0415

  torch.set_num_threads(args.torch_threads)
  callback, times = step_timer(between_steps)
  steps = args.warmup + args.steps
  config = GRPOConfig(
      output_dir=os.path.join(args.workdir, "trl"), per_device_train_batch_size=args.prompts *
      args.group, num_generations=args.group, max_completion_length=args.new_tokens,
      generation_kwargs={"min_new_tokens": args.new_tokens}, beta=args.beta, loss_type="grpo",
      scale_rewards="group", temperature=1.0, top_k=0, top_p=1.0, learning_rate=1e-6,
      max_steps=steps, logging_steps=10**6, save_strategy="no", report_to="none", use_cpu=True,
      bf16=False, fp16=False, seed=0, shuffle_dataset=False, dataloader_num_workers=0,
      disable_dropout=True, gradient_checkpointing=False)
  dataset = Dataset.from_dict({"prompt": (prompts * steps)[:args.prompts * steps]})
  trainer = GRPOTrainer(
      model=model_dir, reward_funcs=lambda completions, **_: trivial_reward(completions),
      args=config, train_dataset=dataset, processing_class=tokenizer(), callbacks=[callback])
  trainer.train()
  return times


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--prompts", type=int, default=8)
  parser.add_argument("--group", type=int, default=8)
  parser.add_argument("--prompt_len", type=int, default=16, help="tokens, <bos> included")
  parser.add_argument("--new_tokens", type=int, default=32)
  parser.add_argument("--beta", type=float, default=0.04)
  parser.add_argument("--steps", type=int, default=5)
  add_runner_arguments(parser)
  args = parser.parse_args()
  args.workdir = args.workdir or tempfile.mkdtemp(prefix="grpo_step_")
  model_dir = os.path.join(args.workdir, "model")
  config = write_model(model_dir)
  prompts = random_texts(args.prompts * 4, args.prompt_len - 1, seed=1)  # + <bos>
  rj_step = None if args.trl_only else rewardjax_step(model_dir, prompts, args)
  rj_times, trl_times = time_both(
      rj_step, lambda between: trl_run(model_dir, prompts, args, between), args)

  rows, s, t = args.prompts * args.group, args.prompt_len, args.new_tokens
  p = matmul_params(config)
  flops = (forward_flops(config, p, rows, s + t - 1) + forward_flops(config, p, rows, s + t)
           + 3 * forward_flops(config, p, rows, s + t))
  # rewardjax: the reference and training passes run each prompt once per group.
  shared = (forward_flops(config, p, args.prompts, s)
            + forward_flops(config, p, rows, t, first_position=s))
  executed = forward_flops(config, p, rows, s + t - 1) + 4 * shared
  print(f"workload: {args.prompts} prompts x {args.group} samples, prompt {s} + exactly {t} "
        f"new tokens, beta {args.beta}, float32; model {p / 1e6:.2f}M matmul params "
        f"(Qwen2 D=256 F=1024 L=4 H=4/2 tied V=64)")
  report(rj_times, trl_times, flops, args, executed)


def report(rj_times, trl_times, flops, args, executed: float = 0.0) -> None:
  """Prints the medians after warm-up, their ratio, FLOP/s and the machine's matmul FLOP/s.

  `flops` is the model FLOPs of the unshared passes (what TRL computes, the MFU convention);
  `executed`, when given, what rewardjax computes with shared prompts."""
  print(machine_line())
  rj = tr = None
  if rj_times:
    rj = statistics.median(rj_times[args.warmup:])
    print(f"rewardjax : {rj:.3f} s/step (median of {len(rj_times) - args.warmup}; first step "
          f"incl. compile {rj_times[0]:.1f} s)  {flops / rj / 1e9:.1f} GFLOP/s")
  if trl_times:
    import torch  # noqa: PLC0415
    import trl  # noqa: PLC0415

    tr = statistics.median(trl_times[args.warmup:])
    print(f"TRL       : {tr:.3f} s/step (median of {len(trl_times) - args.warmup}; trl "
          f"{trl.__version__}, torch {torch.__version__}, {args.torch_threads} threads)  "
          f"{flops / tr / 1e9:.1f} GFLOP/s")
  if rj and tr:
    print(f"speed-up rewardjax vs TRL: {tr / rj:.2f}x")
  if os.getloadavg()[0] > os.cpu_count() and args.torch_threads > 1:
    print(f"note: load above {os.cpu_count()} CPUs; torch's {args.torch_threads} OpenMP threads "
          "stall at every barrier under contention (TRL then runs several times slower than "
          "with --torch_threads 1): rerun on an idle machine for the headline ratio.")
  peak = machine.matmul_flops_per_s()
  print(f"model FLOPs per step {flops / 1e9:.1f} GFLOP; measured f32 matmul {peak / 1e9:.1f} "
        f"GFLOP/s (compute limit {flops / peak:.3f} s/step)")
  if rj and executed:
    print(f"rewardjax executes {executed / 1e9:.1f} GFLOP of them (each prompt once per "
          f"group or pair): {executed / rj / 1e9:.1f} GFLOP/s = {executed / rj / peak:.0%} of "
          f"the matmul rate")
  print(machine.describe(peak))


if __name__ == "__main__":
  main()
