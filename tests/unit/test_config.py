import pytest

from generator.repository.config import (Engine, build_header, config_text, model_config,
                                         parse_config)
from generator.spec import ModelSpec, TensorSpec


def _spec(**kw):
    base = dict(name="m", inputs=(TensorSpec("x", "float32", (3, -1)),
                                  TensorSpec("ids", "int64", (-1,))),
                outputs=(TensorSpec("y", "float32", (5,)),))
    base.update(kw)
    return ModelSpec(**base)


def test_model_config_has_instance_groups_and_reads_back_as_written():
    spec = _spec(cpu_instances=2, gpu_instances=2, gpus=(0, 1), preferred_batch_sizes=(4, 8),
                 max_queue_delay_us=250)
    cfg = model_config(spec, "m_python", Engine("backend", "python"), {"k": "v"})
    text = config_text(cfg, build_header("python"))
    assert parse_config(text) == cfg and text.startswith("# Written by gen-repo")
    assert cfg.name == "m_python" and cfg.backend == "python" and cfg.max_batch_size == 8
    assert [i.name for i in cfg.input] == ["x", "ids"]
    assert list(cfg.input[0].dims) == [3, -1]
    kinds = {g.kind: g for g in cfg.instance_group}
    assert kinds[1].count == 2 and list(kinds[1].gpus) == [0, 1]  # KIND_GPU
    assert kinds[2].count == 2  # KIND_CPU
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 250
    assert cfg.parameters["k"].string_value == "v"


def test_no_batching_means_no_dynamic_batcher():
    cfg = model_config(_spec(max_batch_size=0), "m_libtorch",
                       Engine("platform", "pytorch_libtorch"), {})
    assert cfg.max_batch_size == 0 and "dynamic_batching" not in config_text(cfg, "x")
    assert not cfg.HasField("dynamic_batching") and cfg.platform == "pytorch_libtorch"


def test_dynamic_batching_can_be_disabled():
    cfg = model_config(_spec(dynamic_batching=False), "m", Engine("backend", "python"), {})
    assert not cfg.HasField("dynamic_batching")


def test_queue_policy_rejects_beyond_limits():
    cfg = model_config(_spec(max_queue_size=4, queue_timeout_us=1000), "m",
                    Engine("backend", "python"), {})
    policy = cfg.dynamic_batching.default_queue_policy
    assert policy.max_queue_size == 4 and policy.default_timeout_microseconds == 1000
    assert policy.timeout_action == 0  # REJECT


@pytest.mark.parametrize("cpu,gpu,threads,sharing,intra", [
    (1, 0, 0, None, None),  # one instance: the backend's default, all cores
    (2, 0, 0, "true", "auto"),  # the cores split between the instances of the process
    (3, 0, 4, "true", "4"),  # --threads wins
    (1, 2, 0, "true", None),  # two instances on each GPU share their weights
])
def test_libtorch_parameters_share_weights_and_split_the_cores(cpu, gpu, threads, sharing,
                                                               intra):
    from generator.runtime.model import threads_for
    from generator.variants.libtorch import backend_parameters

    spec = ModelSpec(name="m", cpu_instances=cpu, gpu_instances=gpu, threads=threads)
    params, notes = backend_parameters(spec)
    assert params["INFERENCE_MODE"] == "true" and "INTER_OP_THREAD_COUNT" not in params
    assert params.get("ENABLE_WEIGHT_SHARING") == sharing
    if intra == "auto":
        intra = str(threads_for({}, [{"kind": "KIND_CPU", "count": cpu}]))
        assert notes and "whole server process" in notes[0]
    assert params.get("INTRA_OP_THREAD_COUNT") == intra
    pinned, _ = backend_parameters(spec, pin_threads=True)  # bench: always written
    assert pinned["INTRA_OP_THREAD_COUNT"] == (intra or str(threads_for(
        {}, [{"kind": "KIND_CPU", "count": cpu}])))


@pytest.mark.parametrize("changes", [
    {}, {"cpu_instances": 3, "preferred_batch_sizes": (2, 4), "max_queue_delay_us": 500},
    {"gpu_instances": 2, "gpus": (0, 1), "cpu_instances": 0},
    {"max_batch_size": 0}, {"dynamic_batching": False},
    {"max_queue_size": 4, "queue_timeout_us": 1000},
])
def test_the_record_leaves_out_what_the_config_says_and_the_spec_reads_it_back(changes):
    from generator.repository.config import CONFIG_FIELDS, config_facts, record_spec

    spec = _spec(**changes)
    stored = record_spec(spec)
    assert not set(CONFIG_FIELDS) & set(stored)
    config = model_config(spec, "m", Engine("backend", "python"), {})
    assert config_facts(config, ModelSpec.from_dict(stored)) == spec
    config.instance_group[0].count = 5  # what bench or tune changes, the spec follows
    assert config_facts(config, ModelSpec.from_dict(stored)).cpu_instances == (
        5 if not spec.gpu_instances else 0)
