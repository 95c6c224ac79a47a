"""Roll out a policy for whole episodes and measure task success and return."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

if TYPE_CHECKING:  # a type only: the sweep worker imports this module without torch and SB3
    from stable_baselines3.common.vec_env import VecEnv


@dataclass
class EvalResult:
    """Per-episode outcomes. An episode succeeds if the task succeeded at any step in it.

    :param successes: per episode, whether the task succeeded; None on an env with no notion
        of success (env.reports_success=false, e.g. Pendulum): no success rate, not 0
    :param returns: per episode, the env's summed reward
    """

    successes: Optional[list[bool]]
    returns: list[float]

    @property
    def success_rate(self) -> Optional[float]:
        return None if self.successes is None else float(np.mean(self.successes))

    @property
    def mean_return(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std_return(self) -> float:
        return float(np.std(self.returns))

    def summary(self) -> dict[str, Optional[float]]:
        return {"success_rate": self.success_rate, "mean_return": self.mean_return,
                "std_return": self.std_return}

    def to_dict(self) -> dict:
        return {**self.summary(), **asdict(self)}


# Called after every periodic evaluation with (env steps, result); returning False stops training.
# The sweeper uses it to report to Optuna and prune.
EvalHook = Callable[[int, EvalResult], bool]


def run_episodes(act: Callable[[np.ndarray], np.ndarray], env: VecEnv, episodes: int,
                 on_step: Callable[[int], None] | None = None,
                 reports_success: bool = True) -> EvalResult:
    """Run `episodes` full episodes on a one-env VecEnv; `act` maps observations to actions.
    With `reports_success` False (the env has no `is_success`) the result has no successes.

    The VecEnv resets itself at episode end (SB3 convention), so one `reset` starts the loop.
    Returns are the env's own rewards: evaluate through VecNormalize with `norm_reward=False`.
    """
    assert env.num_envs == 1, "evaluation uses a single env so episodes are counted exactly"
    successes, returns = [], []
    obs = env.reset()
    episode_return, succeeded = 0.0, False
    while len(returns) < episodes:
        obs, reward, done, info = env.step(act(obs))
        episode_return += float(reward[0])
        succeeded = succeeded or bool(info[0].get("is_success", False))
        if on_step is not None:
            on_step(len(returns))  # index of the episode this step belongs to
        if done[0]:
            successes.append(succeeded)
            returns.append(episode_return)
            episode_return, succeeded = 0.0, False
    return EvalResult(successes if reports_success else None, returns)
