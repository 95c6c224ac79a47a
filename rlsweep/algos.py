"""The algorithm class an algo option builds, and how a policy config becomes `policy_kwargs`.

Each `conf/algo/<option>.yaml` names its class with `_target_` (`stable_baselines3.SAC`,
`sbx.SAC`, ...). SB3 classes build torch networks; SBX classes (`sbx.*`, the SB3 team's JAX
port with the same API) build flax networks, so their activation functions come from flax.
"""

from __future__ import annotations

import os
import time
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

    global _listening
    if not _listening:
        jax.monitoring.register_event_duration_secs_listener(_record_compile_span)
        _listening = True

    if not os.environ.get("JAX_PLATFORMS"):
        jax.config.update("jax_platforms", "cpu")  # no probing for GPU/TPU backends (and its log)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rlsweep" / "jax"
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


# JAX's own events for the three stages of compiling a program: tracing it to a jaxpr, lowering
# that to MLIR, and XLA compiling it (or loading it from the persistent cache).
_COMPILE_EVENTS = frozenset(("/jax/core/compile/jaxpr_trace_duration",
                             "/jax/core/compile/jaxpr_to_mlir_module_duration",
                             "/jax/core/compile/backend_compile_duration"))


class CompileSpans:
    """Time spent compiling, from spans reported when they end, overlapping time counted once.

    A jitted function called inside one being traced is traced (and reported) first, within the
    outer span; the outer span then absorbs it. Spans are merged wherever they overlap, so a
    start placed a little late (the listener runs after JAX's own clock stopped) cannot count
    an inner span twice.
    """

    def __init__(self):
        self.spans: list[tuple[float, float]] = []

    def add(self, start: float, end: float) -> None:
        start = min(start, end)
        while self.spans and self.spans[-1][1] > start:
            earlier_start, earlier_end = self.spans.pop()
            start, end = min(start, earlier_start), max(end, earlier_end)
        self.spans.append((start, end))

    @property
    def seconds(self) -> float:
        return sum(end - start for start, end in self.spans)


_compiling = CompileSpans()
_listening = False  # the listener is registered once per process


def _record_compile_span(event: str, duration: float, **_: Any) -> None:
    if event in _COMPILE_EVENTS:
        end = time.perf_counter()
        _compiling.add(end - duration, end)


def jax_compile_seconds() -> float:
    """Seconds this process has spent tracing and compiling JAX programs since `configure_jax`
    (0 before), from JAX's own events; a few ms per compile fall outside them and stay in.

    SBX compiles its update once per distinct static argument: SAC with `policy_delay` 4 and one
    gradient step per call compiles it 4 times (the actor-update offset is static), in the first
    `policy_delay` updates; with 4 gradient steps per call, once. These are one-time costs, so the
    steady training speed leaves them out. Something that traced again and again (a fresh
    closure jitted on every call, `gradient_steps=-1` with changing episode lengths) would be
    left out too; SB3's and SBX's training loops do neither. The count is per process, not per
    thread: every trainer here runs one training per process (joblib's loky workers, submitit,
    Ray tasks and confirm's runs are processes).
    """
    return _compiling.seconds


def steady_clock() -> float:
    """`time.perf_counter()` that stops while JAX compiles: the clock a training's speed is
    measured on (compiling is a one-time cost per process, reported as `compile_s`)."""
    return time.perf_counter() - jax_compile_seconds()


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
