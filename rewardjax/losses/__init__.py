"""Every objective as a pure function on arrays: `loss, metrics = fn(...)`.

Importing this package needs only jax, chex and jaxtyping (no flax, transformers or torch).
"""

from rewardjax.losses.contrastive import *  # noqa: F403
from rewardjax.losses.kl import *  # noqa: F403
from rewardjax.losses.policy import *  # noqa: F403
from rewardjax.losses.preference import *  # noqa: F403
from rewardjax.losses.reference_free import *  # noqa: F403
from rewardjax.losses.reward_model import *  # noqa: F403
from rewardjax.losses.self_distillation import *  # noqa: F403
from rewardjax.losses.self_rewarding import *  # noqa: F403
from rewardjax.losses.vpl import *  # noqa: F403
