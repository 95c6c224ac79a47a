"""W&B mode: offline unless a key is found; WANDB_MODE always wins. (No network is used.)"""

from __future__ import annotations

import socket

import pytest

from rlsweep.tracking import run_state, wandb_mode

AUTO = {"name": "wandb", "mode": "auto"}


@pytest.fixture
def no_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    # `auto` goes online only if the W&B server takes a connection: a listening local socket
    # stands in for the W&B cloud (nothing is sent to it).
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        yield


def test_auto_is_offline_without_a_key(no_key):
    assert wandb_mode(AUTO) == "offline"


def test_auto_is_online_with_a_key_in_the_environment(no_key, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_mode(AUTO) == "online"


def test_auto_is_online_with_a_key_in_netrc(no_key, tmp_path):
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    assert wandb_mode(AUTO) == "online"


def test_wandb_mode_variable_wins(no_key, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode(AUTO) == "offline"
    assert wandb_mode({"name": "wandb", "mode": "disabled"}) == "offline"


@pytest.mark.parametrize("status,detail,state", [
    ("ok", "", "complete"), ("pruned", "at env step 80", "pruned"),
    ("diverged", "non-finite rewards at env step 51", "failed")])
def test_run_state_follows_the_run_status(status, detail, state):
    from rlsweep.run_result import RunResult, RunStatus

    result = RunResult(RunStatus(status), detail, 0.0, 0.0, 0.0, 80, 1.0, 80.0)
    assert run_state(result) == state
    assert run_state(None) == "failed"  # the run raised
