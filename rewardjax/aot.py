"""Ahead-of-time compilation for TPU pods on a CPU host: memory, FLOPs and roofline per step.

libtpu describes a TPU topology without the chips (`jax.experimental.topologies`), so the very
functions `train.run` jits (`grpo.make_step` / `preference.make_step` through the algorithm's
`Program`, the reference scorer `update.score_rollouts`, the sampler `rollouts.generate`) are
lowered with the config's shardings on abstract inputs (`jax.eval_shape`, `ShapeDtypeStruct`)
and compiled for the topology, as MaxText's `train_compile.py` does. Nothing is allocated.

Per compiled program (per chip, `compiled.memory_analysis()`):
  total = arguments + outputs - aliased (donated state) + temporaries
and `compiled.cost_analysis()`: flops, bytes accessed, and the TPU compiler's roofline time
("optimal_seconds"). XLA counts a while loop's body once, so programs with loops (decoding,
chunked log-probs) under-report; the roofline time used is therefore

  roofline = max(compiler's time, model FLOPs / (chips x peak))          [loop-free / training]
  roofline = prefill FLOPs / (chips x peak) + T x (params + KV cache bytes per chip) / HBM BW
                                                                            [rollout: decoding]
  MFU      = model FLOPs / (chips x peak x roofline)

Model FLOPs (forward over n positions of one row with causal context sum c):
  F = 2 * P_body * n + 2 * D * V * n_scored + 4 * N * H * K * c
(P_body = matmul parameters without the embedding table and the unembedding; only the scored
positions are unembedded). Update = 3 F (forward + backward; rematerialisation is not model
work), reference pass = F, rollout = F(prefill) + F(each decoded token).

The program is the algorithm's own (`algorithms.get(name).build`), so a change to the model or
state (e.g. LoRA adapters through `--config.model.*`) changes what is compiled with no edit here.
"""

import dataclasses
import functools
import math
import os
import re
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rewardjax import algorithms, recipes, rollouts, sharding, train, train_state, update
from rewardjax.algorithms import base, grpo
from rewardjax.data import tokenizers
from rewardjax.models import transformer
from rewardjax.rewards import composition
from rewardjax.types import PreferenceBatch, RolloutBatch

GIB = 2**30
# libtpu locks the machine for one process; a compile-only client needs no exclusive chips.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published per-chip numbers (Google Cloud TPU system architecture pages)."""
  hbm_gib: float          # HBM capacity
  peak_flops: float       # dense bf16 FLOP/s
  hbm_bandwidth: float    # bytes/s
  example: str            # a valid topology name


CHIPS = {
    "v4": Chip(hbm_gib=32.0, peak_flops=275e12, hbm_bandwidth=1228e9, example="v4:4x4x4"),
    "v5e": Chip(hbm_gib=16.0, peak_flops=197e12, hbm_bandwidth=819e9, example="v5e:8x8"),
    "v5p": Chip(hbm_gib=95.0, peak_flops=459e12, hbm_bandwidth=2765e9, example="v5p:4x4x4"),
    "v6e": Chip(hbm_gib=32.0, peak_flops=918e12, hbm_bandwidth=1640e9, example="v6e:8x8"),
}


def known_topologies() -> str:
  return ", ".join(f"{name}:AxB[xC] (e.g. {c.example})" for name, c in CHIPS.items())


def topology_devices(topology: str) -> tuple[Chip, list]:
  """(chip, devices) of a topology name such as "v5p:4x4x4" (libtpu; no TPU needed)."""
  generation = topology.partition(":")[0]
  if generation not in CHIPS or not re.fullmatch(r"\w+:\d+(x\d+){1,2}", topology):
    raise ValueError(f"unknown TPU topology {topology!r}; known: {known_topologies()}")
  from jax.experimental import topologies  # noqa: PLC0415 (needs libtpu: the `aot` extra)

  try:
    desc = topologies.get_topology_desc(platform="tpu", topology_name=topology)
  except Exception as e:  # noqa: BLE001 (libtpu raises its own runtime error type)
    raise ValueError(f"libtpu does not know TPU topology {topology!r} ({e}); known: "
                     f"{known_topologies()}") from e
  return CHIPS[generation], list(desc.devices)


