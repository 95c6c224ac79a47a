"""The algorithm class an algo option builds, and how a policy config becomes `policy_kwargs`.

Each `conf/algo/<option>.yaml` names its class with `_target_` (`stable_baselines3.SAC`,
`sbx.SAC`, ...). SB3 classes build torch networks; SBX classes (`sbx.*`, the SB3 team's JAX
port with the same API) build flax networks, so their activation functions come from flax.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from hydra.utils import get_class


def is_jax_class(target: str) -> bool:
    """SBX (JAX) classes live in the `sbx` package."""
    return target.split(".", 1)[0] == "sbx"


def configure_jax(threads: int) -> None:
    """Give XLA on the CPU `threads` threads, like torch's, and keep compiled programs on disk.

    XLA reads its flags once, when the backend starts (the first jax computation), so a process
    that already ran one keeps its setting. The persistent compilation cache (like numba's
    cache for the fast backend) halves the ~6 s an SBX model spends compiling its update in
    each new process.
    """
    if threads == 1:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    else:
        flags = f"intra_op_parallelism_threads={threads}"
    os.environ.setdefault("XLA_FLAGS", flags)  # read when jax's backend starts, not at import
    import jax

    if not os.environ.get("JAX_PLATFORMS"):
        jax.config.update("jax_platforms", "cpu")  # no probing for GPU/TPU backends (and its log)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rlsweep" / "jax"
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def algo_class(algo_cfg: Mapping[str, Any]) -> type:
    """The class the algo option names with `_target_` (imported on first use)."""
    target = algo_cfg.get("_target_")
    if not target:
        raise ValueError(f"algo={algo_cfg.get('name')!r} is invalid: its yaml names no class "
                         "(_target_: stable_baselines3.SAC, sbx.SAC, ...)")
    return get_class(target)


# algo.action_noise.type -> SB3's noise class (TD3/DDPG explore with it; sigma per action dim).
ACTION_NOISE = {"normal": "NormalActionNoise", "ornstein_uhlenbeck": "OrnsteinUhlenbeckActionNoise"}


def action_noise(noise_cfg: Mapping[str, Any] | None, action_dim: int):
    """SB3 action noise from `{type: normal | ornstein_uhlenbeck, sigma: 0.1}` (None: none)."""
    if not noise_cfg:
        return None
    import numpy as np
    from stable_baselines3.common import noise

    cls = getattr(noise, ACTION_NOISE[noise_cfg["type"]])
    return cls(mean=np.zeros(action_dim), sigma=float(noise_cfg["sigma"]) * np.ones(action_dim))


def policy_kwargs(policy_cfg: Mapping[str, Any], algo_target: str) -> dict[str, Any]:
    """`policy_kwargs` from the policy group: same hidden layers for actor and critic(s),
    the activation from torch or flax as the algorithm's framework needs."""
    name = policy_cfg["activation"]
    if is_jax_class(algo_target):
        import flax.linen as nn

        activation = {"tanh": nn.tanh, "relu": nn.relu, "elu": nn.elu,
                      "leaky_relu": nn.leaky_relu}[name]
    else:
        import torch.nn as nn

        activation = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU,
                      "leaky_relu": nn.LeakyReLU}[name]
    return {"net_arch": list(policy_cfg["net_arch"]), "activation_fn": activation}
