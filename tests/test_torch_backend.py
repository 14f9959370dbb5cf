"""The torch backend beyond conformance: dtypes, devices, purity, no autograd, noise, compile."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import rtrrl  # noqa: E402
import rtrrl_spec  # noqa: E402
from rtrrl.backends.base import Backend  # noqa: E402
from rtrrl.backends.torch import CompiledTorchBackend, TorchBackend  # noqa: E402
from rtrrl_spec.optim import clip_by_global_norm  # noqa: E402

pytestmark = pytest.mark.torch

CONFIGS = [
    rtrrl_spec.Config(obs_dim=3, n_actions=3, n_hidden=5),
    rtrrl_spec.Config(obs_dim=2, n_actions=2, n_hidden=4, jacobian="rtrl", trace="dutch"),
    rtrrl_spec.Config(
        obs_dim=2,
        action_dim=2,
        action_low=(-1.0, 0.0),
        action_high=(1.0, 2.0),
        n_hidden=4,
        feedback_alignment=False,
        reward_rate_lr=0.01,
    ),
    rtrrl_spec.Config(obs_dim=3, action_dim=1, body="linear", meta_rl=False),
    rtrrl_spec.Config(obs_dim=3, n_actions=3, n_hidden=5, body="lru", entropy_rate=0.2),
    rtrrl_spec.Config(
        obs_dim=2, action_dim=2, n_hidden=4, body="lru", feedback_alignment=False, trace="dutch"
    ),
    rtrrl_spec.Config(obs_dim=3, n_actions=3, n_hidden=5, body="lru", freeze_rnn=True),
    rtrrl_spec.Config(obs_dim=2, action_dim=1, n_hidden=4, jacobian="rtrl", freeze_rnn=True),
]
FROZEN = [c for c in CONFIGS if c.freeze_rnn]
LRU = CONFIGS[4]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def be() -> TorchBackend:
    backend = rtrrl.use("torch")
    assert isinstance(backend, TorchBackend)
    return backend


def _inputs(be: TorchBackend, config: rtrrl_spec.Config, B: int, dtype: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (B, config.obs_dim)).astype(dtype)
    reward = rng.uniform(-1, 1, B).astype(dtype)
    done = rng.random(B) < 0.3
    noise = rtrrl_spec.draw_noise(config, B, rng, dtype)
    return [be.from_numpy(a) for a in (obs, reward, done, noise)]


def _warm_agent(be: TorchBackend, config: rtrrl_spec.Config, B: int, dtype: str):
    """An agent after a few steps, so traces, Jacobians and moments are non-zero."""
    agent = be.init(config, B, seed=1, dtype=dtype)
    for t in range(3):
        obs, reward, done, noise = _inputs(be, config, B, dtype, seed=t)
        if t == 0:
            done = torch.ones_like(done)
        agent, _, _ = be.step(config, agent, obs, reward, done, noise)
    return agent


def test_satisfies_protocol(be: TorchBackend) -> None:
    assert isinstance(be, Backend)
    assert be.name == "torch"
    assert be.supported_dtypes == ("float32", "float64")
    assert be.version() == torch.__version__
    assert be.device() == "cpu"


@pytest.mark.parametrize("dtype", ["float64", "float32", "int32", "bool"])
def test_numpy_round_trip_is_exact(be: TorchBackend, dtype: str) -> None:
    rng = np.random.default_rng(0)
    original = (rng.standard_normal((2, 3)) * 1e3).astype(dtype)
    tensor = be.from_numpy(original)
    assert str(tensor.dtype) == f"torch.{dtype}"
    assert tensor.device.type == "cpu"
    back = be.to_numpy({"a": tensor})["a"]
    assert back.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back, original)
    # Copies both ways: writing into one side never shows on the other.
    kept = original.copy()
    original[...] = 0
    np.testing.assert_array_equal(tensor.numpy(), kept)
    back[...] = 0
    np.testing.assert_array_equal(tensor.numpy(), kept)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_agent_round_trip_cpu_numpy_cpu_bit_exact(be: TorchBackend, config, dtype: str) -> None:
    agent = _warm_agent(be, config, 2, dtype)
    again = be.from_numpy(be.to_numpy(agent))
    assert list(again) == list(agent)
    for name, tensor in agent.items():
        assert again[name].dtype == tensor.dtype, name
        assert torch.equal(again[name], tensor), name
    numpy_agent = be.to_numpy(agent)
    rtrrl_spec.validate_agent(config, numpy_agent)
    assert numpy_agent["count_td"].dtype == np.int32
    if config.discrete:
        assert numpy_agent["a_prev"].dtype == np.int32


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_to_device_keeps_dtypes_and_values(be: TorchBackend, dtype: str) -> None:
    config = CONFIGS[0]
    agent = _warm_agent(be, config, 2, dtype)
    moved = TorchBackend.to_device(agent, "meta")  # a real second device without a GPU
    assert all(t.device.type == "meta" for t in moved.values())
    assert all(moved[k].dtype == agent[k].dtype for k in agent)
    back = TorchBackend.to_device(TorchBackend.to_device(agent, "cpu"), "cpu")
    assert all(torch.equal(back[k], agent[k]) for k in agent)


@pytest.mark.parametrize("config", FROZEN + [CONFIGS[0]])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_frozen_body_parameters_never_change(be: TorchBackend, config, dtype: str) -> None:
    """A frozen body steps h but is never updated; the heads still learn. (The trained CT-RNN
    case checks the test itself: its body parameters do move.)"""
    agent = be.init(config, 3, seed=2, dtype=dtype)
    body = rtrrl_spec.body_params(config)
    start = {k: agent[k].clone() for k in body}
    h_name = "h" if config.body == "ctrnn" else "h_re"
    h_moved = False
    for t in range(6):
        obs, reward, done, noise = _inputs(be, config, 3, dtype, seed=t)
        new, _, info = be.step(config, agent, obs, reward, done, noise)
        h_moved |= not torch.equal(new[h_name], agent[h_name])
        agent = new
    changed = [k for k in body if not torch.equal(agent[k], start[k])]
    assert h_moved
    assert not torch.equal(agent["W_A"], be.init(config, 3, seed=2, dtype=dtype)["W_A"])
    if config.freeze_rnn:
        assert changed == []
        assert not any(k.startswith(("J_", "count_rnn")) for k in agent)
        assert "grad_norm_rnn" not in info
        assert set(agent) == set(rtrrl_spec.layout(config, 3))
    else:
        assert changed == list(body)


def _lru_agent_on_device_and_back(device: str, dtype: str) -> None:
    """A warm LRU agent from the reference, onto ``device`` and back to NumPy: bit-exact."""
    config = LRU
    agent = rtrrl_spec.init(config, 3, seed=4, dtype=dtype)
    rng = np.random.default_rng(0)
    for _ in range(3):  # non-zero state, sensitivities, traces and moments
        obs = rng.uniform(-1, 1, (3, config.obs_dim))
        noise = rtrrl_spec.draw_noise(config, 3, rng, dtype)
        agent, _, _ = rtrrl_spec.step(config, agent, obs, rng.uniform(-1, 1, 3), [0, 1, 0], noise)
    assert all(np.any(agent[k] != 0) for k in ("h_re", "J_in_im", "e_C_im", "mu_log_nu"))
    be = TorchBackend(device)
    on_device = be.from_numpy(agent)
    assert all(t.device.type == torch.device(device).type for t in on_device.values())
    back = be.to_numpy(TorchBackend.to_device(on_device, "cpu"))
    assert list(back) == list(agent)
    for name, array in agent.items():
        assert back[name].dtype == array.dtype, name
        np.testing.assert_array_equal(back[name], array, err_msg=name)
    rtrrl_spec.validate_agent(config, back)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lru_agent_round_trip_cpu_bit_exact(dtype: str) -> None:
    _lru_agent_on_device_and_back("cpu", dtype)


@CUDA
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lru_agent_round_trip_cuda_bit_exact(dtype: str) -> None:
    _lru_agent_on_device_and_back("cuda", dtype)


@CUDA
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_round_trip_bit_exact(dtype: str) -> None:
    cpu, gpu = TorchBackend("cpu"), TorchBackend("cuda")
    config = CONFIGS[1]
    agent = _warm_agent(cpu, config, 2, dtype)
    on_gpu = TorchBackend.to_device(agent, gpu.device())
    assert all(t.device.type == "cuda" for t in on_gpu.values())
    numpy_agent = gpu.to_numpy(on_gpu)
    for name, tensor in agent.items():
        np.testing.assert_array_equal(numpy_agent[name], tensor.numpy(), err_msg=name)


@pytest.mark.parametrize("config", CONFIGS)
def test_outputs_carry_no_autograd_graph(be: TorchBackend, config) -> None:
    agent = _warm_agent(be, config, 3, "float32")
    # Even parameters that ask for gradients produce no graph: the step's gradients are formulas.
    agent = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in agent.items()}
    new, action, info = be.step(config, agent, *_inputs(be, config, 3, "float32"))
    # Returned as given, unchanged: the feedback matrices and a frozen body's parameters.
    unchanged = {"B_A", "B_C"}
    if config.freeze_rnn:
        unchanged |= set(rtrrl_spec.body_params(config))
    for tree in (new, info, {"action": action}):
        for name, tensor in tree.items():
            if name in unchanged:
                assert tensor is agent[name], name
                continue
            assert not tensor.requires_grad, name
            assert tensor.grad_fn is None, name


@pytest.mark.parametrize("config", CONFIGS)
def test_step_does_not_modify_its_inputs(be: TorchBackend, config) -> None:
    agent = _warm_agent(be, config, 3, "float64")
    before = {k: v.clone() for k, v in agent.items()}
    inputs = _inputs(be, config, 3, "float64", seed=5)
    inputs_before = [x.clone() for x in inputs]
    new, _, _ = be.step(config, agent, *inputs)
    for name, tensor in agent.items():
        assert torch.equal(tensor, before[name]), f"{name} was modified in place"
    for x, y in zip(inputs, inputs_before, strict=True):
        assert torch.equal(x, y)
    # The step did change the state, so the check above compared something that moved.
    assert not torch.equal(new["W_A"], agent["W_A"])
    assert new["e_W_A"].data_ptr() != agent["e_W_A"].data_ptr()


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_step_matches_reference(be: TorchBackend, config, dtype: str) -> None:
    """A smoke check in this test file; the conformance suite is the real check."""
    agent = _warm_agent(be, config, 2, dtype)
    inputs = _inputs(be, config, 2, dtype, seed=9)
    new, action, info = be.step(config, agent, *inputs)
    ref_new, ref_action, ref_info = rtrrl_spec.step(
        config, be.to_numpy(agent), *[be.to_numpy(x) for x in inputs]
    )
    rtol = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(be.to_numpy(action), ref_action, rtol=rtol, atol=rtol)
    for name in ref_new:
        np.testing.assert_allclose(
            be.to_numpy(new[name]), ref_new[name], rtol=rtol, atol=rtol, err_msg=name
        )
    assert set(ref_info) <= set(info)
    for name in ref_info:
        assert be.to_numpy(info[name]).dtype == ref_info[name].dtype, name


def test_generator_is_deterministic_and_noise_in_domain(be: TorchBackend) -> None:
    discrete, continuous = CONFIGS[0], CONFIGS[2]
    for dtype in ("float32", "float64"):
        a, _ = be.draw_noise(discrete, 4096, be.rng(3), dtype)
        b, _ = be.draw_noise(discrete, 4096, be.rng(3), dtype)
        c, _ = be.draw_noise(discrete, 4096, be.rng(4), dtype)
        assert a.dtype == getattr(torch, dtype)
        assert a.shape == (4096, discrete.n_actions)
        assert torch.equal(a, b) and not torch.equal(a, c)
        assert bool(((a > 0) & (a < 1)).all())
        n, gen = be.draw_noise(continuous, 4096, be.rng(3), dtype)
        assert n.shape == (4096, 2)
        assert abs(float(n.mean())) < 0.05 and abs(float(n.std()) - 1.0) < 0.05
        # The generator advances: the next draw differs.
        n2, _ = be.draw_noise(continuous, 4096, gen, dtype)
        assert not torch.equal(n, n2)


def test_noise_never_reaches_the_ends_of_the_interval(be: TorchBackend) -> None:
    # float32 rand can round to values whose Gumbel transform is infinite; the draw keeps
    # strictly inside (0, 1) for both dtypes, over many draws.
    for dtype in ("float32", "float64"):
        noise, _ = be.draw_noise(CONFIGS[0], 200_000, be.rng(0), dtype)
        gumbel = -torch.log(-torch.log(noise))
        assert bool(torch.isfinite(gumbel).all()), dtype


def test_spec_clip_differs_from_clip_grad_norm() -> None:
    """Why the backend does not use torch.nn.utils.clip_grad_norm_: its 1e-6 moves the result
    far beyond the float64 tolerance (1e-10 relative) whenever clipping is active."""
    direction = {"a": np.array([3.0, 4.0]) * 1e-3}  # norm 5e-3
    clipped, _ = clip_by_global_norm(direction, 1e-3)
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    p.grad = torch.tensor(direction["a"])
    torch.nn.utils.clip_grad_norm_([p], 1e-3)
    relative = np.max(np.abs(p.grad.numpy() - clipped["a"]) / np.abs(clipped["a"]))
    assert relative > 1e-6


def test_torch_adam_moments_differ_from_the_layout_under_maximize() -> None:
    """torch.optim.Adam(maximize=True) stores the moment of −Δ: the layout's mu_<p> holds Δ's."""
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = torch.optim.Adam([p], lr=1e-3, maximize=True)
    p.grad = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    opt.step()
    exp_avg = opt.state[p]["exp_avg"]
    assert torch.allclose(exp_avg, -0.1 * p.grad)  # spec: mu = (1 − β1) Δ = +0.1 Δ
    assert opt.state[p]["step"].dtype != torch.int32  # spec: count is int32


@pytest.fixture
def torch_threads():
    """Sets torch's intra-op thread count for one test (``torch_threads(n)``) and restores it."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("threads", "min_batch", "row_sums"),
    [(1, 1, True), (1, 512, False), (2, 1, False)],
    ids=["row-sums", "one-thread-small-batch", "two-threads"],
)
def test_compiled_variant_agrees_with_eager(
    threads: int, min_batch: int, row_sums: bool, torch_threads
) -> None:
    """On one thread and from row_sums_min_batch environments on, the compiled RFLO step takes
    its batch means as a scatter-add (_torch_speed.row_batch_mean); otherwise it does not.
    Both forms must give the eager step's results and shapes."""
    torch_threads(threads)
    be = CompiledTorchBackend()
    be.row_sums_min_batch = min_batch
    assert set(be.step_variants()) == {"eager", "compiled"}
    config = CONFIGS[0].replace(entropy_rate=0.3)
    agent = _warm_agent(be, config, 5, "float64")
    inputs = _inputs(be, config, 5, "float64", seed=11)
    eager = be.step_eager(config, agent, *inputs)
    compiled = be.step_compiled(config, agent, *inputs)
    assert [key[-1] for key in be._compiled.made()] == [row_sums]
    assert torch.equal(eager[1], compiled[1])
    for i in (0, 2):
        assert set(eager[i]) == set(compiled[i])
        for name in eager[i]:
            torch.testing.assert_close(compiled[i][name], eager[i][name], rtol=1e-12, atol=1e-14)


