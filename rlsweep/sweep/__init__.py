"""The Optuna sweep behind `hydra/sweeper=rlsweep`: grid cells, studies, workers, summary."""

import warnings

import optuna
from optuna.exceptions import ExperimentalWarning

# Heartbeats and stale-trial retries are marked experimental in Optuna 5 but are the documented
# way to survive dead workers; we rely on them knowingly (tests cover the behaviour).
warnings.filterwarnings("ignore", category=ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress lines say what matters
