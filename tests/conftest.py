"""Test-wide JAX settings: 8 emulated CPU devices, strict rank promotion, runtime shape checks."""

import os
import tempfile

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# libtpu (the `aot` extra) takes a machine-wide lock when it loads; test workers share the box.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_rank_promotion", "raise")
# One persistent compilation cache for the session's processes: the many smoke runs compile the
# same sampler, evaluation and reference programs, and a hit costs milliseconds, not seconds.
jax.config.update("jax_compilation_cache_dir", os.environ.get(
    "REWARDJAX_TEST_JAX_CACHE", os.path.join(tempfile.gettempdir(), "rewardjax-test-jax-cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

from jaxtyping import install_import_hook  # noqa: E402

# Runtime shape checks for every annotated public function; they run while tracing only.
_HOOK = install_import_hook("rewardjax", "beartype.beartype")


def pytest_addoption(parser):
  parser.addoption("--soak", action="store_true",
                   help="also run the repeated trials marked `soak` (e.g. 10 preemptions)")


def pytest_collection_modifyitems(config, items):
  """Tests marked `soak` (repeats of a default-suite test) are deselected unless --soak: opt-in
  trials, not skipped ones (the default suite keeps its own trials of the same test)."""
  if config.getoption("--soak"):
    return
  soak = [item for item in items if "soak" in item.keywords]
  if soak:
    config.hook.pytest_deselected(items=soak)
    items[:] = [item for item in items if "soak" not in item.keywords]