def parse_mesh(text: str) -> dict:
  """"fsdp:16,tensor:8" -> {"fsdp": 16, "tensor": 8} (axes of `sharding.AXES`)."""
  sizes = {}
  for part in filter(None, text.split(",")):
    name, _, value = part.partition(":")
    if name not in sharding.AXES or not value.isdigit() or int(value) < 1:
      raise ValueError(f"--mesh={text!r}: {part!r} is not axis:size with axis in {sharding.AXES}")
    sizes[name] = int(value)
  return sizes


def default_mesh(model: transformer.ModelConfig, chips: int) -> dict:
  """FSDP over every chip for models under 20B parameters; above, tensor = 8 (or the largest
  power of two dividing both head counts) and FSDP over the rest, so each layer's gathered
  weights and the per-chip batch stay small."""
  tensor = 1
  if model.num_layers * model.hidden_size**2 * 12 > 20e9:
    tensor = max(t for t in (1, 2, 4, 8) if model.num_heads % t == 0
                 and model.num_kv_heads % t == 0 and chips % t == 0)
  return {"data": 1, "fsdp": chips // tensor, "tensor": tensor}


def make_mesh(sizes: dict, devices: list, topology: str):
  """The ("data", "fsdp", "tensor") mesh over the topology's devices; missing axes are 1,
  except data, which takes the chips left over."""
  count = len(devices)
  used = math.prod(sizes.values())
  if count % used:
    raise ValueError(f"mesh {sizes} uses {used} chips, which does not divide the {count} "
                     f"chips of {topology}")
  full = {"data": sizes.get("data", count // used if "data" not in sizes else 1),
          "fsdp": sizes.get("fsdp", 1), "tensor": sizes.get("tensor", 1)}
  if math.prod(full.values()) != count:
    raise ValueError(f"mesh {full} uses {math.prod(full.values())} chips but {topology} has "
                     f"{count}")
  return sharding.make_mesh(full["data"], full["fsdp"], full["tensor"], devices=devices)


# ---- the job's program and abstract inputs ---------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Shapes:
  """Rows and lengths of the compiled step (from the config)."""
  prompts: int             # prompts (GRPO) or pairs (DPO) per step
  group: int               # G samples per prompt (1 for DPO)
  prompt_length: int       # S
  completion_length: int   # T


def shapes_of(config) -> Shapes:
  if config.algorithm == "grpo":
    return Shapes(config.train.batch_size, config.rollout.num_generations,
                  config.data.max_prompt_length, config.rollout.max_new_tokens)
  return Shapes(config.train.batch_size, 1, config.data.max_prompt_length,
                config.data.max_completion_length)


def build_program(config, mesh) -> tuple[base.Program, base.Setup]:
  """The algorithm's Program as `train.make_job` builds it, on placeholder data (one record:
  the compiled shapes come from the config, not from data)."""
  tokenizer = tokenizers.char_tokenizer()
  m = config.model
  model = train.model_config(config, tokenizer)
  if m.checkpoint:
    raise ValueError("aot compiles from the config's architecture fields; use a size preset "
                     "(configs/common.py MODELS) and leave --config.model.checkpoint empty")
  record = {"prompt": "1+1=", "answer": "2", "chosen": "2", "rejected": "3"}
  stream = recipes.RecordStream([record], config.train.batch_size, config.seed)
  recipe = recipes.Recipe(source=stream, rewards=composition.Composition((
      composition.Term("constant", lambda scored: [0.0] * len(scored.texts)),)))
  s = shapes_of(config)
  setup = base.Setup(
      tokenizer=tokenizer, mesh=mesh, model=model,
      data=base.DataOptions(fmt=config.data.fmt, bucket=config.data.bucket,
                            max_prompt_length=s.prompt_length,
                            max_completion_length=config.data.max_completion_length),
      sampling=base.SamplingOptions(num_generations=config.rollout.num_generations,
                                    max_new_tokens=config.rollout.max_new_tokens,
                                    temperature=config.rollout.temperature,
                                    top_p=config.rollout.top_p, top_k=config.rollout.top_k),
      problems={}, records={"train": [record], "heldout": []}, recipe=recipe,
      batch_size=config.train.batch_size, eval_batch_size=config.train.batch_size,
      seed=config.seed, train_steps=config.train.steps)
  return algorithms.get(config.algorithm).build(config.algo, setup), setup


def _abstract_key(mesh_sharding):
  """An abstract PRNG key (a concrete one would be placed on the topology's absent chips)."""
  key = jax.eval_shape(lambda: jax.random.key(0))
  return jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=mesh_sharding)


def _abstract(shape, dtype, mesh_sharding):
  return jax.ShapeDtypeStruct(shape, dtype, sharding=mesh_sharding)


def _paired(s: "Shapes", mesh) -> int:
  """The DPO batch's `paired_prompt` as `preference.preference_batch` sets it: the prompt
  length when the pairs split over the batch shards, else 0."""
  return s.prompt_length if s.prompts % sharding.batch_size_multiple(mesh) == 0 else 0


def _rows(mesh, shape, dtype):
  return _abstract(shape, dtype, sharding.batch_sharding(mesh, len(shape)))


def abstract_batch(config, program: base.Program, mesh):
  """The update step's batch (`rows_per_update` rows), abstract and batch-sharded."""
  s, rows = shapes_of(config), program.rows_per_update
  if config.algorithm == "grpo":
    length = s.prompt_length + s.completion_length
    logps = _rows(mesh, (rows, s.completion_length), jnp.float32)
    return RolloutBatch(
        tokens=_rows(mesh, (rows, length), jnp.int32),
        attention_mask=_rows(mesh, (rows, length), jnp.int32),
        completion_mask=_rows(mesh, (rows, s.completion_length), jnp.int32),
        old_logprobs=logps, ref_logprobs=logps, advantages=_rows(mesh, (rows,), jnp.float32),
        sampler_logprobs=logps)
  length = s.prompt_length + s.completion_length
  return PreferenceBatch(tokens=_rows(mesh, (rows, length), jnp.int32),
                         attention_mask=_rows(mesh, (rows, length), jnp.int32),
                         loss_mask=_rows(mesh, (rows, length - 1), jnp.int32),
                         ref_logps=_rows(mesh, (rows,), jnp.float32),
                         paired_prompt=_paired(s, mesh))


def abstract_state(config, program: base.Program, mesh, total_steps: int = 1000):
  """(abstract TrainState with shardings, the shardings): `train_state.state_layout`, never
  allocated."""
  tx = train.make_optimizer(config.optim, total_steps)
  _, abstract, shardings = train_state.state_layout(program.model_fn, tx, mesh,
                                                    _abstract_key(None), with_ref=program.with_ref)
  placed = jax.tree.map(lambda a, s: _abstract(a.shape, a.dtype, s), abstract, shardings)
  return placed, shardings


# ---- the three compiled programs --------------------------------------------------------------
def lower_update(config, program, mesh, state, shardings):
  """`program.step` jitted by `train.jit_step` (donated state, explicit shardings)."""
  batch = abstract_batch(config, program, mesh)
  rng = _abstract_key(sharding.replicated(mesh))
  return train.jit_step(program, shardings, batch, mesh).trace(state, batch, rng).lower()


def lower_reference(config, program, mesh, state):
  """The reference pass over the step's rows (`update.score_rollouts` for GRPO, the DPO
  reference scorer), as the batch stages jit it."""
  s = shapes_of(config)
  rows, length = s.prompts * s.group * (2 if config.algorithm == "dpo" else 1), (
      s.prompt_length + s.completion_length)
  tokens = _rows(mesh, (rows, length), jnp.int32)
  if config.algorithm == "grpo":
    group = grpo.prompt_groups(config.algo, s.group, s.prompts, minibatch=False,
                               shards=sharding.batch_size_multiple(mesh))
    score = jax.jit(functools.partial(update.score_rollouts, completion_length=s.completion_length,
                                      chunk_size=1024, group_size=group),
                    static_argnames=("graphdef",))
    return score.trace(None, state.reference_params(), graphdef=state.graphdef, tokens=tokens,
                       attention_mask=tokens).lower()
  from rewardjax.algorithms import preference  # noqa: PLC0415

  ref_fn = preference.reference_scorer(1024)
  loss_mask = _rows(mesh, (rows, length - 1), jnp.int32)
  return jax.jit(lambda params, t, a, m: ref_fn(state, t, a, m, params=params,
                                               paired_prompt=_paired(s, mesh))).trace(
      state.reference_params(), tokens, tokens, loss_mask).lower()


def lower_rollout(config, mesh, state):
  """`rollouts.generate`'s jitted body: prefill + KV-cache decoding of T tokens, G per prompt."""
  s = shapes_of(config)
  prompt_length = s.prompt_length + -s.prompt_length % rollouts.PROMPT_BUCKET
  replicated = sharding.replicated(mesh)
  # As `sharding.feed` places them: rows over the data axes when they divide, else whole.
  prompts = _abstract((s.prompts, prompt_length), jnp.int32,
                      sharding.batch_sharding(mesh) if s.prompts % sharding.batch_size_multiple(
                          mesh) == 0 else replicated)
  return rollouts._generate.trace(  # noqa: SLF001 (the jitted program `generate` calls)
      state.graphdef, state.params, prompts, prompts,
      _abstract_key(replicated),
      _abstract((rollouts.STOP_BUCKET,), jnp.int32, replicated),
      _abstract((), jnp.int32, replicated), max_new_tokens=s.completion_length,
      num_samples=s.group, sampling=rollouts._Sampling(  # noqa: SLF001
          float(config.rollout.temperature), int(config.rollout.top_k),
          float(config.rollout.top_p))).lower()


# ---- FLOPs, memory, report ---------------------------------------------------------------------
def forward_flops(model: transformer.ModelConfig, rows: int, positions: int, scored: int,
                  first: int = 0) -> float:
  """F of the module doc: `rows` rows of `positions` causal positions after `first` cached
  ones, `scored` of them unembedded."""
  d, k = model.hidden_size, model.head_dim
  attn = d * k * (2 * model.num_heads + 2 * model.num_kv_heads)
  body = model.num_layers * (attn + 3 * d * model.intermediate_size)
  context = positions * first + positions * (positions + 1) // 2
  return rows * (2.0 * body * positions + 2.0 * d * model.vocab_size * scored
                 + 4.0 * model.num_layers * model.num_heads * k * context)


def model_flops(config, model, stage: str, rows: int) -> float:
  s = shapes_of(config)
  length = s.prompt_length + s.completion_length
  scored = s.completion_length if config.algorithm == "grpo" else length - 1
  if stage == "update":
    return 3 * forward_flops(model, rows, length, scored)
  if stage == "reference":
    return forward_flops(model, rows, length, scored)
  prefill = forward_flops(model, s.prompts, s.prompt_length, 1)
  decode = sum(forward_flops(model, s.prompts * s.group, 1, 1, first=s.prompt_length + t)
               for t in range(0, s.completion_length, 64)) * 64
  return prefill + decode


@dataclasses.dataclass(frozen=True)
class Report:
  """One compiled program: per-chip memory (GiB), FLOPs, roofline and fit advice."""
  stage: str
  topology: str
  mesh: dict
  rows_per_chip: float
  argument_gib: float
  output_gib: float
  alias_gib: float
  temp_gib: float
  hbm_gib: float
  model_tflops: float
  compiler_tflops: float      # cost_analysis flops x chips (loops counted once)
  compiler_seconds: float     # cost_analysis "optimal_seconds" (0: absent)
  roofline_seconds: float
  mfu: float
  compile_seconds: float

  @property
  def total_gib(self) -> float:
    return self.argument_gib + self.output_gib - self.alias_gib + self.temp_gib

  @property
  def fits(self) -> bool:
    return self.total_gib <= self.hbm_gib

  def advice(self) -> str:
    """'' when it fits; else the GiB over HBM and which axis to grow."""
    if self.fits:
      return ""
    over = self.total_gib - self.hbm_gib
    state_bound = self.argument_gib >= self.temp_gib
    chips = math.prod(self.mesh.values())
    if state_bound:
      grow = (f"grow fsdp (now {self.mesh['fsdp']}; it shards parameters and optimizer "
              f"state), up to all {chips} chips, or a larger topology")
    else:
      grow = (f"grow fsdp or data (now {self.mesh['data']}x{self.mesh['fsdp']}: fewer rows "
              "per chip; or raise algo.num_minibatches) or tensor "
              f"(now {self.mesh['tensor']}: shards activations over heads / MLP width)")
    return (f"does not fit: {self.total_gib:.1f} GiB per chip is {over:.1f} GiB over the "
            f"{self.hbm_gib:.0f} GiB HBM; {'state' if state_bound else 'temporaries'} "
            f"dominate: {grow}")


def per_chip_bytes(tree) -> float:
  """Bytes one chip holds of a pytree of sharded ShapeDtypeStructs."""
  return float(sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
                   for x in jax.tree.leaves(tree) if hasattr(x, "sharding")))


