"""Hydra discovers sweepers only in the `hydra_plugins` namespace; this one is rlsweep's."""