def test_compiled_frozen_ctrnn_keeps_its_state() -> None:
    """A frozen CT-RNN, compiled: inductor once computed h' in place into the slot of h inside
    the buffer of ζ = [x, h, 1] and then reused that buffer, so h' (an output) came back
    overwritten (found by the conformance suite on CompiledTorchBackend)."""
    config = rtrrl_spec.Config(
        obs_dim=2,
        action_dim=1,
        action_low=(0.0,),
        action_high=(0.5,),
        n_hidden=5,
        feedback_alignment=False,
        freeze_rnn=True,
    )
    be = CompiledTorchBackend()
    agent = be.init(config, 1, seed=0, dtype="float32")
    inputs = _inputs(be, config, 1, "float32", seed=0)
    eager = be.step_eager(config, agent, *inputs)
    compiled = be.step_compiled(config, agent, *inputs)
    for i in (0, 2):
        for name in eager[i]:
            torch.testing.assert_close(compiled[i][name], eager[i][name], msg=name)


def test_compiled_step_repeats_bit_for_bit_on_two_threads(torch_threads) -> None:
    """Parallel, the row-order batch sums would be atomic adds in a varying order; the compiled
    step must not use them there, so the same inputs give the same bits every time."""
    torch_threads(2)
    be = CompiledTorchBackend()
    be.row_sums_min_batch = 1
    config = CONFIGS[0].replace(entropy_rate=0.3)
    B = 512  # large enough for inductor to split the trace loops over both threads
    agent = _warm_agent(be, config, B, "float32")
    inputs = _inputs(be, config, B, "float32", seed=3)
    first = be.step_compiled(config, agent, *inputs)
    for _ in range(5):
        again = be.step_compiled(config, agent, *inputs)
        _same_agent(again[0], first[0])
        _same_agent(again[2], first[2])