_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class _Refused:
  """A compile the TPU compiler refused for lack of HBM ("RESOURCE_EXHAUSTED: ... HLO
  temporaries (27.04G) exceeds ..."): arguments from the inputs' per-chip shards,
  temporaries from the message, no cost analysis."""

  def __init__(self, message: str, args: float):
    match = (re.search(r"temporaries \(([\d.]+)([KMGT])", message)
             or re.search(r"Used ([\d.]+)([KMGT])", message))
    if "RESOURCE_EXHAUSTED" not in message or match is None:
      raise RuntimeError(f"TPU compile failed: {message}")
    temp = float(match.group(1)) * _UNITS[match.group(2)]
    if match.re.pattern.startswith("Used"):  # the total used, arguments included
      temp -= args
    self.memory = dataclasses.make_dataclass("Memory", [
        "argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
        "temp_size_in_bytes"])(args, 0, 0, max(temp, 0.0))

  def memory_analysis(self):
    return self.memory

  def cost_analysis(self):
    return {}


def analyse(compiled, *, stage: str, topology: str, chip: Chip, mesh, model_tflop: float,
            rows_per_chip: float, compile_seconds: float, decode_bytes: float = 0.0) -> Report:
  """Report of a compiled program (see the module doc for the roofline rule)."""
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  chips = mesh.size
  optimal = float(cost.get("optimal_seconds", 0.0) or 0.0)
  flops, accessed = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
  compute = model_tflop * 1e12 / (chips * chip.peak_flops)
  if stage == "rollout":
    roofline = compute + decode_bytes / chip.hbm_bandwidth
  else:
    compiler = optimal or max(flops / chip.peak_flops, accessed / chip.hbm_bandwidth)
    roofline = max(compiler, compute)
  return Report(
      stage=stage, topology=topology, mesh=dict(mesh.shape), rows_per_chip=rows_per_chip,
      argument_gib=mem.argument_size_in_bytes / GIB, output_gib=mem.output_size_in_bytes / GIB,
      alias_gib=mem.alias_size_in_bytes / GIB, temp_gib=mem.temp_size_in_bytes / GIB,
      hbm_gib=chip.hbm_gib, model_tflops=model_tflop, compiler_tflops=flops * chips / 1e12,
      compiler_seconds=optimal, roofline_seconds=roofline,
      mfu=model_tflop * 1e12 / (chips * chip.peak_flops * roofline) if roofline else 0.0,
      compile_seconds=compile_seconds)


