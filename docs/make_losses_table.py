"""Generates docs/losses.md, the table of every public function of `rewardjax.losses`.

  python docs/make_losses_table.py           # rewrite docs/losses.md
  python docs/make_losses_table.py --check   # exit 1 if docs/losses.md is stale

tests/docs_test.py regenerates the table and fails when the file differs, so it cannot drift.

Which functions: every function named in `__all__` of each `rewardjax.losses.<module>` that
`rewardjax/losses/__init__.py` re-exports (other `__all__` names, e.g. option tables, are listed
under the module's table). One section per module, headed by the module docstring's first line.

Docstring fields read for each function (`inspect.getdoc`, Google style):
  * line 1: one-line summary (shown after the name);
  * `Equation:` section: the formula. The header's inline text or the first indented
    paragraph (lines joined with "; "), rendered as code;
  * `References:` section: the paper(s). First paragraph, lines joined with spaces;
  * `TRL:` section: the TRL trainer / option implementing the same objective, first line
    ("none" when TRL has no counterpart); later lines are free prose about differences.
A section header is a line equal to "Equation:", "References:" or "TRL:" (optionally followed by
inline text) at the docstring's base indentation. A field missing from a docstring must come
from `METADATA` below (keyed by function name); anything still missing is an error, and so is a
`METADATA` entry that names no public function or repeats a field the docstring already has.
"""

import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "losses.md"
FIELDS = ("formula", "paper", "trl")
SECTIONS = {"Equation": "formula", "References": "paper", "TRL": "trl"}