def test_default_backend_offers_only_eager(be: TorchBackend) -> None:
    assert list(be.step_variants()) == ["eager"]


def test_device_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTRRL_TORCH_DEVICE", "meta")
    assert TorchBackend().device() == "meta"
    monkeypatch.delenv("RTRRL_TORCH_DEVICE")
    assert TorchBackend().device() == "cpu"


COMPILED_CASES = [
    (CONFIGS[0].replace(entropy_rate=0.5, lr_td=0.05, lr_rnn=0.05), "float32"),
    (
        rtrrl_spec.Config(
            obs_dim=2,
            action_dim=2,
            action_low=(-1.0, 0.0),
            action_high=(1.0, 2.0),
            n_hidden=4,
            jacobian="rtrl",
            feedback_alignment=False,
            trace="dutch",
            reward_rate_lr=0.05,
            dt=0.5,
            tau_min=2.0,
            clip_norm=None,
        ),
        "float64",
    ),
    (
        rtrrl_spec.Config(
            obs_dim=3,
            action_dim=1,
            body="linear",
            meta_rl=False,
            var_scaling=False,
            clip_norm=0.05,
        ),
        "float32",
    ),
    (
        rtrrl_spec.Config(
            obs_dim=2, n_actions=2, n_hidden=6, jacobian="rtrl", meta_rl=False, eta_pi=1.7
        ),
        "float64",
    ),
    (LRU.replace(lr_td=0.05, lr_rnn=0.02, clip_norm=0.5), "float32"),
]


