"""Test-wide JAX settings: 8 emulated CPU devices, strict rank promotion, runtime shape checks."""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
jax.config.update("jax_numpy_rank_promotion", "raise")

from jaxtyping import install_import_hook  # noqa: E402

# Runtime shape checks for every annotated public function; they run while tracing only.
_HOOK = install_import_hook("rewardjax", "beartype.beartype")
