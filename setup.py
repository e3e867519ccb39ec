"""rewardjax: reward-centric post-training of language models in JAX."""

import setuptools

setuptools.setup(
    name="rewardjax",
    version="0.1.0",
    description="Reward-centric post-training of language models (GRPO, DPO, reward models, "
    "SPARK, ...) in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["rewardjax", "rewardjax.*"]),
    # The shipped pretrained model (rewardjax/pretrained/arith, a few MB; configs/pretrain.py).
    package_data={"rewardjax.pretrained": ["arith/*", "arith_rm/*"]},
    install_requires=[
        "jax>=0.8",
        "flax>=0.12",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.11",
        "chex>=0.1.90",
        "jaxtyping>=0.3",
        "ml-collections>=1.0",
        "transformers>=4.56",
        "tokenizers>=0.21",
        "safetensors>=0.5",
        "numpy>=1.26",
        "absl-py>=2.1",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
    ],
    extras_require={
        # torch is pinned to the CPU build that lies on disk here; a looser pin pulls a CUDA wheel.
        # datasets: the HF-datasets loader test (local files) runs on a fresh machine too.
        # nbclient + ipykernel execute the notebooks as Colab would; jupytext pairs .py and .ipynb.
        "test": ["pytest>=8", "pytest-xdist>=3.6", "beartype>=0.19", "torch==2.13.0", "ruff>=0.6",
                 "datasets>=3", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29",
                 "jupytext>=1.16"],
        "hf": ["torch==2.13.0"],
        "tfds": ["tensorflow-datasets>=4.9", "tensorflow-cpu>=2.16"],
        "bench": ["trl>=1.16", "torch==2.13.0"],
        # launch/compile.py (rewardjax.aot): libtpu describes TPU topologies on a CPU host. The
        # version jax[tpu]==0.10.2 requires (libtpu==0.0.42.*); CI installs it for tests/aot_test.
        "aot": ["libtpu==0.0.42.1"],
    },
)
