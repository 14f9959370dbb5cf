"""Each of a backend's step functions against the reference function of the same name.

A backend translates every function of :data:`rtrrl_spec.STEP_FUNCTIONS` under the spec's name
(``backend.step_functions()``). The whole-step checks of :mod:`rtrrl.conformance.harness` say
*which array* of a step is wrong; these checks say *which function* is: a failure starts with
the function's name, then names the output, the index and the error.

Inputs are the arguments the reference itself passes to the function inside one step: the
case's agent is warmed up by a few reference steps (non-zero traces, Jacobians and Adam
moments), then one more reference step runs with every spec function wrapped so that its
arguments are recorded (:func:`spec_calls`). Each recorded call is then replayed through the
backend's function and through the reference's, in float64 and in float32, and every output is
compared with the suite's tolerance table (the ``state`` row: both sides get the same values,
so only arithmetic differs). A function the step calls several times (``decay_trace`` once per
trace, ``adam_step`` once per parameter group) is checked on one drawn call per example: each
call has shapes of its own, and a compiling backend pays a compile for each.

Functions that a drawn config does not use (the LRU's for a CT-RNN body, RTRL's under RFLO)
are checked on a config that uses them: :data:`APPLIES` forces the modes they need.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from unittest import mock

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

import rtrrl_spec
from rtrrl.conformance.cases import Case, cast_agent, configs
from rtrrl.conformance.harness import (
    ConformanceError,
    _assume_clear_action,
    _compare,
    _compare_step,
    _Context,
    _reference,
    _run_backend,
    release_compiled_code,
)
from rtrrl.conformance.tolerances import EPS_RATIO, tolerance
from rtrrl_spec import STEP_FUNCTIONS
from rtrrl_spec import agent as _agent
from rtrrl_spec import ctrnn as _ctrnn
from rtrrl_spec import heads as _heads
from rtrrl_spec import lru as _lru
from rtrrl_spec import optim as _optim

__all__ = [
    "APPLIES",
    "OUTPUT_NAMES",
    "cast_floats",
    "check_function",
    "check_signature",
    "function_cases",
    "map_leaves",
    "n_calls",
    "replay_function",
    "spec_calls",
]

# The config a function needs to be called at all; every other field is drawn.
_CTRNN_TRAINS = {"body": "ctrnn", "freeze_rnn": False}
_LRU_TRAINS = {"body": "lru", "freeze_rnn": False}
APPLIES: dict[str, dict[str, object]] = {
    "ctrnn_step": {"body": "ctrnn"},
    "rflo_update": {**_CTRNN_TRAINS, "jacobian": "rflo"},
    "rtrl_update": {**_CTRNN_TRAINS, "jacobian": "rtrl"},
    "project_rflo": {**_CTRNN_TRAINS, "jacobian": "rflo"},
    "project_rtrl": {**_CTRNN_TRAINS, "jacobian": "rtrl"},
    "lru_lambda": {"body": "lru"},
    "lru_step": {"body": "lru"},
    "lru_sensitivity_update": _LRU_TRAINS,
    "project_lru": _LRU_TRAINS,
}

# Names for the members of functions that return plain tuples, so that a failure says "J_W"
# rather than "[0]" (NamedTuples and dicts name their own members).
OUTPUT_NAMES: dict[str, tuple[str, ...]] = {
    "rflo_update": ("J_W", "J_tau"),
    "rtrl_update": ("J_W", "J_tau"),
    "project_rflo": ("grad_W", "grad_tau"),
    "project_rtrl": ("grad_W", "grad_tau"),
    "lru_lambda": ("lam_re", "lam_im"),
    "clip_by_global_norm": ("arrays", "norm"),
    "adam_step": ("params", "mu", "nu", "count"),
    "apply_update": ("changed", "info"),
}

# Where the reference looks its functions up when a step runs: each module that binds a name.
_SPEC_MODULES = (_ctrnn, _lru, _heads, _optim, _agent)


def _is_namedtuple(x: object) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def map_leaves(fn: Callable[[Any], Any], tree: Any) -> Any:
    """Apply ``fn`` to every leaf of nested NamedTuples, tuples, lists and mappings."""
    if _is_namedtuple(tree):
        return type(tree)(*(map_leaves(fn, v) for v in tree))
    if isinstance(tree, tuple | list):
        return tuple(map_leaves(fn, v) for v in tree)
    if isinstance(tree, Mapping):
        return {k: map_leaves(fn, v) for k, v in tree.items()}
    return fn(tree)


def cast_floats(tree: Any, dtype: str) -> Any:
    """Float arrays to ``dtype``; integer and bool arrays, Python numbers, configs unchanged.

    Python numbers stay Python numbers: the reference receives them so (``dt``, ``gamma``).
    """

    def cast(x: Any) -> Any:
        if isinstance(x, np.ndarray | np.generic):
            x = np.asarray(x)
            return x.astype(dtype) if x.dtype.kind == "f" else x.copy()
        return x

    return map_leaves(cast, tree)


def _copy(x: Any) -> Any:
    # NumPy scalars become 0-d arrays: the backend receives every array through from_numpy.
    return np.array(x, copy=True) if isinstance(x, np.ndarray | np.generic) else x


def _to_backend(backend: Any, tree: Any) -> Any:
    def convert(x: Any) -> Any:
        return backend.from_numpy(x) if isinstance(x, np.ndarray) else x

    return map_leaves(convert, tree)


def _to_numpy(backend: Any, tree: Any) -> Any:
    """A backend function's result in NumPy. A NamedTuple becomes :class:`_Fields` (its field
    names are compared with the reference's, whatever its class); plain sequences become
    tuples. A Python number comes back as NumPy sees it (a float is float64)."""
    if _is_namedtuple(tree):
        pairs = zip(tree._fields, tree, strict=True)
        return _Fields((field, _to_numpy(backend, value)) for field, value in pairs)
    if isinstance(tree, tuple | list):
        return tuple(_to_numpy(backend, value) for value in tree)
    if isinstance(tree, Mapping):
        return {key: _to_numpy(backend, value) for key, value in tree.items()}
    if isinstance(tree, bool | int | float | np.ndarray | np.generic):
        return np.asarray(tree)
    return np.asarray(backend.to_numpy(tree))


class _Fields(tuple):
    """A backend's NamedTuple after conversion: ``(field, value)`` pairs, whatever its class."""


