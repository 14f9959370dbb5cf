"""Run a backend and the reference on the same case and explain any difference.

Three checks, each usable from a test or from a replay snippet:

- :func:`check_teacher_forced`: at every step the backend starts from the reference's state
  (cast to the dtype under test) and one step is compared: per-environment state and ``info``
  against the float64 reference, the optimizer against the reference optimizer applied to the
  backend's own update direction (see :mod:`rtrrl.conformance.tolerances`).
- :func:`check_free_running`: the backend carries its own state for all steps.
- :func:`check_layout`: names, shapes and dtypes of every array a step returns.

A failure raises :class:`ConformanceError` naming the step, the array, the index and the error,
followed by a snippet that replays the case.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from hypothesis import assume

import rtrrl_spec
from rtrrl.conformance.cases import Case, StepInputs, cast_agent
from rtrrl.conformance.tolerances import EPS_RATIO, Tolerance, tolerance

__all__ = [
    "ConformanceError",
    "check_teacher_forced",
    "check_free_running",
    "check_layout",
    "replay",
    "step_variants",
]

Arrays = dict[str, np.ndarray]
StepFn = Callable[..., tuple[Any, Any, Any]]


class ConformanceError(AssertionError):
    """A backend's result differs from the reference beyond the tolerance table."""


def step_variants(backend: Any) -> dict[str, StepFn]:
    """The step functions to check: ``backend.step_variants()`` if offered, else ``step``.

    A backend with several ways to run a step (jitted and not, compiled and eager) offers them
    all so the suite checks each.
    """
    variants = getattr(backend, "step_variants", None)
    return dict(variants()) if callable(variants) else {"step": backend.step}


class _Context:
    """What a failure message needs to say where it happened and how to replay it."""

    def __init__(self, backend: Any, variant: str, kind: str, case: Case) -> None:
        self.backend, self.variant, self.kind, self.case = backend, variant, kind, case

    def backend_spec(self) -> str:
        return getattr(self.backend, "conformance_name", None) or self.backend.name

    def fail(self, t: int, message: str) -> None:
        snippet = (
            "python - <<'PY'\n"
            "import rtrrl_spec\n"
            "from rtrrl.conformance.harness import replay\n"
            f"replay({self.backend_spec()!r}, {self.kind!r}, variant={self.variant!r},\n"
            f"       {self.case.replay_args()})\n"
            "PY"
        )
        raise ConformanceError(
            f"[{self.backend.name} / {self.variant} / {self.case.dtype}] {self.kind}, step {t}: "
            f"{message}\n\nReplay this case with:\n{snippet}"
        )


def _run_backend(
    backend: Any, step_fn: StepFn, config: rtrrl_spec.Config, agent: Arrays, x: StepInputs
) -> tuple[Arrays, np.ndarray, Arrays]:
    new, action, info = step_fn(
        config,
        backend.from_numpy(agent),
        backend.from_numpy(x.obs),
        backend.from_numpy(x.reward),
        backend.from_numpy(x.done),
        backend.from_numpy(x.noise),
    )
    return backend.to_numpy(new), np.asarray(backend.to_numpy(action)), backend.to_numpy(info)


def _reference(config: rtrrl_spec.Config, agent: Arrays, x: StepInputs, dtype: str):
    y = x.cast(dtype)
    return rtrrl_spec.step(config, cast_agent(agent, dtype), y.obs, y.reward, y.done, y.noise)


def _assume_clear_action(
    config: rtrrl_spec.Config, agent: Arrays, info: Arrays, x: StepInputs, margin: float
) -> None:
    """Skip cases whose discrete action is a near-tie: any rounding may flip it."""
    if not config.discrete:
        return
    scores = info["features"] @ agent["W_A"].astype(np.float64) - np.log(-np.log(x.noise))
    top2 = np.sort(scores, axis=-1)[:, -2:]
    assume(bool(np.all(top2[:, 1] - top2[:, 0] > margin)))


