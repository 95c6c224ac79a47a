"""rlsweep: Hydra + Optuna hyperparameter sweeps of Stable-Baselines3 on robosuite Lift."""

__version__ = "0.1.0"
