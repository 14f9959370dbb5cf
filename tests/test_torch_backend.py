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
    its batch sums over (B·N, Z) rows (see _make_step); otherwise it does not. Both forms must
    give the eager step's results and shapes."""
    torch_threads(threads)
    be = CompiledTorchBackend()
    be.row_sums_min_batch = min_batch
    assert set(be.step_variants()) == {"eager", "compiled"}
    config = CONFIGS[0].replace(entropy_rate=0.3)
    agent = _warm_agent(be, config, 5, "float64")
    inputs = _inputs(be, config, 5, "float64", seed=11)
    eager = be.step_eager(config, agent, *inputs)
    compiled = be.step_compiled(config, agent, *inputs)
    assert [key[-1] for key in be._compiled] == [row_sums]
    assert torch.equal(eager[1], compiled[1])
    for i in (0, 2):
        assert set(eager[i]) == set(compiled[i])
        for name in eager[i]:
            torch.testing.assert_close(compiled[i][name], eager[i][name], rtol=1e-12, atol=1e-14)


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
    step sums over the batch row by row (see _make_step)."""
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
def test_buffer_reuse_never_writes_into_a_kept_agent(
    config, variant: str, threads: int | None, torch_threads
) -> None:
    """The CPU CT-RNN step reuses the J_W (eager RTRL: product) and, with RFLO, e_W buffers
    of an agent the caller dropped, and only those: agents still held keep their values, and
    the results equal a fresh backend's, which allocates every result."""
    assert config.body == "ctrnn" and config.trains_body
    if threads is not None:
        torch_threads(threads)
    be, fresh = CompiledTorchBackend(), CompiledTorchBackend()
    be.row_sums_min_batch = fresh.row_sums_min_batch = 1
    be.buffer_min_batch = 1  # buffers at any batch size
    fresh.buffer_min_batch = 10**9  # never
    step = getattr(be, f"step_{variant}")
    inputs = _inputs(be, config, 3, "float64", seed=4)
    agent = _warm_agent(be, config, 3, "float64")
    kept = [agent]
    for _ in range(4):  # every agent kept: no buffer may be reused
        agent, _, _ = step(config, agent, *inputs)
        kept.append(agent)
    copies = [{k: v.clone() for k, v in a.items()} for a in kept]
    ptrs = []
    for _ in range(4):  # the usual loop: old agents dropped, buffers reused
        agent, _, _ = step(config, agent, *inputs)
        ptrs.append(agent["J_W"].untyped_storage().data_ptr())
        for a, c in zip(kept, copies, strict=True):
            _same_agent(a, c)
    ref = kept[-1]
    for _ in range(4):
        ref, _, _ = getattr(fresh, f"step_{variant}")(config, ref, *inputs)
    _same_agent(agent, ref)
    assert not fresh._buffer_pool
    names = {"rflo": {"J_W", "e_W"}, "rtrl": {"rtrl"}}[config.jacobian]
    assert {name for *_, name in be._buffer_pool} == names
    assert all(len(pool) <= 2 for pool in be._buffer_pool.values())
    # The loop above did reuse: from its second step on, two buffers take turns.
    assert ptrs[3] == ptrs[1] != ptrs[2]


def test_eager_and_compiled_loops_side_by_side_each_reuse_their_buffers() -> None:
    """Two loops on one backend, eager and compiled (as benchmarks/step_speed.py runs them):
    each keeps reusing its own two buffers instead of taking the other's and allocating."""
    config = CONFIGS[0]
    be = CompiledTorchBackend()
    be.buffer_min_batch = 1
    inputs = _inputs(be, config, 3, "float64", seed=5)
    agents = {v: _warm_agent(be, config, 3, "float64") for v in ("eager", "compiled")}
    ptrs: dict[str, list[int]] = {"eager": [], "compiled": []}
    for _ in range(4):
        for variant in agents:
            agents[variant], _, _ = getattr(be, f"step_{variant}")(config, agents[variant], *inputs)
            ptrs[variant].append(agents[variant]["e_W"].untyped_storage().data_ptr())
    for p in ptrs.values():
        assert p[3] == p[1] != p[2]
    assert len(be._buffer_pool) == 4  # (eager, compiled) × (J_W, e_W)


@pytest.mark.parametrize("config", CONFIGS[:2])
def test_flat_memo_follows_replaced_and_modified_tensors(config) -> None:
    """The eager step's memo of its flat optimizer rows is used only for the very tensors it
    handed out; a replaced parameter or an in-place change is seen."""
    be = TorchBackend()
    inputs = _inputs(be, config, 2, "float64", seed=3)
    agent = _warm_agent(be, config, 2, "float64")
    agent, _, _ = be.step_eager(config, agent, *inputs)
    replaced = dict(agent, W_A=agent["W_A"] * 2.0)
    with torch.inference_mode():
        modified = dict(agent)
        modified["mu_W_A"].add_(0.5)  # in place on a handed-out view
    for variant in (replaced, modified):
        new, _, _ = be.step_eager(config, variant, *inputs)
        ref, _, _ = TorchBackend().step_eager(
            config, {k: v.clone() for k, v in variant.items()}, *inputs
        )
        _same_agent(new, ref)