@contextlib.contextmanager
def _recording(calls: dict[str, list[tuple]]) -> Iterator[None]:
    """Wrap every spec function (but ``step``) so that its positional arguments are recorded."""
    originals = rtrrl_spec.step_functions()
    with contextlib.ExitStack() as stack:
        for name in STEP_FUNCTIONS:
            if name == "step":
                continue
            original = originals[name]
            signature = inspect.signature(original)

            def recorder(*args: Any, _name=name, _fn=original, _sig=signature, **kwargs: Any):
                # As positional arguments: that is how every backend receives them.
                bound = _sig.bind(*args, **kwargs)
                calls.setdefault(_name, []).append(map_leaves(_copy, tuple(bound.args)))
                return _fn(*args, **kwargs)

            for module in _SPEC_MODULES:
                if getattr(module, name, None) is original:
                    stack.enter_context(mock.patch.object(module, name, recorder))
        yield


def spec_calls(case: Case) -> dict[str, list[tuple]]:
    """The arguments of every spec function call in the reference's step from the case's
    state, in call order, keyed by function name. Arrays are copies, in the case's dtype (the
    step ran in it)."""
    cached = case._cache.get("calls")
    if cached is None:
        agent, x = case.initial_agent(), case.inputs()[0]
        cached = {}
        with _recording(cached):
            rtrrl_spec.step(case.config, agent, x.obs, x.reward, x.done, x.noise)
        case._cache["calls"] = cached
    return cached


@st.composite
def function_cases(draw: st.DrawFn, name: str, dtype: str) -> Case:
    """A case whose one tested step calls ``name``: a drawn config with :data:`APPLIES`'s
    modes forced, 1-4 warm-up steps (so traces are non-zero) and drawn episode ends (noise
    near the ends of its domain in a third of the cases)."""
    forced = dict(APPLIES.get(name, {}))
    body = forced.pop("body", None)
    config = draw(configs(body=body))  # type: ignore[arg-type]
    if forced:
        config = config.replace(**forced)
    return Case(
        config=config,
        batch_size=draw(st.integers(1, 4)),
        seed=draw(st.integers(0, 2**32 - 1)),
        warmup=draw(st.integers(1, 4)),
        steps=1,
        dtype=dtype,
        # Never 0: a step where some environments end and some do not is what reset logic
        # (decay_trace, the body's state) gets wrong; small batches still draw steps without.
        done_rate=draw(st.sampled_from([0.2, 0.5])),
        extreme_noise=draw(st.sampled_from([False, False, True])),
    )


