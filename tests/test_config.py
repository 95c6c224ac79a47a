"""Config groups compose with each other, and bad input is one clear line before any compute."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from rlsweep.cli import CONF_DIR, group_options, preflight, primary_config
from rlsweep.config import ConfigError, validate
from tests.conftest import compose_cfg, run_cli


def test_every_group_has_its_documented_options():
    assert set(group_options("algo")) >= {"ppo", "sac", "td3", "a2c", "sbx_sac", "sbx_tqc"}
    assert set(group_options("reward")) >= {"dense", "sparse", "staged"}
    assert set(group_options("policy")) >= {"small", "medium", "large"}
    assert set(group_options("env")) >= {"lift"}
    assert set(group_options("logger")) >= {"wandb", "none"}


@pytest.mark.parametrize("algo,reward,policy,logger", list(itertools.product(
    group_options("algo"), group_options("reward"), group_options("policy"),
    group_options("logger"))))
def test_every_combination_composes_and_validates(algo, reward, policy, logger):
    cfg = compose_cfg(f"algo={algo}", f"reward={reward}", f"policy={policy}", f"logger={logger}")
    validate(cfg)
    assert (cfg.algo.name, cfg.reward.name, cfg.policy.name) == (algo, reward, policy)
    assert cfg.algo.search_space, f"{algo} declares no search space for sweeps"


@pytest.mark.parametrize("preset", [f"+{group}={name}" for group in ("experiment", "hparams_search")
                                    for name in group_options(group)])
def test_every_preset_composes_validates_and_its_space_parses(preset):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from rlsweep.cli import compose_config
    from rlsweep.sweep.space import declared_space
    from rlsweep.sweep.study import check_settings

    cfg = compose_config([preset], return_hydra_config=True)
    validate(cfg)
    check_settings(cfg.hydra.sweeper)
    assert declared_space("algo", cfg.algo.search_space)
    assert OverridesParser.create().parse_overrides([preset])


def test_default_config_is_the_solve_setup():
    """`python -m rlsweep` with no overrides trains the setup the solve benchmark measured."""
    cfg = compose_cfg()
    assert cfg.algo._target_ == "sbx.SAC" and cfg.env.robosuite.controller == "OSC_POSITION"
    assert (cfg.env.backend, cfg.trainer.total_timesteps) == ("fast", 300_000)
    assert (cfg.trainer.eval_freq, cfg.trainer.eval_episodes) == (10_000, 20)


def test_stable_interface_names_exist():
    cfg = compose_cfg()
    for path in ("seed", "env.horizon", "env.n_envs", "trainer.total_timesteps",
                 "trainer.eval_freq", "trainer.eval_episodes"):
        node = cfg
        for part in path.split("."):
            node = node[part]
        assert node is not None, path


@pytest.mark.parametrize("override,field,allowed", [
    ("algo.learning_rate=0", "algo.learning_rate", "> 0"),
    ("algo.learning_rate=-1e-3", "algo.learning_rate", "> 0"),
    ("algo.batch_size=0", "algo.batch_size", ">= 1"),
    ("algo.gamma=1.5", "algo.gamma", "<= 1"),
    ("+algo.n_epochs=3", "algo.n_epochs", "allowed:"),     # a PPO argument given to SAC
    ("trainer.total_timesteps=0", "trainer.total_timesteps", ">= 1"),
    ("trainer.eval_freq=-10", "trainer.eval_freq", ">= 1"),
    ("trainer.eval_episodes=0", "trainer.eval_episodes", ">= 1"),
    ("env.n_envs=0", "env.n_envs", ">= 1"),
    ("env.horizon=0", "env.horizon", ">= 1"),
    ("env.vec_env=threads", "env.vec_env", "dummy, subproc"),
    ("env.obs_keys=[cube_pos,nope]", "env.obs_keys", "gripper_to_cube_pos"),
    ("+env.robosuite.gravity=1", "env.robosuite.gravity", "control_freq"),
    ("policy.activation=sigmoid", "policy.activation", "tanh, relu"),
    ("logger.mode=sometimes", "logger.mode", "offline"),
    ("trainer.device=tpu", "trainer.device", "cpu"),
])
def test_validate_rejects_bad_values_naming_field_and_allowed(override, field, allowed):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(override))
    message = str(err.value)
    assert "\n" not in message and field in message and allowed in message, message


def test_a_workers_trial_check_keeps_the_value_checks_without_importing_targets():
    """A sweep's worker checks each trial's sampled config with targets=False: the value checks
    still hold, the target imports and key checks (done by the sweep for every cell) do not."""
    cfg = compose_cfg("algo=ppo")
    cfg.algo._target_ = "nosuch_module.NoSuchAlgo"
    with pytest.raises(ConfigError, match="algo"):
        validate(cfg)
    validate(cfg, targets=False)  # nothing imported, nothing refused
    cfg.algo.learning_rate = 0
    with pytest.raises(ConfigError, match="algo.learning_rate"):
        validate(cfg, targets=False)


@pytest.mark.slow
@pytest.mark.parametrize("args,field", [
    (["algo=foo"], "algo"),
    (["reward=dense,nope", "-m"], "reward"),
    (["trainer.total_timesteps=-5"], "trainer.total_timesteps"),
    (["trainer.total_timesteps=abc"], "trainer.total_timesteps"),
    (["trainer.nosuchkey=3"], "trainer.nosuchkey"),
    (["algo.learning_rate=0"], "algo.learning_rate"),
    (["env.obs_keys=[cube_pos,nope]"], "env.obs_keys"),
    (["+env.robosuite.nosuch=1"], "env.robosuite.nosuch"),
])
def test_cli_bad_input_is_one_line_and_builds_nothing(tmp_path, args, field):
    result = run_cli(*args, f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and field in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("override,group", [("hydra/launcher=nope", "hydra/launcher"),
                                             ("+hparams_search=nope", "hparams_search")])
def test_an_unknown_option_of_any_group_is_one_line_with_the_allowed_values(override, group, capsys):
    with pytest.raises(SystemExit):
        preflight([override])
    lines = capsys.readouterr().err.strip().splitlines()
    allowed = ", ".join(group_options(group))
    assert lines == [f"error: In '{'hydra/config' if group.startswith('hydra') else 'config'}': "
                     f"Could not find '{group}/nope': allowed values are {allowed}"]


@pytest.mark.parametrize("argv,primary", [
    ([], (CONF_DIR, "config")),
    (["--config-path", "/a/b", "--config-name", "run", "-m"], (Path("/a/b"), "run")),
    (["-cp=/a/b", "-cn=run", "seed=1"], (Path("/a/b"), "run")),
    (["--config-path", "../conf"], (CONF_DIR, "config")),  # relative to the package, as Hydra
])
def test_primary_config_is_the_one_the_command_line_names(argv, primary):
    assert primary_config(argv) == primary


def test_preflight_composes_the_primary_config_the_command_line_names(tmp_path, capsys):
    # rlsweep.confirm runs `--config-path <its jobs dir> --config-name config <its own group>=...`
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "one.yaml").write_text("# @package _global_\nseed: 7\n")
    (tmp_path / "config.yaml").write_text("defaults:\n  - job: one\n  - _self_\n")
    preflight(["--config-path", str(tmp_path), "--config-name", "config", "-m", "job=one"])
    with pytest.raises(SystemExit):
        preflight(["--config-path", str(tmp_path), "--config-name", "config", "-m", "job=two"])
    assert "job/two" in capsys.readouterr().err


@pytest.mark.parametrize("launcher", group_options("hydra/launcher"))
def test_every_launcher_option_composes_with_the_sweeper(launcher):
    from rlsweep.cli import compose_config

    cfg = compose_config([f"hydra/launcher={launcher}", "hydra/sweeper=rlsweep"],
                         return_hydra_config=True)
    from hydra.plugins.launcher import Launcher
    from hydra.utils import get_class

    assert issubclass(get_class(cfg.hydra.launcher._target_), Launcher)
    assert cfg.hydra.sweeper._target_.endswith("RLSweeper")


def test_slurm_launcher_preset_composes_on_hydras_submitit_launcher():
    from rlsweep.cli import compose_config

    cfg = compose_config(["hydra/launcher=submitit_slurm_lift"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.cpus_per_task == 2 and launcher.timeout_min == 720 and launcher.partition


@pytest.mark.parametrize("overrides,cpus", [
    ([], 2),                                                   # 1 env + 1 thread
    (["env.n_envs=4", "trainer.threads=2"], 6),                # 4 env processes + 2 threads
    (["hydra.sweeper.seeds_per_trial=3"], 6),                  # 3 seeds train in parallel
])
def test_slurm_preset_asks_for_the_cores_a_worker_uses(overrides, cpus):
    from rlsweep.cli import compose_config

    cfg = compose_config(["hydra/launcher=submitit_slurm_lift", *overrides],
                         return_hydra_config=True)
    assert cfg.hydra.launcher.cpus_per_task == cpus