# Fields that the docstrings of kl.py, policy.py, preference.py, reference_free.py and
# self_rewarding.py do not carry as sections (they state the formula in an untitled block and TRL
# in prose). Delete an entry once its docstring gains the section: the generator rejects
# duplicates.
_VPL_CODE = "VPL, arXiv 2408.10075 (official code WEIRDLabUW/vpl_llm)"
METADATA = {
  "vpl_loss": {
    "formula": "mean_b −log σ(r(a_b, z_b) − r(b_b, z_b)) + w_t · KL(q(z|C) ‖ N(0, I)), "
               "KL = −½ Σ_d (1 + log σ² − μ² − σ²)",
    "trl": "—"},
  "gaussian_kl": {
    "formula": "KL(N(μ, σ²) ‖ N(0, I)) = −½ Σ_d (1 + log σ² − μ² − σ²)",
    "paper": "VPL, arXiv 2408.10075 §3 (ELBO)", "trl": "—"},
  "clamp_posterior": {
    "formula": "μ ← clip(μ, −1, 1), log σ² ← clip(log σ², −1, 1)",
    "paper": _VPL_CODE, "trl": "—"},
  "reparameterize": {
    "formula": "z = μ + σ ε, ε ~ N(0, I), then z ← √d · z / ‖z‖",
    "paper": _VPL_CODE, "trl": "—"},
  "kl_annealing": {
    "formula": "w_t = 0.1 + 0.9 · (cos(π((t mod T)/T − 1)) + 1) / 2",
    "paper": _VPL_CODE + ", cyclical cosine annealing", "trl": "—"},
  "kl_estimate": {
    "formula": "k1 = log π − log π_ref; k2 = (log π − log π_ref)²/2; k3 = e^d − d − 1, "
               "d = log π_ref − log π",
    "trl": "GRPOTrainer `beta` term (k3 only)"},
  "reduce_loss": {
    "formula": "token-mean Σ l·m / Σ m; seq-mean-token-mean mean_b Σ_t l·m / L_b; "
               "seq-mean-token-sum mean_b Σ_t l·m; seq-mean-token-sum-norm Σ l·m / (B'·C)",
    "trl": "GRPOConfig `loss_type` aggregation"},
  "grpo_loss": {
    "formula": "l_t = −min(ρ_t A, clip(ρ_t, 1 − ε_low, 1 + ε_high) A) + β KL_t; "
               "loss = reduce(l, mode(loss_type))",
    "trl": "GRPOTrainer (`loss_type` grpo, bnpo, dr_grpo, dapo, cispo)"},
  "ppo_loss": {
    "formula": "l_t = −min(ρ_t A_t, clip(ρ_t, 1 − ε_low, 1 + ε_high) A_t)",
    "trl": "PPOTrainer policy loss (`cliprange`)"},
  "ppo_value_loss": {
    "formula": "l_t = ½ max((V − G)², (V_clip − G)²), V_clip = V_old + clip(V − V_old, −c, c)",
    "trl": "PPOTrainer value loss (`cliprange_value`)"},
  "dpo_loss": {
    "formula": "sigmoid: −(1 − ε) log σ(βΔ) − ε log σ(−βΔ), Δ = h_w − h_l, "
               "h = log π(y) − log π_ref(y); other TRL loss types",
    "trl": "DPOTrainer (`loss_type`)"},
  "implicit_reward": {
    "formula": "r(x, y) = β (log π(y|x) − log π_ref(y|x))",
    "trl": "DPOTrainer `rewards/chosen`, `rewards/rejected`"},
  "implicit_reward_accuracy": {
    "formula": "mean_b 1[r(x, y_w) > r(x, y_l)]",
    "trl": "DPOTrainer `rewards/accuracies`"},
  "kto_loss": {
    "formula": "desirable λ_D (1 − σ(β(h − z0))); undesirable λ_U (1 − σ(β(z0 − h))); "
               "z0 = max(0, batch KL)",
    "trl": "KTOTrainer (`loss_type` kto, apo_zero_unpaired)"},
  "ld_sequence_logps": {
    "formula": "log π(y) = Σ_{k ≤ l_p} log p_k + α Σ_{k > l_p} log p_k, l_p = min(|y_w|, |y_l|)",
    "trl": "DPOConfig `ld_alpha`"},
  "orpo_loss": {
    "formula": "NLL(y_w) − β mean log σ(log odds(y_w) − log odds(y_l)), "
               "log odds = a − log(1 − e^a)",
    "trl": "ORPOTrainer"},
  "simpo_loss": {
    "formula": "−(1 − ε) log σ(z) − ε log σ(−z), z = β(a_w − a_l) − γ",
    "trl": "CPOTrainer (`loss_type=\"simpo\"`, `cpo_alpha=0`)"},
  "wpo_weights": {
    "formula": "w = exp(mean_t [log p(y_t) − log Σ_v p_v²])",
    "trl": "DPOConfig `use_weighting`"},
  "coherent_reward": {
    "formula": "r(x, y) = Σ_t m_t [log π_sft(y_t | x, y_<t) − log π_pt(y_t | x, y_<t)]",
    "trl": "none"},
  "cream_consistency": {
    "formula": "C = (τ + 1) / 2, τ = Kendall τ between two iterations' rankings",
    "trl": "none"},
  "cream_loss": {
    "formula": "C_b (−log σ(βΔ_b)) + (1 − C_b)(−log σ(−βΔ_b))",
    "trl": "DPOTrainer sigmoid with `label_smoothing = 1 − C`"},
  "dno_loss": {
    "formula": "−p log σ(h(y_w) − h(y_l)) − (1 − p) log σ(h(y_l) − h(y_w)), h = η log π/π_t, "
               "p = σ(r_t(y_w) − r_t(y_l))",
    "trl": "none"},
  "dno_pair_mask": {
    "formula": "keep[p, i, j] = i ≠ j ∧ s_i ≥ pos_min ∧ s_i − s_j ≥ margin "
               "(student_margin for policy samples)",
    "trl": "none"},
  "kendall_tau": {
    "formula": "τ = Σ_{i<j} sign(ra_i − ra_j) sign(rb_i − rb_j) / (n(n − 1)/2)",
    "trl": "none"},
  "soft_label_dpo_loss": {
    "formula": "−p log σ(βΔ) − (1 − p) log σ(−βΔ)",
    "trl": "DPOTrainer sigmoid with `label_smoothing = 1 − p`"},
  "spo_ssl_loss": {
    "formula": "L_SSL = −mean_b log softmax(W h_b)[k_b]",
    "trl": "none"},
  "treg_loss": {
    "formula": "L_pair(z) + α sg(σ(−z)) (L_REG(y_w) + L_REG(y_l)), "
               "L_REG(y) = −β Σ_t r_t log π(y_t | x, y_<t)",
    "trl": "none"},
  "treg_token_rewards": {
    "formula": "r_t = σ(log π_eval(y_t | x_better, y_<t) − log π_eval(y_t | x_worse, y_<t)) − 1/2",
    "trl": "none"},
  "win_rate_rewards": {
    "formula": "r_i = Σ_{j≠i} m_j P(y_i ≻ y_j) / max(Σ_{j≠i} m_j, 1)",
    "trl": "none"},
}