def check_layout(
    ctx: _Context,
    t: int,
    config: rtrrl_spec.Config,
    agent: Arrays,
    action: np.ndarray,
    info: Arrays,
    ref_info: Arrays,
) -> None:
    """Every array of the new agent, the action and ``info`` has the canonical name/shape/dtype."""
    dtype, B = ctx.case.dtype, ctx.case.batch_size
    expected = rtrrl_spec.layout(config, B)
    missing = sorted(set(expected) - set(agent))
    extra = sorted(set(agent) - set(expected))
    if missing or extra:
        ctx.fail(t, f"the agent's arrays differ from the layout: missing {missing}, extra {extra}")
    for name, spec in expected.items():
        array = np.asarray(agent[name])
        want = spec.numpy_dtype(dtype)
        if array.shape != spec.shape or array.dtype != want:
            ctx.fail(
                t,
                f"array {name!r} is {array.dtype}{list(array.shape)}, expected "
                f"{want}{list(spec.shape)}",
            )
    want_action = (
        ((B,), np.dtype("int32")) if config.discrete else ((B, config.action_dim), np.dtype(dtype))
    )
    if (action.shape, action.dtype) != want_action:
        ctx.fail(
            t,
            f"action is {action.dtype}{list(action.shape)}, expected "
            f"{want_action[1]}{list(want_action[0])}",
        )
    for name, ref in ref_info.items():
        if name not in info:
            ctx.fail(
                t,
                f"info lacks {name!r} (it must hold every key the reference returns: "
                f"{sorted(ref_info)})",
            )
        got = np.asarray(info[name])
        want = np.dtype(dtype) if ref.dtype.kind == "f" else ref.dtype
        if got.shape != ref.shape or got.dtype != want:
            ctx.fail(
                t,
                f"info[{name!r}] is {got.dtype}{list(got.shape)}, expected {want}{list(ref.shape)}",
            )


def _compare(
    ctx: _Context,
    t: int,
    name: str,
    actual: Any,
    expected: np.ndarray,
    natural: np.ndarray | None,
    tol: Tolerance,
) -> None:
    a = np.asarray(actual)
    e = np.asarray(expected)
    if a.shape != e.shape:
        ctx.fail(t, f"array {name!r} has shape {a.shape}, expected {e.shape}")
    if e.dtype.kind in "iub":
        if not np.array_equal(a, e):
            idx = tuple(int(i) for i in np.argwhere(a != e)[0]) if a.ndim else ()
            ctx.fail(
                t,
                f"array {name!r} at index {idx}: backend {a[idx]!r}, reference {e[idx]!r}"
                " (must be equal)",
            )
        return
    a = a.astype(np.float64)
    e = e.astype(np.float64)
    # A reference that overflowed (the float64 one, or the float32 run that estimates
    # rounding) leaves the input outside what the tolerance table can judge, and a NaN bound
    # would let any value through: the example is rejected, not passed.
    assume(bool(np.all(np.isfinite(e))) and (natural is None or bool(np.all(np.isfinite(natural)))))
    if not np.all(np.isfinite(a)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0]) if a.ndim else ()
        ctx.fail(t, f"array {name!r} at index {idx} is {a[idx]!r}; reference {e[idx]!r}")
    err = np.abs(a - e)
    scale = float(np.max(np.abs(e))) if e.size else 0.0
    allowed = tol.rtol * np.abs(e) + tol.floor * scale + np.finfo(ctx.case.dtype).tiny
    if natural is not None:
        allowed = allowed + tol.natural * natural
    if np.any(err > allowed):
        ratio = np.where(err > allowed, err / allowed, 0.0)
        idx = (
            tuple(int(i) for i in np.unravel_index(np.argmax(ratio), ratio.shape)) if a.ndim else ()
        )
        ctx.fail(
            t,
            f"array {name!r} at index {idx}: backend {a[idx]!r}, reference {e[idx]!r}, "
            f"|error| {err[idx]:.3g} > allowed {allowed[idx]:.3g} "
            f"(rtol {tol.rtol:g}, floor {tol.floor:g} x max|ref| {scale:.3g}"
            + (
                f", rounding estimate {natural[idx]:.3g} x {tol.natural:g}"
                if natural is not None
                else ""
            )
            + f"); {int(np.sum(err > allowed))} of {err.size} entries out of tolerance",
        )


