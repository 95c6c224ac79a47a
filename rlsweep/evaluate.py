"""Reload a finished run and replay it: `python -m rlsweep.evaluate run_dir=DIR episodes=10`.

DIR is a run dir or a sweep's trial folder (<sweep dir>/<cell>/trial_NNN).

Options (key=value): run_dir (required), episodes (10), video (false: true writes video.mp4 of
the first episode, rendered offscreen with MUJOCO_GL=egl), seed (the run's evaluation seed),
deterministic (true). Results are printed and written to DIR/eval.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # must precede any mujoco import; osmesa is absent here
# Frames are rendered offscreen (rgb_array), never in a window: SDL (pygame, which gymnasium's
# classic-control envs draw with) would otherwise look for a display and print its own
# "error: XDG_RUNTIME_DIR is invalid or not set", which reads as one of ours.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

from rlsweep.arguments import KeyValueParser
from rlsweep.config import first_line

PARSER = KeyValueParser(
    prog="python -m rlsweep.evaluate",
    usage="python -m rlsweep.evaluate run_dir=DIR [episodes=N] [video=true|false] [seed=S] "
          "[deterministic=true|false]",
    description=__doc__.split("\n\n", 1)[1],
    options={"run_dir": (None, "a run dir or a sweep's trial folder (required)"),
             "episodes": ("10", "episodes to run"),
             "video": ("false", "write video.mp4 of the first episode"),
             "seed": (None, "evaluation seed (default: the run's)"),
             "deterministic": ("true", "deterministic actions")})


def parse_args(argv: list[str]) -> dict[str, str]:
    """key=value arguments, with one-line errors naming the bad field (ValueError)."""
    args = vars(PARSER.parse(argv))
    if not args["run_dir"]:
        raise ValueError("run_dir is required: run_dir=<a run dir holding model.zip>")
    run_dir = Path(args["run_dir"])
    if not (run_dir / "model.zip").exists():
        raise ValueError(f"run_dir={run_dir} is invalid: it has no model.zip")
    if run_config(run_dir) is None:
        raise ValueError(f"run_dir={run_dir} is invalid: it has no .hydra/config.yaml "
                         "(a run) or config.yaml (a sweep trial)")
    if args["seed"] is not None and not args["seed"].lstrip("-").isdigit():
        raise ValueError(f"seed={args['seed']!r} is invalid: must be an integer")
    if not args["episodes"].isdigit() or int(args["episodes"]) < 1:
        raise ValueError(f"episodes={args['episodes']!r} is invalid: must be an integer >= 1")
    for flag in ("video", "deterministic"):
        if args[flag] not in ("true", "false"):
            raise ValueError(f"{flag}={args[flag]!r} is invalid: allowed values are true, false")
    return args


def run_config(run_dir: Path) -> Path | None:
    """The composed config of a run (Hydra's .hydra/config.yaml) or of a sweep trial."""
    return next((p for p in (run_dir / ".hydra" / "config.yaml", run_dir / "config.yaml")
                 if p.exists()), None)


class ModelFileError(ValueError):
    """A run's model.zip that cannot be loaded; the message names the file."""


def load_policy(run_dir: Path, seed: int | None = None, render: bool = False):
    """The saved model of `run_dir` and a one-env Lift to replay it on (VecNormalize restored).

    Returns (model, env, seed); `seed` defaults to the run's own evaluation seed.
    """
    from omegaconf import OmegaConf
    from stable_baselines3.common.vec_env import VecNormalize

    from rlsweep.algos import algo_class, configure_jax, is_jax_class
    from rlsweep.train import EVAL_SEED_OFFSET, make_vec_env

    cfg = OmegaConf.load(run_config(run_dir))
    seed = cfg.seed + EVAL_SEED_OFFSET if seed is None else seed
    env = make_vec_env(cfg, 1, seed, render_mode="rgb_array" if render else None)
    if (run_dir / "vecnormalize.pkl").exists():
        env = VecNormalize.load(str(run_dir / "vecnormalize.pkl"), env)
        env.training, env.norm_reward = False, False
    if is_jax_class(cfg.algo._target_):
        configure_jax(cfg.trainer.threads)
    try:
        model = algo_class(cfg.algo).load(run_dir / "model.zip", device="cpu")
    except Exception as err:  # cut short, not a zip, another algo's or SB3 version's model
        env.close()
        raise ModelFileError(f"{run_dir / 'model.zip'} cannot be loaded as a "
                             f"{cfg.algo._target_} model: {first_line(err)}") from None
    return model, env, seed


def evaluate_run(run_dir: Path, episodes: int, video: bool = False, seed: int | None = None,
                 deterministic: bool = True) -> dict:
    """Replay the saved model of `run_dir` for `episodes` episodes; optionally film the first."""
    from omegaconf import OmegaConf

    from rlsweep.evaluation import run_episodes

    model, env, seed = load_policy(run_dir, seed, render=video)
    reports_success = bool(OmegaConf.load(run_config(run_dir)).env.reports_success)
    frames = []
    def film_first_episode(episode: int) -> None:
        if video and episode == 0:
            frames.append(env.get_images()[0])

    result = run_episodes(lambda obs: model.predict(obs, deterministic=deterministic)[0],
                          env, episodes, on_step=film_first_episode,
                          reports_success=reports_success)  # Pendulum has none: null, not 0
    env.close()
    report = {"run_dir": str(run_dir), "episodes": episodes, "seed": seed, **result.to_dict()}
    if video:
        import imageio

        path = run_dir / "video.mp4"
        # the first episode's last image is already the next episode's start (auto-reset)
        imageio.mimwrite(path, frames[:-1], fps=env.metadata.get("render_fps", 20))
        report["video"] = str(path)
    (run_dir / "eval.json").write_text(json.dumps(report, indent=2))
    return report


def film_strip(run_dir: Path, path: Path, frames: int = 6, seed: int | None = None) -> bool | None:
    """A PNG of `frames` evenly spaced frames of one deterministic episode of the saved policy,
    side by side; returns whether the episode succeeded (lifted the cube), None on an env
    with no notion of success."""
    import imageio
    import numpy as np
    from omegaconf import OmegaConf

    from rlsweep.evaluation import run_episodes

    model, env, _ = load_policy(run_dir, seed, render=True)
    shots = []
    result = run_episodes(lambda obs: model.predict(obs, deterministic=True)[0], env, 1,
                          on_step=lambda episode: episode == 0 and shots.append(env.get_images()[0]),
                          reports_success=bool(OmegaConf.load(run_config(run_dir)).env.reports_success))
    env.close()
    shots = shots[:-1]  # the episode's last image is already the next episode's start (auto-reset)
    picks = np.linspace(0, len(shots) - 1, frames).round().astype(int)
    imageio.imwrite(path, np.concatenate([shots[i] for i in picks], axis=1))
    return None if result.successes is None else result.successes[0]


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        report = evaluate_run(Path(args["run_dir"]), int(args["episodes"]),
                              args["video"] == "true",
                              None if args["seed"] is None else int(args["seed"]),
                              args["deterministic"] == "true")
    except ModelFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    success = report["success_rate"]
    print(f"{report['episodes']} episodes: "
          + ("" if success is None else f"success_rate={success:.2f} ")
          + f"mean_return={report['mean_return']:.2f} ± {report['std_return']:.2f}"
          + (f" video={report['video']}" if "video" in report else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