def parse_docstring(doc: str) -> dict:
  """Returns {"summary", "formula", "paper", "trl"} found in a docstring (missing keys absent)."""
  lines = inspect.cleandoc(doc).splitlines()
  found = {"summary": lines[0].strip()} if lines and lines[0].strip() else {}
  header = re.compile(r"^(%s):\s*(.*)$" % "|".join(SECTIONS))
  for i, line in enumerate(lines):
    match = header.match(line)
    if not match:
      continue
    body = [match.group(2).strip()] if match.group(2).strip() else []
    for nxt in lines[i + 1:]:  # the paragraph: indented lines up to a blank line or dedent
      if not nxt.startswith(" ") or not nxt.strip():
        break
      body.append(nxt.strip())
    if not body:
      continue
    key = SECTIONS[match.group(1)]
    if key == "trl":
      found[key] = body[0]
    else:
      found[key] = ("; " if key == "formula" else " ").join(body)
  return found


def loss_modules() -> list:
  """The `rewardjax.losses` submodules whose `__all__` is re-exported by the package."""
  if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
  package = importlib.import_module("rewardjax.losses")
  modules = []
  for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
    module = importlib.import_module(f"rewardjax.losses.{info.name}")
    names = getattr(module, "__all__", None)
    if names and all(getattr(package, n, None) is getattr(module, n) for n in names):
      modules.append(module)
  return modules


def _is_function(obj) -> bool:
  return callable(obj) and not isinstance(obj, type)


def public_functions() -> dict:
  """{module name: [function names in `__all__` order]} for the re-exported modules."""
  return {m.__name__: [n for n in m.__all__ if _is_function(getattr(m, n))]
          for m in loss_modules()}


def collect_rows() -> dict:
  """{module: (module summary, [row dicts], [other exported names])}; raises on missing data."""
  public = {n for names in public_functions().values() for n in names}
  errors = [f"METADATA[{n!r}] names no public function" for n in METADATA if n not in public]
  tables = {}
  for module in loss_modules():
    rows, others = [], []
    for name in module.__all__:
      obj = getattr(module, name)
      if not _is_function(obj):
        others.append(name)
        continue
      row = {"name": name, **parse_docstring(inspect.getdoc(obj) or "")}
      for field, value in METADATA.get(name, {}).items():
        if field in row:
          errors.append(f"METADATA[{name!r}][{field!r}] repeats the docstring's field")
        row[field] = value
      missing = [f for f in ("summary", *FIELDS) if not row.get(f)]
      if missing:
        errors.append(f"{module.__name__}.{name}: no {missing} in docstring or METADATA")
      rows.append(row)
    doc = (module.__doc__ or "").strip().splitlines()
    tables[module.__name__] = (doc[0] if doc else "", rows, others)
  if errors:
    raise ValueError("loss table metadata incomplete:\n  " + "\n  ".join(errors))
  return tables


def _cell(text: str) -> str:
  return text.replace("|", "\\|").replace("<", "&lt;")


def _code(text: str) -> str:
  return f"`{text.replace('|', chr(92) + '|')}`" if "`" not in text else _cell(text)


def render() -> str:
  out = [
    "# Loss table",
    "",
    "<!-- Generated by docs/make_losses_table.py from the docstrings of rewardjax.losses; do not",
    "edit by hand. tests/docs_test.py fails when this file is stale. -->",
    "",
    "Every public function of `rewardjax.losses`: its formula, the paper it comes from and the",
    "Hugging Face TRL trainer with the same objective (— when TRL has none). Regenerate with",
    "`python docs/make_losses_table.py`; the docstring fields it reads are described in that",
    "script's docstring.",
  ]
  for module, (summary, rows, others) in collect_rows().items():
    out += ["", f"## `{module}`", "", summary, "", "| name | formula | paper | TRL name |",
            "|---|---|---|---|"]
    for row in rows:
      trl = "—" if row["trl"].strip().lower() in ("none", "-", "—") else _cell(row["trl"])
      out.append(f"| `{row['name']}`: {_cell(row['summary'])} | {_code(row['formula'])} | "
                 f"{_cell(row['paper'])} | {trl} |")
    if others:
      out += ["", "Also exported: " + ", ".join(f"`{n}`" for n in others) + "."]
  return "\n".join(out) + "\n"


def main(argv: list) -> int:
  text = render()
  if "--check" in argv:
    if OUTPUT.read_text(encoding="utf-8") != text:
      print(f"{OUTPUT} is stale: run python docs/make_losses_table.py", file=sys.stderr)
      return 1
    return 0
  OUTPUT.write_text(text, encoding="utf-8")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