class _FunctionContext(_Context):
    """Failure messages that start with the function's name; ``t`` is the call's index."""

    def __init__(
        self, backend: Any, name: str, case: Case, n_calls: int = 1, replay_call: bool = False
    ) -> None:
        super().__init__(backend, "function", name, case)
        self.name, self.n_calls, self.replay_call = name, n_calls, replay_call

    def fail(self, t: int, message: str) -> None:
        which = f" call={t}," if self.replay_call else ""
        snippet = (
            "python - <<'PY'\n"
            "import rtrrl_spec\n"
            "from rtrrl.conformance.functions import replay_function\n"
            f"replay_function({self.backend_spec()!r}, {self.name!r},{which}\n"
            f"                {self.case.replay_args()})\n"
            "PY"
        )
        call = f", call {t + 1} of {self.n_calls} in the step" if self.n_calls > 1 else ""
        raise ConformanceError(
            f"{self.name} [{self.backend.name} / {self.case.dtype}]{call}: {message}"
            f"\n\nReplay this case with:\n{snippet}"
        )


def _backend_function(backend: Any, name: str) -> Callable[..., Any]:
    functions = backend.step_functions()
    if name not in functions or not callable(functions[name]):
        raise ConformanceError(
            f"{name}: {backend.name}'s step_functions() has no callable {name!r} (it must map "
            f"every name of rtrrl_spec.STEP_FUNCTIONS; it has {sorted(functions)})"
        )
    return functions[name]


def _positional(fn: Callable[..., Any]) -> list[str] | None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or compiled callable without a signature
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in params if p.kind in kinds]
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
        names.append("*" + next(p.name for p in params if p.kind == p.VAR_POSITIONAL))
    return names


def check_signature(backend: Any, name: str) -> bool:
    """The backend's ``name`` takes the reference's positional parameters, by name and order.

    Returns False when the signature cannot be read (nothing was checked).
    """
    want = _positional(rtrrl_spec.step_functions()[name])
    got = _positional(_backend_function(backend, name))
    if got is None:
        return False
    if got != want:
        raise ConformanceError(
            f"{name}: {backend.name}'s {name} takes ({', '.join(got)}), the spec's takes "
            f"({', '.join(want or [])}): same positional parameters, same order"
        )
    return True


def _label(prefix: str, key: object) -> str:
    return f"{prefix}[{key!r}]" if prefix else str(key)


def _compare_outputs(
    ctx: _FunctionContext,
    call: int,
    label: str,
    got: Any,
    ref64: Any,
    ref32: Any,
    ref_at: Any,
) -> None:
    """Structure, dtype and value of every output against the reference's (recursively)."""
    what = f"output {label!r}" if label else "the output"
    if _is_namedtuple(ref64):
        fields = tuple(f for f, _ in got) if isinstance(got, _Fields) else None
        if fields != ref64._fields:
            ctx.fail(
                call,
                f"{what} must be a NamedTuple with fields {ref64._fields} (the spec's "
                f"{type(ref64).__name__}), got {fields or type(got).__name__}",
            )
        for (field, value), r64, r32, r_at in zip(got, ref64, ref32, ref_at, strict=True):
            _compare_outputs(
                ctx, call, f"{label}.{field}" if label else field, value, r64, r32, r_at
            )
        return
    if isinstance(ref64, tuple):
        if isinstance(got, _Fields):  # a NamedTuple where the spec returns a tuple will do
            got = tuple(value for _, value in got)
        if not isinstance(got, tuple) or len(got) != len(ref64):
            ctx.fail(call, f"{what} must be a tuple of {len(ref64)}, got {_describe(got)}")
        names = OUTPUT_NAMES.get(ctx.name) if not label else None
        for i, (value, r64, r32, r_at) in enumerate(zip(got, ref64, ref32, ref_at, strict=True)):
            sub = names[i] if names else f"{label}[{i}]"
            _compare_outputs(ctx, call, sub, value, r64, r32, r_at)
        return
    if isinstance(ref64, Mapping):
        if not isinstance(got, Mapping) or sorted(got) != sorted(ref64):
            keys = sorted(got) if isinstance(got, Mapping) else None
            ctx.fail(call, f"{what} must be a dict with keys {sorted(ref64)}, got {keys}")
        for key in ref64:
            _compare_outputs(
                ctx, call, _label(label, key), got[key], ref64[key], ref32[key], ref_at[key]
            )
        return
    expected = np.asarray(ref64)
    want_dtype = np.asarray(ref_at).dtype
    # A float output is in the case's dtype. The reference's own may be wider where NumPy
    # promotes (its continuous policy_step returns log_prob and entropy in float64 from
    # float32 inputs: ln(2π)/2 is a float64 scalar; step casts them back), which passes too.
    allowed = {want_dtype, np.dtype(ctx.case.dtype)} if want_dtype.kind == "f" else {want_dtype}
    if isinstance(got, tuple | Mapping) or np.asarray(got).dtype not in allowed:
        shown = ctx.case.dtype if want_dtype.kind == "f" else want_dtype
        ctx.fail(call, f"{what} is {_describe(got)}, expected {shown}{list(expected.shape)}")
    natural = None
    if expected.dtype.kind == "f":
        scale = EPS_RATIO if ctx.case.dtype == "float64" else 1.0
        natural = np.abs(np.asarray(ref32, np.float64) - expected.astype(np.float64)) * scale
    _compare(
        ctx, call, label or "output", got, expected, natural, tolerance(ctx.case.dtype, "state")
    )