STAGES = ("update", "reference", "rollout")


@dataclasses.dataclass(frozen=True)
class AotOptions:
  """What to compile: `topology` ("v5p:4x4x4"), `mesh` ("fsdp:16,tensor:4"; "" = default_mesh)
  and the stages (update; reference; rollout, GRPO only)."""
  topology: str
  mesh: str = ""
  stages: tuple = STAGES


def compile_config(config: ml_collections.ConfigDict, options: AotOptions) -> list[Report]:
  """Lowers and compiles the config's programs for `options.topology`; one Report each."""
  return list(iter_reports(config, options))


def iter_reports(config: ml_collections.ConfigDict, options: AotOptions):
  """`compile_config`, yielding each Report as its compile ends (big programs take minutes)."""
  chip, devices = topology_devices(options.topology)
  model = train.model_config(config, tokenizers.char_tokenizer())
  sizes = parse_mesh(options.mesh) if options.mesh else default_mesh(model, len(devices))
  mesh = make_mesh(sizes, devices, options.topology)
  with jax.set_mesh(mesh):  # activation constraints on; kernels lower for the mesh's TPUs
    program, _ = build_program(config, mesh)
    sharding.check_batch(program.rows_per_update, mesh, "rows per update")
    state, shardings = abstract_state(config, program, mesh)
    data_shards = sharding.batch_size_multiple(mesh)
    s = shapes_of(config)
    step_rows = s.prompts * s.group * (2 if config.algorithm == "dpo" else 1)
    lowerers = {
        "update": (lambda: lower_update(config, program, mesh, state, shardings),
                   program.rows_per_update),
        "reference": (lambda: lower_reference(config, program, mesh, state), step_rows),
        "rollout": (lambda: lower_rollout(config, mesh, state), s.prompts * s.group)}
    for stage in options.stages:
      if stage == "rollout" and config.algorithm != "grpo":
        continue
      if stage == "reference" and not program.with_ref:
        continue
      lower, rows = lowerers[stage]
      started = time.time()
      lowered = lower()
      try:
        compiled = lowered.compile()
      except jax.errors.JaxRuntimeError as e:  # the TPU compiler refuses what cannot fit
        inputs = {"update": (state, abstract_batch(config, program, mesh)),
                  "reference": state.reference_params(), "rollout": state.params}[stage]
        compiled = _Refused(str(e), per_chip_bytes(inputs))
      elapsed = time.time() - started
      decode_bytes = 0.0
      if stage == "rollout":  # every decode step reads the chip's weights and KV cache
        cache = (2 * model.num_layers * model.num_kv_heads * model.head_dim
                 * (s.prompt_length + s.completion_length / 2) * rows)
        weights = sum(math.prod(x.shape) * x.dtype.itemsize
                      for x in jax.tree.leaves(state.params))
        itemsize = np.dtype(model.dtype).itemsize
        decode_bytes = s.completion_length * (weights / mesh.size
                                              + cache * itemsize / data_shards)
      yield analyse(
          compiled, stage=stage, topology=options.topology, chip=chip, mesh=mesh,
          model_tflop=model_flops(config, model, stage, rows) / 1e12,
          rows_per_chip=rows / data_shards, compile_seconds=elapsed,
          decode_bytes=decode_bytes)


HEADER = ("| stage | topology | mesh (data, fsdp, tensor) | rows / chip | arg GiB | temp GiB | "
          "total GiB | HBM GiB | fits | model TFLOP | roofline s | MFU | compile s |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def table_row(r: Report) -> str:
  mesh = f"{r.mesh['data']}x{r.mesh['fsdp']}x{r.mesh['tensor']}"
  fits = "yes" if r.fits else f"no (+{r.total_gib - r.hbm_gib:.1f})"
  return (f"| {r.stage} | {r.topology} | {mesh} | {r.rows_per_chip:g} | {r.argument_gib:.2f} | "
          f"{r.temp_gib:.2f} | {r.total_gib:.2f} | {r.hbm_gib:.0f} | {fits} | "
          f"{r.model_tflops:,.1f} | {r.roofline_seconds:.3g} | {r.mfu:.0%} | "
          f"{r.compile_seconds:.0f} |")