def _natural(
    ref64: Mapping[str, np.ndarray], ref32: Mapping[str, np.ndarray], name: str, dtype: str
) -> np.ndarray:
    scale = EPS_RATIO if dtype == "float64" else 1.0
    return np.abs(ref32[name].astype(np.float64) - ref64[name].astype(np.float64)) * scale


OPTIMIZER_PREFIXES = ("mu_", "nu_", "count_")


def _is_optimizer(config: rtrrl_spec.Config, name: str) -> bool:
    return name in rtrrl_spec.params_of(config) or name.startswith(OPTIMIZER_PREFIXES)


def _compare_step(
    ctx: _Context,
    t: int,
    config: rtrrl_spec.Config,
    start: Arrays,
    got: tuple[Arrays, np.ndarray, Arrays],
    ref64,
    ref32,
    kind_tol: str,
    resync_optimizer: bool,
) -> None:
    dtype = ctx.case.dtype
    new, action, info = got
    check_layout(ctx, t, config, new, action, info, ref64[2])
    tol = tolerance(dtype, kind_tol)
    if kind_tol == "free_running":
        tol = tol.at_step(t)
    # The action first: when it differs, everything after it does too.
    _compare(
        ctx,
        t,
        "action",
        action,
        ref64[1],
        _natural({"a": np.asarray(ref64[1])}, {"a": np.asarray(ref32[1])}, "a", dtype),
        tol,
    )
    for name in ref64[2]:
        if name.startswith("update.") and resync_optimizer:
            continue
        _compare(
            ctx,
            t,
            f"info[{name!r}]",
            info[name],
            ref64[2][name],
            _natural(ref64[2], ref32[2], name, dtype),
            tol,
        )
    for name in ref64[0]:
        if resync_optimizer and (_is_optimizer(config, name) or name == "reward_rate"):
            continue
        _compare(
            ctx, t, name, new[name], ref64[0][name], _natural(ref64[0], ref32[0], name, dtype), tol
        )
    if not resync_optimizer:
        return
    # The optimizer, on the backend's own direction (see tolerances.py for why).
    start64 = cast_agent(start, "float64")
    direction = {
        k: np.asarray(info[f"direction.{k}"], np.float64) for k in rtrrl_spec.params_of(config)
    }
    expected, _ = rtrrl_spec.apply_update(config, start64, direction)
    opt_tol = tolerance(dtype, "optimizer")
    eps = float(np.finfo(dtype).eps)
    for name, value in expected.items():
        if name not in direction:  # Adam moments and counts
            _compare(ctx, t, name, new[name], value, None, opt_tol)
            continue
        # A parameter is stored in `dtype`: its value, and so the change applied to it, can
        # only be as exact as the spacing of `dtype` numbers around it.
        resolution = eps * (np.abs(start64[name]) + np.abs(value))
        _compare(ctx, t, name, new[name], value, resolution, opt_tol)
        _compare(
            ctx,
            t,
            f"info['update.{name}']",
            info[f"update.{name}"],
            value - start64[name],
            resolution,
            opt_tol,
        )
    if config.reward_rate_lr is not None:
        expected_rate = start64["reward_rate"] + config.reward_rate_lr * np.mean(
            np.asarray(info["td_error"], np.float64)
        )
        _compare(ctx, t, "reward_rate", new["reward_rate"], expected_rate, None, opt_tol)


# Half of Linux's default vm.max_map_count (65,530): past this many memory mappings the
# compiled executables are dropped (see release_compiled_code).
MAPPINGS_BUDGET = 32_768


