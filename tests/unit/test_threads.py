"""The build's thread choice (build/threads.py) and how the runtime applies it (threads_for)."""

import os

import pytest

from generator.variants import threads
from generator.runtime.model import CHANNELS_LAST, MEASURED_THREADS, MEMORY_FORMAT, threads_for
from generator.spec import ModelSpec

CORES = len(os.sched_getaffinity(0))


C = threads.CONTIGUOUS


def test_a_model_that_does_not_scale_takes_one_thread():
    # a tiny MLP: two threads are no faster (here a little slower) at either batch size
    c = threads.choose({C: {"1": {"1": 0.011, "8": 0.013}, "2": {"1": 0.011, "8": 0.014}}})
    assert (c.threads, c.parameter, c.memory_format) == (1, "1", C)
    assert c.parameters == {MEASURED_THREADS: "1"}
    assert "1 intra-op thread(s)" in c.note() and c.record()["timings_ms"][C]["2"]["8"] == 0.014


def test_a_model_that_scales_takes_the_instances_share():
    # resnet18 measured here: 25.9 / 173.8 ms with 1 thread, 14.9 / 106.2 ms with 2
    c = threads.choose({C: {"1": {"1": 25.91, "8": 173.81}, "2": {"1": 14.90, "8": 106.16}}})
    assert (c.threads, c.parameter) == (2, threads.SHARE)


def test_a_conv_net_takes_channels_last_weights_when_clearly_faster():
    # resnet18 here: channels_last weights 10-25 % faster at batch 1 / 8 with 2 threads
    timings = {C: {"1": {"1": 25.9, "8": 197.0}, "2": {"1": 14.8, "8": 110.8}},
               CHANNELS_LAST: {"1": {"1": 22.6, "8": 147.8}, "2": {"1": 13.4, "8": 83.4}}}
    c = threads.choose(timings)
    assert (c.threads, c.memory_format) == (2, CHANNELS_LAST)
    assert c.parameters == {MEASURED_THREADS: threads.SHARE, MEMORY_FORMAT: CHANNELS_LAST}
    assert "channels_last" in c.note()
    # a layout only a few % faster is not worth it: the default stays
    timings[CHANNELS_LAST] = {t: {b: ms * 0.97 for b, ms in row.items()}
                              for t, row in timings[C].items()}
    assert threads.choose(timings).memory_format == C


def test_more_threads_must_be_clearly_faster():
    # 3 threads 5 % faster than 2: within the tolerance, so 2 (of 4 measured)
    c = threads.choose({C: {"1": {"1": 10.0}, "2": {"1": 5.5}, "3": {"1": 5.3}, "4": {"1": 5.25}}})
    assert (c.threads, c.parameter) == (2, "2")


def test_a_single_count_measured_is_that_count():
    assert threads.choose({C: {"1": {"1": 3.0}}}).parameter == "1"


@pytest.mark.parametrize("spec,planned", [
    (ModelSpec(name="m"), True),
    (ModelSpec(name="m", threads=2), False),  # the user chose
    (ModelSpec(name="m", cpu_instances=0, gpu_instances=1), False),
])
def test_what_the_build_times(spec, planned):
    plan = threads.plan(spec)
    assert (plan is not None) == planned
    if plan:
        assert plan["threads"] == list(range(1, max(1, CORES // spec.cpu_instances) + 1))
        assert plan["batch_sizes"] == [1, 8]  # batch 1 and the largest the batcher forms


def test_the_runtime_caps_its_share_by_the_measured_count():
    one = [{"kind": "KIND_CPU", "count": 1}]
    assert threads_for({}, one) == CORES
    assert threads_for({MEASURED_THREADS: "1"}, one) == 1
    assert threads_for({MEASURED_THREADS: "share"}, one) == CORES
    assert threads_for({MEASURED_THREADS: str(CORES + 8)}, one) == CORES  # never above the share
    assert threads_for({MEASURED_THREADS: "1", "threads": "3"}, one) == 3  # --threads wins
    many = [{"kind": "KIND_CPU", "count": CORES * 2}]
    assert threads_for({MEASURED_THREADS: "share"}, many) == 1