ROW_SUMS_CASES = [
    (config, dtype)
    for config, dtype in COMPILED_CASES
    if config.body == "ctrnn" and config.jacobian == "rflo" and config.trains_body
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "dtype", "threads"),
    [(c, d, None) for c, d in COMPILED_CASES] + [(c, d, 1) for c, d in ROW_SUMS_CASES],
)
def test_compiled_variant_conforms_on_fixed_cases(
    config, dtype: str, threads: int | None, torch_threads
) -> None:
    """The conformance harness on the compiled step (the suite itself draws too many configs
    to compile each; see docs/backends/torch.md); RFLO once more on one thread, where the
    step takes its batch means as a scatter-add (_torch_speed.row_batch_mean)."""
    from rtrrl.conformance.cases import Case
    from rtrrl.conformance.harness import check_free_running, check_teacher_forced

    if threads is not None:
        torch_threads(threads)
    be = CompiledTorchBackend()
    be.row_sums_min_batch = 1
    case = Case(config=config, batch_size=3, seed=7, warmup=2, steps=4, dtype=dtype)
    check_teacher_forced(be, case, "compiled", kind="teacher_forced")
    check_free_running(be, case, "compiled")


def _same_agent(a, b) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(
    ("config", "variant", "threads"),
    [
        (CONFIGS[0], "eager", None),
        (CONFIGS[1], "eager", None),
        (CONFIGS[0], "compiled", 2),
        (CONFIGS[0], "compiled", 1),
    ],
    ids=["rflo", "rtrl", "rflo-compiled", "rflo-compiled-row-sums"],
)
def test_steps_never_write_into_kept_agents(
    config, variant: str, threads: int | None, torch_threads
) -> None:
    """A loop that keeps every agent it was handed: none of them changes afterwards (RTRL adds
    its diagonal in place, into the product it just made), and the loop's results equal those
    of a second backend stepping copies."""
    assert config.body == "ctrnn" and config.trains_body
    if threads is not None:
        torch_threads(threads)
    be, fresh = CompiledTorchBackend(), CompiledTorchBackend()
    be.row_sums_min_batch = fresh.row_sums_min_batch = 1
    step = getattr(be, f"step_{variant}")
    inputs = _inputs(be, config, 3, "float64", seed=4)
    agent = _warm_agent(be, config, 3, "float64")
    kept = [agent]
    for _ in range(4):
        agent, _, _ = step(config, agent, *inputs)
        kept.append(agent)
    copies = [{k: v.clone() for k, v in a.items()} for a in kept]
    for _ in range(4):
        agent, _, _ = step(config, agent, *inputs)
        for a, c in zip(kept, copies, strict=True):
            _same_agent(a, c)
    ref = copies[-1]
    for _ in range(4):
        ref, _, _ = getattr(fresh, f"step_{variant}")(config, ref, *inputs)
    _same_agent(agent, ref)


