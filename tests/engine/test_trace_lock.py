"""While torch.fx traces a model, no other thread calls a module or reads that model's
parameters: each waits for the trace and then gets the right answer.

A trace is held open inside torch.fx's process-wide patches (a container's forward waits in
the tracing thread), and the other thread's work is run meanwhile. Without the lock that work
fails or reads ``Proxy`` objects for tensors (a heat map's cost estimate did, under load).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from timm.models._features_fx import create_feature_extractor
from torch import nn

from app.engine.cams.base import METHODS, CamOptions, LayerRun, cam_map
from app.engine.graph import TRACE_LOCK, traced
from app.engine.training import TrainConfig, TrainStep, train
from app.service import estimates
from tests.engine.tiny import tiny_model, tiny_samples

WAIT = 30.0  # seconds before a test gives up on an event that must come
STILL_WAITING = 0.3  # seconds that work must still be waiting while the trace is held


@contextmanager
def held_trace(module: nn.Module, nodes: list[str]) -> Iterator[None]:
    """``module`` (a tiny model) traced in another thread as the app traces (under the lock's
    exclusive side) and held inside the trace, in ``module.stem``'s forward, until the block
    ends; the trace must succeed. (Not through :func:`traced`, whose per-model lock would
    also keep that model's extractors and facts waiting.)"""
    inside, release = threading.Event(), threading.Event()
    stem = module.stem
    own_forward = stem.forward
    tracing_thread: list[int] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        if threading.get_ident() in tracing_thread:
            inside.set()
            release.wait(WAIT)
        return own_forward(x)

    def trace() -> None:
        tracing_thread.append(threading.get_ident())
        with TRACE_LOCK:
            create_feature_extractor(module, return_nodes={n: n for n in nodes})

    stem.forward = forward
    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(trace)
        try:
            assert inside.wait(WAIT), "the trace never reached the held forward"
            yield
        finally:
            release.set()
            del stem.forward
            done.result(WAIT)


def _waits_then_answers(work: Callable[[], Any], module: nn.Module) -> Any:
    """Run ``work`` while a trace of ``module`` is held: it must still be waiting after
    :data:`STILL_WAITING`, and answer once the trace ends."""
    with ThreadPoolExecutor(1) as pool:
        with held_trace(module, ["down", "mix"]):
            answer: Future[Any] = pool.submit(work)
            finished = threading.Event()
            answer.add_done_callback(lambda _: finished.set())
            assert not finished.wait(STILL_WAITING), "it ran during the trace"
        return answer.result(WAIT)


def test_the_cost_estimate_reads_weights_not_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    expected = estimates.model_cost(model)
    monkeypatch.setattr(estimates, "_COSTS", {})  # the layer shapes stay cached
    assert _waits_then_answers(lambda: estimates.model_cost(model), model.module) == expected


def test_a_stale_folded_extractor_is_refolded_after_the_trace() -> None:
    model = tiny_model().module
    folded = traced(model).extractor(["mix"], folded=True)
    x = torch.randn(2, 3, 40, 36)
    with torch.no_grad():
        model.bn.weight.mul_(2.0)  # a new version: the next use refolds
        expected = model.mix(model.bn(model.down(model.act(model.stem(x)))))
    hooked = _waits_then_answers(lambda: folded.module("down"), model)
    assert hooked is not model.down  # the folded convolution, made from real weights
    with torch.inference_mode():
        torch.testing.assert_close(folded(x)["mix"], expected, rtol=1e-5, atol=1e-5)


def test_cam_reads_the_head_weights_after_the_trace() -> None:
    model = tiny_model().module
    x = torch.randn(1, 3, 48, 48)
    expected, target = cam_map(model, x, "out", "cam")
    run = _layer_run(model, x, target)
    cam = METHODS.lookup("cam")(CamOptions())

    def compute() -> torch.Tensor:
        with torch.no_grad():
            return cam.compute(run)

    torch.testing.assert_close(_waits_then_answers(compute, model), expected)


def _layer_run(model: nn.Module, x: torch.Tensor, target: int | None) -> LayerRun:
    with torch.no_grad():
        nodes = traced(model).extractor(["out", "fc"])(x)
    return LayerRun(model, x, "out", nodes["out"][0], nodes["fc"][0], target)


def test_training_steps_wait_for_a_trace_of_another_model() -> None:
    """Every module call of another model, too: torch.fx patches ``nn.Module.__call__``."""
    trained, other = tiny_model(), tiny_model().module
    first_step, trace_held, second_step = threading.Event(), threading.Event(), threading.Event()

    def on_step(step: TrainStep) -> None:
        if step.step == 1:
            first_step.set()
            assert trace_held.wait(WAIT)
        else:
            second_step.set()

    config = TrainConfig(layer="out", epochs=1, lr=1e-2, batch_size=4, crop_size=32, seed=1)
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(train, trained, tiny_samples(), config, on_step=on_step)
        assert first_step.wait(WAIT)
        with held_trace(other, ["down", "mix"]):
            trace_held.set()
            assert not second_step.wait(STILL_WAITING), "a training step ran during the trace"
        curve = result.result(WAIT).curve
    assert len(curve) == 3 and all(torch.isfinite(torch.tensor(s.loss)) for s in curve)
    x = torch.randn(1, 3, 48, 48)
    with torch.inference_mode():  # the held trace recorded nothing of the training's calls
        plain = other.mix(other.bn(other.down(other.act(other.stem(x)))))
        torch.testing.assert_close(traced(other).extractor(["mix"])(x)["mix"], plain)


def test_a_thread_holding_one_side_cannot_take_the_other() -> None:
    with TRACE_LOCK.shared(), TRACE_LOCK.shared():  # re-entrant
        with pytest.raises(RuntimeError, match="trace inside a shared use"), TRACE_LOCK:
            pass
    with TRACE_LOCK:
        with pytest.raises(RuntimeError, match="use of a model inside a trace"):
            with TRACE_LOCK.shared():
                pass
        with pytest.raises(RuntimeError, match="trace inside a trace"), TRACE_LOCK:
            pass
    with TRACE_LOCK.shared():  # released after each of the above
        pass


def test_a_waiting_trace_goes_before_new_shared_uses() -> None:
    """Shared uses that overlap one another would never leave the lock free: a trace that
    waits goes before other threads' new shared uses (the holding thread goes on)."""
    first_done, second_done, traced_once = threading.Event(), threading.Event(), threading.Event()
    order: list[str] = []

    def trace() -> None:
        with TRACE_LOCK:
            order.append("trace")
        traced_once.set()

    def use_again() -> None:
        with TRACE_LOCK.shared():
            order.append("shared")
        first_done.set()

    with ThreadPoolExecutor(3) as pool:
        with TRACE_LOCK.shared():  # this thread's hold, then another thread's after it
            tracing = pool.submit(trace)
            assert not traced_once.wait(STILL_WAITING)  # waits for this hold
            again = pool.submit(use_again)
            assert not first_done.wait(STILL_WAITING), "a new shared use went before the trace"
            with TRACE_LOCK.shared():  # a thread already holding one goes on
                second_done.set()
        tracing.result(WAIT)
        again.result(WAIT)
    assert second_done.is_set() and order == ["trace", "shared"]
