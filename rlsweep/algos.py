"""The SB3 algorithms rlsweep trains, and how a policy config becomes `policy_kwargs`."""

from __future__ import annotations

from typing import Any, Mapping

import torch.nn as nn
from stable_baselines3 import A2C, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm

ALGO_CLASSES: dict[str, type[BaseAlgorithm]] = {"a2c": A2C, "ppo": PPO, "sac": SAC, "td3": TD3}
ACTIVATION_FNS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}


def algo_class(name: str) -> type[BaseAlgorithm]:
    return ALGO_CLASSES[name]


def policy_kwargs(policy_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """SB3 `policy_kwargs` from the policy group: same hidden layers for actor and critic(s)."""
    return {"net_arch": list(policy_cfg["net_arch"]),
            "activation_fn": ACTIVATION_FNS[policy_cfg["activation"]]}