@pytest.mark.parametrize("config", CONFIGS[:2])
def test_step_reads_the_agent_it_is_given(config) -> None:
    """A replaced parameter, or an in-place change to a tensor the previous step handed out,
    is what the next step computes with."""
    be = TorchBackend()
    inputs = _inputs(be, config, 2, "float64", seed=3)
    agent = _warm_agent(be, config, 2, "float64")
    agent, _, _ = be.step_eager(config, agent, *inputs)
    replaced = dict(agent, W_A=agent["W_A"] * 2.0)
    with torch.inference_mode():
        modified = dict(agent)
        modified["mu_W_A"].add_(0.5)  # in place on a handed-out tensor
    for variant in (replaced, modified):
        new, _, _ = be.step_eager(config, variant, *inputs)
        ref, _, _ = TorchBackend().step_eager(
            config, {k: v.clone() for k, v in variant.items()}, *inputs
        )
        _same_agent(new, ref)


def test_step_functions_are_this_modules_in_spec_order(be: TorchBackend) -> None:
    """step_functions() (BackendBase) reads the module-level translations; they are defined
    in the order of rtrrl_spec.STEP_FUNCTIONS, so the module reads like the spec."""
    import inspect

    import rtrrl.backends.torch as module

    functions = be.step_functions()
    assert tuple(functions) == rtrrl_spec.STEP_FUNCTIONS
    assert all(fn is getattr(module, name) for name, fn in functions.items())
    lines = [inspect.getsourcelines(fn)[1] for fn in functions.values()]
    assert lines == sorted(lines)
    assert CompiledTorchBackend().step_functions() == functions


def _to_backend(be: TorchBackend, value, numbers_as_tensors: bool):
    """A reference argument in the backend's types: arrays (also inside dicts and the spec's
    NamedTuples) to tensors; Python floats kept, or made 0-d float64 tensors as from_numpy
    makes them."""
    if isinstance(value, np.ndarray):
        return be.from_numpy(value)
    if isinstance(value, dict):
        return {k: _to_backend(be, v, numbers_as_tensors) for k, v in value.items()}
    if isinstance(value, tuple):
        items = [_to_backend(be, v, numbers_as_tensors) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, float) and numbers_as_tensors:
        return be.from_numpy(np.asarray(value))
    return value


