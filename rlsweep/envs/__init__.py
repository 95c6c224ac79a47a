"""Environments: robosuite tasks and gymnasium ids as gymnasium envs, reward wrappers, a
scripted Lift controller. `build.make_env` builds whatever the env and reward options name."""