def _describe(x: Any) -> str:
    if isinstance(x, Mapping):
        return f"a dict with keys {sorted(x)}"
    if isinstance(x, tuple):
        return f"a tuple of {len(x)}"
    a = np.asarray(x)
    return f"{a.dtype}{list(a.shape)}"


def _assume_clear_sample(args64: Sequence[Any], dtype: str) -> None:
    """Skip a discrete policy input whose two best Gumbel scores nearly tie (any rounding may
    pick the other action)."""
    config, out, noise = args64
    if config.discrete:
        scores = out - np.log(-np.log(noise))
        top2 = np.sort(scores, axis=-1)[:, -2:]
        assume(bool(np.all(top2[:, 1] - top2[:, 0] > tolerance(dtype, "state").tie_margin)))


def _check_step(backend: Any, ctx: _FunctionContext) -> None:
    # The whole step, as the teacher-forced harness checks it (optimizer on the backend's own
    # direction), but through step_functions()["step"].
    case, config = ctx.case, ctx.case.config
    agent, x = case.initial_agent(), case.inputs()[0]
    ref64 = _reference(config, agent, x, "float64")
    ref32 = _reference(config, agent, x, "float32")
    margin = tolerance(case.dtype, "state").tie_margin
    _assume_clear_action(config, cast_agent(agent, "float64"), ref64[2], x.cast("float64"), margin)
    fn = _backend_function(backend, "step")
    try:
        got = _run_backend(backend, fn, config, agent, x)
    except Exception as err:
        ctx.fail(0, f"raised {type(err).__name__}: {err}")
    _compare_step(ctx, 0, config, agent, got, ref64, ref32, "state", resync_optimizer=True)


def n_calls(name: str, case: Case) -> int:
    """How many times the reference's step calls ``name`` from the case's state."""
    if name == "step":
        return 1
    calls = spec_calls(case).get(name)
    if not calls:
        # The suite's own bookkeeping, not the backend: APPLIES no longer matches the spec.
        raise AssertionError(
            f"{name}: the reference's step made no call to it for {case.config!r}; update "
            "APPLIES in rtrrl.conformance.functions"
        )
    return len(calls)


def check_function(backend: Any, name: str, case: Case, call: int | None = None) -> None:
    """``backend.step_functions()[name]`` against the reference's on call number ``call``
    (from 0; None: every call) the reference's step makes from the case's state.

    Raises :class:`ConformanceError` naming the function first.
    """
    release_compiled_code()
    total = n_calls(name, case)
    if name == "step":
        _check_step(backend, _FunctionContext(backend, name, case))
        return
    fn = _backend_function(backend, name)
    reference = rtrrl_spec.step_functions()[name]
    ctx = _FunctionContext(backend, name, case, total, replay_call=call is not None)
    for i, recorded in enumerate(spec_calls(case)[name]):
        if call is not None and i != call:
            continue
        args = cast_floats(recorded, case.dtype)
        args64, args32 = cast_floats(args, "float64"), cast_floats(args, "float32")
        if name == "policy_step":
            _assume_clear_sample(args64, case.dtype)
        ref64, ref32 = reference(*args64), reference(*args32)
        ref_at = ref64 if case.dtype == "float64" else ref32
        try:
            got = _to_numpy(backend, fn(*_to_backend(backend, args)))
        except Exception as err:
            ctx.fail(i, f"raised {type(err).__name__}: {err}")
        _compare_outputs(ctx, i, "", got, ref64, ref32, ref_at)


def replay_function(
    backend: str | Any, name: str, call: int | None = None, **case_kwargs: Any
) -> None:
    """Re-run one per-function case printed by a failure; raises the same error."""
    import rtrrl

    be = rtrrl.use(backend) if isinstance(backend, str) else backend
    case = Case(**case_kwargs)
    check_function(be, name, case, call)
    print(f"{name} case passes on {be.name} / {case.dtype}")