def _assert_close(be: TorchBackend, got, want, rtol: float, where: str) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) >= set(want), where
        for k in want:
            _assert_close(be, got[k], want[k], rtol, f"{where}.{k}")
    elif isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want), where
        if hasattr(want, "_fields"):
            assert type(got) is type(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close(be, g, w, rtol, f"{where}[{i}]")
    else:
        got, want = be.to_numpy(got), np.asarray(want)
        assert got.shape == want.shape, where
        if want.dtype.kind in "iub":
            np.testing.assert_array_equal(got, want, err_msg=where)
        else:
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, err_msg=where)


def _spec_calls(dtype: str):
    """(name, reference args) of every function of STEP_FUNCTIONS, from warm reference agents."""
    from rtrrl_spec import ctrnn, lru

    def warm(config, B=3):
        agent = rtrrl_spec.init(config, B, seed=4, dtype=dtype)
        rng = np.random.default_rng(0)
        for t in range(3):
            obs = rng.uniform(-1, 1, (B, config.obs_dim)).astype(dtype)
            noise = rtrrl_spec.draw_noise(config, B, rng, dtype)
            done = np.array([t == 0, False, t == 2])
            agent, _, info = rtrrl_spec.step(config, agent, obs, rng.uniform(-1, 1, B), done, noise)
        return agent, info, rng

    rflo, rtrl, cont = CONFIGS[0], CONFIGS[1], CONFIGS[2]
    a, info, rng = warm(rflo)
    x = rng.uniform(-1, 1, (3, rflo.input_dim)).astype(dtype)
    s = ctrnn.ctrnn_step(a["W"], a["tau"], a["h"], x, 0.5)
    g = rng.standard_normal((3, rflo.n_hidden)).astype(dtype)
    r, _, _ = warm(rtrl)
    xr = rng.uniform(-1, 1, (3, rtrl.input_dim)).astype(dtype)
    sr = ctrnn.ctrnn_step(r["W"], r["tau"], r["h"], xr, 0.5)
    gr = rng.standard_normal((3, rtrl.n_hidden)).astype(dtype)
    L, _, _ = warm(LRU)
    xl = rng.uniform(-1, 1, (3, LRU.input_dim)).astype(dtype)
    p = {k: L[k] for k in rtrrl_spec.LRU_PARAMS}
    J = {k: L[k] for k in lru.LRU_SENSITIVITIES}
    sl = lru.lru_step(p, L["h_re"], L["h_im"], xl)
    gl = rng.standard_normal((3, LRU.n_hidden)).astype(dtype)
    out = rng.standard_normal((3, cont.n_out)).astype(dtype)
    done = np.array([True, False, False])
    names = rtrrl_spec.params_of(rflo)
    direction = {k: info[f"direction.{k}"] for k in names}
    rf = rng.uniform(-1, 1, 3).astype(dtype)
    obs = rng.uniform(-1, 1, (3, rflo.obs_dim)).astype(dtype)
    return [
        ("ctrnn_step", (a["W"], a["tau"], a["h"], x, 0.5)),
        ("rflo_update", (a["J_W"], a["J_tau"], a["tau"], a["h"], s, 0.5)),
        ("rtrl_update", (r["J_W"], r["J_tau"], r["W"], r["tau"], r["h"], sr, 0.5, rtrl.input_dim)),
        ("project_rflo", (g, a["J_W"], a["J_tau"])),
        ("project_rtrl", (gr, r["J_W"], r["J_tau"])),
        ("lru_lambda", (L["log_nu"], L["log_theta"])),
        ("lru_step", (p, L["h_re"], L["h_im"], xl)),
        ("lru_sensitivity_update", (J, L["h_re"], L["h_im"], xl, sl)),
        ("project_lru", (gl, p, J, sl)),
        ("critic_value", (a["h"], a["W_C"], a["b_C"])),
        ("policy_step", (rflo, a["h"] @ a["W_A"], rtrrl_spec.draw_noise(rflo, 3, rng, dtype))),
        ("policy_step", (cont, out, rtrrl_spec.draw_noise(cont, 3, rng, dtype))),
        ("td_error", (rf, done, a["v_prev"] + 1, a["v_prev"], 0.9)),
        ("td_error", (rf, done, a["v_prev"] + 1, a["v_prev"], 0.9, np.asarray(0.3, dtype))),
        ("decay_trace", (a["e_W"], done, 0.9 * 0.8)),
        ("global_norm", (direction,)),
        ("clip_by_global_norm", (direction, 1e-3)),
        ("clip_by_global_norm", (direction, None)),
        (
            "adam_step",
            (
                {k: a[k] for k in names},
                direction,
                {k: a[f"mu_{k}"] for k in names},
                {k: a[f"nu_{k}"] for k in names},
                a["count_td"],
                0.01,
                0.8,
                0.99,
                1e-6,
            ),
        ),
        ("apply_update", (rflo.replace(lr_rnn=0.02, clip_norm=1e-3), a, direction)),
        ("step", (rflo, a, obs, rf, done, rtrrl_spec.draw_noise(rflo, 3, rng, dtype))),
    ]


