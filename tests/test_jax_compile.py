"""JAX compile time is measured apart from training speed: each compile stage counted once."""

from __future__ import annotations

import time

import pytest

from rlsweep.algos import CompileSpans, configure_jax, jax_compile_seconds


@pytest.mark.parametrize("spans,seconds", [
    ([], 0.0),
    ([(0.0, 1.0), (2.0, 3.0)], 2.0),                  # two programs, one after the other
    ([(2.0, 2.5), (1.0, 3.0)], 2.0),                  # an inner jit traced inside the outer one
    ([(0.0, 1.0), (2.0, 2.5), (2.6, 2.8), (1.5, 3.0)], 2.5),  # the outer span replaces both
    ([(1.0, 2.0), (1.0, 3.0)], 2.0),                  # same start: nested, not added
    ([(2.0, 2.5), (2.1, 3.0)], 1.0),                  # outer start placed late: still merged
    ([(0.0, 1.0), (1.0, 2.0)], 2.0),                  # touching, not overlapping
    ([(1.0, 0.9)], 0.0),                              # a negative duration counts nothing
])
def test_spans_reported_at_their_end_are_counted_once(spans, seconds):
    compiling = CompileSpans()
    for start, end in spans:
        compiling.add(start, end)
    assert compiling.seconds == pytest.approx(seconds)


def test_real_compiles_are_timed_and_never_exceed_the_wall_time_they_took():
    configure_jax(threads=1)
    import jax
    import jax.numpy as jnp

    @jax.jit
    def inner(x):
        return jnp.tanh(x) * 3.0

    @jax.jit
    def outer(x):  # traces `inner` inside its own trace: nested events
        return inner(x).sum() + jnp.cos(x).mean()

    x = jnp.arange(7.0) / 11.0
    events = []  # the raw events, nested ones included
    listener = lambda event, duration, **_: events.append(duration) if "/compile/" in event else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        before = jax_compile_seconds()
        started = time.perf_counter()
        outer(x).block_until_ready()
        wall = time.perf_counter() - started
        compiled = jax_compile_seconds() - before
    finally:
        jax._src.monitoring._unregister_event_duration_listener_by_callback(listener)
    assert 0.0 < compiled <= wall
    assert compiled < sum(events)  # `inner`'s trace ran inside `outer`'s and is counted once
    y = x + 1.0
    again = jax_compile_seconds()
    outer(y).block_until_ready()  # same shapes and types: no compile
    assert jax_compile_seconds() == again
