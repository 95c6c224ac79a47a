"""Environments: robosuite Lift as a gymnasium env, reward variants and a scripted controller."""

from rlsweep.envs.lift import LiftEnv, make_lift_env

__all__ = ["LiftEnv", "make_lift_env"]