@pytest.mark.parametrize("numbers_as_tensors", [False, True], ids=["floats", "tensors"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_step_functions_match_the_reference(
    be: TorchBackend, dtype: str, numbers_as_tensors: bool
) -> None:
    """Each translation, called with the reference's arguments (numbers as Python floats, or
    as the 0-d float64 tensors from_numpy makes of them), returns what the reference does."""
    ours, spec = be.step_functions(), rtrrl_spec.step_functions()
    rtol = 1e-4 if dtype == "float32" else 1e-10
    seen = set()
    for name, args in _spec_calls(dtype):
        want = spec[name](*args)
        got = ours[name](*_to_backend(be, args, numbers_as_tensors))
        _assert_close(be, got, want, rtol, name)
        seen.add(name)
    assert seen == set(rtrrl_spec.STEP_FUNCTIONS)


def test_rng_state_round_trip(be: TorchBackend) -> None:
    """rng_state is the generator's whole state as NumPy arrays; rng_from_state makes a new
    generator that draws what the saved one draws next."""
    config = CONFIGS[0]
    gen = be.rng(5)
    be.draw_noise(config, 7, gen, "float32")  # advanced past its seed
    state = be.rng_state(gen)
    assert all(isinstance(v, np.ndarray) for v in state.values())
    restored = be.rng_from_state({k: v.copy() for k, v in state.items()})
    assert restored is not gen and restored.device == gen.device
    for dtype in ("float32", "float64"):
        want, _ = be.draw_noise(config, 9, gen, dtype)
        got, _ = be.draw_noise(config, 9, restored, dtype)
        assert torch.equal(got, want)
    # The saved arrays are a copy: the generator moving on does not change them.
    assert np.array_equal(be.rng_state(be.rng_from_state(state))["torch"], state["torch"])


@pytest.mark.parametrize(
    "config",
    CONFIGS
    + [
        CONFIGS[0].replace(lr_rnn=0.02, clip_norm=None),
        # β2 so close to 1 that no bias-correction table is made: the formula serves.
        CONFIGS[1].replace(adam_b2=1.0 - 1e-9),
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_packed_update_is_apply_update(config, dtype: str) -> None:
    """_torch_speed.PackedUpdate (the eager step's update) gives what apply_update gives,
    parameter by parameter: also on the agent it handed out itself (its packed rows reused),
    and after an in-place change to one of those tensors."""
    from rtrrl.backends import _torch_speed
    from rtrrl.backends import torch as module

    be = TorchBackend()
    agent = _warm_agent(be, config, 2, dtype)
    with torch.inference_mode():
        _, _, info = be.step(config, agent, *_inputs(be, config, 2, dtype, seed=6))
        direction = {k: info[f"direction.{k}"] for k in rtrrl_spec.params_of(config)}
        numbers = module.config_numbers(config, agent["W_A"].dtype, agent["W_A"].device)
        packed = _torch_speed.PackedUpdate(
            config, agent["W_A"], numbers, module.adam_step, module._bias_correction
        )
        rtol = 1e-5 if dtype == "float32" else 1e-12
        for round_ in range(3):
            want, want_info = module.apply_update(config, agent, direction)
            got, got_info = packed(config, agent, direction, numbers=numbers)
            assert set(got) == set(want)
            assert set(got_info) == set(want_info) | {f"update.{k}" for k in direction}
            for name in want:
                torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=rtol)
            for name in want_info:
                torch.testing.assert_close(got_info[name], want_info[name], rtol=rtol, atol=rtol)
            for k in direction:
                torch.testing.assert_close(got_info[f"update.{k}"], got[k] - agent[k])
            agent = {**agent, **got}  # the next call finds the tensors it handed out
            if round_ == 1:
                agent["mu_W_A"].add_(0.25)  # in place, on a view of its packed rows


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.0, 0.99), (0.5, 1.0 - 1e-9)])
def test_bias_correction_table_holds_the_formulas_values(dtype: str, betas) -> None:
    """The packed update's table of Adam's bias corrections holds what the maths' formula
    gives at every count it covers, and at any later count (clamped to its last entry) the
    formula gives that last entry too; β too close to 1 makes no table."""
    from rtrrl.backends import _torch_speed
    from rtrrl.backends import torch as module

    torch_dtype = getattr(torch, dtype)
    logs = [torch.tensor(np.log(b) if b else -np.inf, dtype=torch.float64) for b in betas]
    table = _torch_speed.bias_correction_table(module._bias_correction, *logs, torch_dtype)
    if betas[1] > 1.0 - 1e-6:
        assert table is None
        return
    assert table is not None and table.dtype == torch_dtype
    counts = torch.arange(1, table.shape[1], dtype=torch.int32)  # count 0 is never looked up
    want = module._bias_correction(counts, *logs, torch_dtype)
    assert torch.equal(table[:, 1:], want)
    later = torch.tensor([table.shape[1], 10 * table.shape[1], 2**31 - 1], dtype=torch.int32)
    assert torch.equal(
        module._bias_correction(later, *logs, torch_dtype), table[:, -1:].expand(2, 3)
    )
    # The packed update looks each group's count up (clamped at the table's end) and hands
    # every entry its group's values: the formula's, exactly, on both sides of the end.
    config = CONFIGS[0].replace(adam_b1=betas[0], adam_b2=betas[1])
    numbers = module.config_numbers(config, torch_dtype, torch.device("cpu"))
    like = torch.zeros(1, dtype=torch_dtype)
    packed = _torch_speed.PackedUpdate(
        config, like, numbers, module.adam_step, module._bias_correction
    )
    end = table.shape[1]
    for td, rnn in [(1, 2), (end - 2, end - 1), (end - 1, end), (end, 7 * end), (3, end + 1)]:
        counts = torch.tensor([td, rnn], dtype=torch.int32)
        got = packed._bias_corrections(counts)
        want = module._bias_correction(counts, numbers["log_b1"], numbers["log_b2"], torch_dtype)
        sizes = [len(packed._group_of) - int(packed._group_of.sum()), int(packed._group_of.sum())]
        assert torch.equal(got, want.repeat_interleave(torch.tensor(sizes), dim=1))