def _memory_mappings() -> int:
    """How many memory mappings this process holds (Linux; 0 where /proc is missing)."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:
        return 0


def release_compiled_code() -> None:
    """Drop JAX's compiled executables (JAX and Keras-on-JAX backends) when they pile up.

    Nearly every drawn example has a config structure of its own, so XLA compiles new
    executables for it and keeps them; each holds memory mappings of its own, and a ``ci``
    profile run (thousands of examples in one process) passes Linux's default
    ``vm.max_map_count``, after which XLA's compiler segfaults. Called before each example;
    it clears JAX's caches only past :data:`MAPPINGS_BUDGET` mappings, so that the op-by-op
    (eager) variants keep reusing the primitives compiled for earlier examples' shapes.
    """
    jax = sys.modules.get("jax")
    if jax is not None and _memory_mappings() > MAPPINGS_BUDGET:
        jax.clear_caches()


def check_teacher_forced(
    backend: Any, case: Case, variant: str = "step", kind: str = "teacher_forced"
) -> None:
    """Each step starts from the float64 reference's state, cast to the case's dtype."""
    release_compiled_code()
    step_fn = step_variants(backend)[variant]
    ctx = _Context(backend, variant, kind, case)
    config, dtype = case.config, case.dtype
    agent = case.initial_agent()
    for t, x in enumerate(case.inputs()):
        ref64 = _reference(config, agent, x, "float64")
        ref32 = _reference(config, agent, x, "float32")
        _assume_clear_action(
            config,
            cast_agent(agent, "float64"),
            ref64[2],
            x.cast("float64"),
            tolerance(dtype, "state").tie_margin,
        )
        got = _run_backend(backend, step_fn, config, agent, x)
        _compare_step(ctx, t, config, agent, got, ref64, ref32, "state", resync_optimizer=True)
        agent = cast_agent(ref64[0], dtype)


def check_free_running(backend: Any, case: Case, variant: str = "step") -> None:
    """The backend carries its own state; compared with the float64 reference at every step."""
    release_compiled_code()
    step_fn = step_variants(backend)[variant]
    ctx = _Context(backend, variant, "free_running", case)
    config, dtype = case.config, case.dtype
    start = case.initial_agent()
    agent_b = backend.from_numpy(start)
    ref64_agent, ref32_agent = cast_agent(start, "float64"), cast_agent(start, "float32")
    margin = tolerance(dtype, "free_running").tie_margin
    for t, x in enumerate(case.inputs()):
        ref64 = _reference(config, ref64_agent, x, "float64")
        ref32 = _reference(config, ref32_agent, x, "float32")
        _assume_clear_action(config, ref64_agent, ref64[2], x.cast("float64"), margin)
        # Past a flip of the float32 reference's action the rounding estimate means nothing.
        assume(
            np.array_equal(
                np.asarray(ref64[1] if config.discrete else 0),
                np.asarray(ref32[1] if config.discrete else 0),
            )
        )
        new_b, action_b, info_b = step_fn(
            config,
            agent_b,
            backend.from_numpy(x.obs),
            backend.from_numpy(x.reward),
            backend.from_numpy(x.done),
            backend.from_numpy(x.noise),
        )
        got = (
            backend.to_numpy(new_b),
            np.asarray(backend.to_numpy(action_b)),
            backend.to_numpy(info_b),
        )
        _compare_step(
            ctx, t, config, start, got, ref64, ref32, "free_running", resync_optimizer=False
        )
        agent_b, ref64_agent, ref32_agent = new_b, ref64[0], ref32[0]


def replay(backend: str | Any, kind: str, variant: str = "step", **case_kwargs: Any) -> None:
    """Re-run one case printed by a failure; raises the same :class:`ConformanceError`."""
    import rtrrl

    be = rtrrl.use(backend) if isinstance(backend, str) else backend
    case = Case(**case_kwargs)
    if kind == "free_running":
        check_free_running(be, case, variant)
    else:
        check_teacher_forced(be, case, variant, kind=kind)
    print(f"{kind} case passes on {be.name} / {variant} / {case.dtype}")
