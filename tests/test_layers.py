"""The fast test layer stays in process: a test not marked slow cannot start a command-line app."""

import subprocess
import sys

import pytest


def test_a_fast_test_cannot_start_the_command_line_app():
    with pytest.raises(RuntimeError, match="mark it @pytest.mark.slow"):
        subprocess.run([sys.executable, "-m", "rlsweep", "--help"], capture_output=True)
    with pytest.raises(RuntimeError, match="rlsweep.confirm"):
        subprocess.Popen([sys.executable, "-m", "rlsweep.confirm", "--help"])
    # Other processes (a worker's trainer, ffmpeg, psql) stay allowed.
    assert subprocess.run([sys.executable, "-m", "rlsweep.sweep.seeds", "--help"],
                          capture_output=True).returncode is not None
    subprocess.run([sys.executable, "-c", "pass"], check=True)


@pytest.mark.slow
def test_a_slow_test_may_start_it():
    done = subprocess.run([sys.executable, "-m", "rlsweep", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "algo" in done.stdout