@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("config", [c for c in CONFIGS if c.jacobian == "rtrl"])
def test_eager_rtrl_is_the_same_in_one_pass_or_two(config, B: int) -> None:
    """TorchBackend.one_pass_rtrl_min_batch changes how the RTRL trace and its projections
    are formed (_torch_speed.OnePassRTRL), not what they are."""
    one_pass, two_passes = TorchBackend(), TorchBackend()
    one_pass.one_pass_rtrl_min_batch, two_passes.one_pass_rtrl_min_batch = 1, None
    agent = _warm_agent(two_passes, config, B, "float64")
    inputs = _inputs(two_passes, config, B, "float64", seed=9)
    for _ in range(2):  # the second step reads the trace the first one handed out
        got = one_pass.step_eager(config, agent, *inputs)
        want = two_passes.step_eager(config, agent, *inputs)
        assert torch.equal(got[1], want[1])
        for i in (0, 2):
            assert set(got[i]) == set(want[i])
            for name in want[i]:
                torch.testing.assert_close(got[i][name], want[i][name], rtol=1e-12, atol=1e-14)
        agent = got[0]


@pytest.mark.parametrize(
    "config", [c for c in CONFIGS if c.jacobian == "rtrl" and not c.freeze_rnn]
)
def test_donated_steps_reuse_the_trace_buffer_and_compute_the_same(config) -> None:
    """``donate=True`` lets the one-pass RTRL step write a later trace into the memory of a
    trace it was given (two buffers take turns), and changes no number; without it, an
    agent a caller keeps holds its values."""
    donating, keeping = TorchBackend(), TorchBackend()
    donating.one_pass_rtrl_min_batch = keeping.one_pass_rtrl_min_batch = 1
    agent = _warm_agent(keeping, config, 3, "float64")
    inputs = _inputs(keeping, config, 3, "float64", seed=10)
    donated, kept, addresses = agent, agent, []
    for _ in range(5):
        donated = donating.step_eager(config, donated, *inputs, donate=True)[0]
        kept_before = {k: v.clone() for k, v in kept.items()}
        previous, kept = kept, keeping.step_eager(config, kept, *inputs)[0]
        for name in kept:
            assert torch.equal(donated[name], kept[name]), name
            assert torch.equal(previous[name], kept_before[name]), name  # left as it was
        addresses.append(donated["J_W"].data_ptr())
    # Steps 1 and 2 allocate; from step 3 on the two buffers alternate.
    assert addresses[2] == addresses[0] and addresses[3] == addresses[1]
    assert addresses[4] == addresses[2] and addresses[0] != addresses[1]
    assert len({a for a in (kept["J_W"].data_ptr(), previous["J_W"].data_ptr())}) == 2


@pytest.mark.parametrize("config", CONFIGS)
def test_eager_step_is_the_same_packed_or_not(be: TorchBackend, config) -> None:
    """TorchBackend.packed_update changes how the update runs, not what it computes."""
    agent = _warm_agent(be, config, 3, "float64")
    inputs = _inputs(be, config, 3, "float64", seed=8)
    per_parameter = TorchBackend()
    per_parameter.packed_update = False
    packed_out = be.step_eager(config, agent, *inputs)
    plain_out = per_parameter.step_eager(config, agent, *inputs)
    assert torch.equal(packed_out[1], plain_out[1])
    for i in (0, 2):
        assert set(packed_out[i]) == set(plain_out[i])
        for name in plain_out[i]:
            torch.testing.assert_close(
                packed_out[i][name], plain_out[i][name], rtol=1e-12, atol=1e-14
            )
