"""The agent's configuration: every hyper-parameter and mode switch of one RTRRL agent.

A :class:`Config` is a frozen, hashable dataclass of plain Python values, so every backend can
use it as a static argument (``jax.jit(static_argnums=...)``, ``torch.compile`` guards) and
two agents with equal configs compute the same function.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

__all__ = ["NUMERIC_FIELDS", "Config", "SpecError", "numbers_of", "structure_of"]

JACOBIANS = ("rflo", "rtrl")
BODIES = ("ctrnn", "lru", "linear")
TRACES = ("accumulating", "dutch")


class SpecError(ValueError):
    """Raised at the reference's public boundary for input it cannot give a meaning to.

    The message says what was wrong and what to do about it.
    """


# The bool switches of Config: NumPy's bool is accepted for them (and refused as a number).
_BOOL_FIELDS = ("feedback_alignment", "meta_rl", "var_scaling", "freeze_rnn")


@dataclass(frozen=True)
class Config:
    """Hyper-parameters of one RTRRL agent. Defaults are the paper's (appendix, Table 1).

    Exactly one of ``n_actions`` (discrete actions, ``K = n_actions`` logits) and
    ``action_dim`` (continuous actions of dimension ``D``, ``K = 2D`` actor outputs) is set.
    Continuous actions are bounded when ``action_low`` / ``action_high`` are given (the mean is
    squashed into the box and the environment receives the clipped sample), unbounded otherwise.

    Attributes:
        obs_dim: length of the (flattened) observation ``o``.
        n_actions: number of discrete actions.
        action_dim: dimension ``D`` of a continuous action.
        action_low, action_high: per-dimension bounds of a continuous action, or ``None``.
        body: ``"ctrnn"`` (continuous-time RNN, the paper's RTRRL), ``"lru"`` (online linear
            recurrent unit: complex diagonal recurrence, exact online sensitivities, see
            ``rtrrl_spec.lru``) or ``"linear"`` (linear TD(lambda): actor and critic read the
            RNN input ``x`` directly; the ablation).
        n_hidden: ``N``, the number of CT-RNN neurons or LRU units.
        jacobian: ``"rflo"`` (random-feedback local online, the default) or ``"rtrl"`` (exact).
            CT-RNN only: the LRU's sensitivities are always exact, whatever this says.
        freeze_rnn: keep the recurrent body at its initial parameters (a reservoir / echo
            state network): no Jacobian trace, no body update; only actor and critic learn.
        feedback_alignment: route the learning signal into the RNN through fixed random
            matrices ``B_A``, ``B_C`` (on) or through the heads' own weights (off: exact gradient).
        meta_rl: feed the previous action and reward to the RNN with the observation.
        dt: forward-Euler step of the CT-RNN.
        gamma: discount.
        lambda_actor, lambda_critic, lambda_rnn: trace decay of each parameter group.
        eta_pi: scale of the actor's signal into the RNN (``η_π``).
        entropy_rate: ``η_H``, weight of the entropy bonus.
        trace: ``"accumulating"`` or ``"dutch"`` (true-online, applied to the linear critic).
        reward_rate_lr: when set, average-reward TD error ``δ = r − r̄ + γv − v_prev`` with
            ``r̄`` learned at this rate; ``None`` (default) is the discounted TD error.
        var_scaling: continuous actions only: scale every immediate gradient by
            ``min(mean(σ), 1)``.
        lr_td, lr_rnn: Adam learning rates of the ``td`` (actor + critic) and ``rnn`` groups.
        adam_b1, adam_b2, adam_eps: Adam's moment decays and epsilon (outside the square root).
        clip_norm: per-group global-norm clip of the update direction; ``None`` disables it.
        tau_min: lower bound the time constants are clipped to after each update (``≥ dt``).
        lru_r_min, lru_r_max: LRU initialization: the eigenvalue moduli ``|λ|`` are drawn
            uniformly on the ring ``r_min ≤ |λ| ≤ r_max`` of the complex plane.
        lru_max_phase: LRU initialization: eigenvalue phases drawn uniformly in
            ``[0, max_phase)``.
    """

    obs_dim: int
    n_actions: int | None = None
    action_dim: int | None = None
    action_low: tuple[float, ...] | None = None
    action_high: tuple[float, ...] | None = None
    body: Literal["ctrnn", "lru", "linear"] = "ctrnn"
    n_hidden: int = 32
    jacobian: Literal["rflo", "rtrl"] = "rflo"
    feedback_alignment: bool = True
    meta_rl: bool = True
    dt: float = 1.0
    gamma: float = 0.99
    lambda_actor: float = 0.99
    lambda_critic: float = 0.99
    lambda_rnn: float = 0.99
    eta_pi: float = 1.0
    entropy_rate: float = 1e-5
    trace: Literal["accumulating", "dutch"] = "accumulating"
    reward_rate_lr: float | None = None
    var_scaling: bool = True
    lr_td: float = 1e-3
    lr_rnn: float = 1e-3
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    clip_norm: float | None = 1.0
    tau_min: float = 1.0
    freeze_rnn: bool = False
    lru_r_min: float = 0.0
    lru_r_max: float = 1.0
    lru_max_phase: float = 2 * math.pi

    def __post_init__(self) -> None:
        # Bounds given as lists or arrays are normalized to tuples of Python floats so the
        # config stays hashable and JSON-ready.
        for name in ("action_low", "action_high"):
            value = getattr(self, name)
            if value is not None:
                try:
                    object.__setattr__(self, name, tuple(float(v) for v in value))
                except (TypeError, ValueError) as err:
                    raise SpecError(f"{name} must be a sequence of floats, got {value!r}") from err
        # NumPy scalars are numbers (np.float32(1e-3) is a learning rate, np.int64(8) a size):
        # stored as the Python number they equal, so configs compare, hash and save alike.
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.bool_) and f.name in _BOOL_FIELDS:
                object.__setattr__(self, f.name, bool(value))
            elif isinstance(value, np.integer):
                object.__setattr__(self, f.name, int(value))
            elif isinstance(value, np.floating) and type(value) is not float:
                object.__setattr__(self, f.name, float(value))
        self._validate()

    def _validate(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpecError(f"{name} must be a positive int, got {value!r}")

        for name in (*NUMERIC_FIELDS, "clip_norm", "reward_rate_lr"):
            value = getattr(self, name)
            if isinstance(value, bool | np.bool_):
                raise SpecError(f"{name} must be a number, got the bool {value!r}")
        positive_int("obs_dim")
        positive_int("n_hidden")
        if (self.n_actions is None) == (self.action_dim is None):
            raise SpecError(
                "set exactly one of n_actions (discrete actions) and action_dim (continuous "
                f"actions); got n_actions={self.n_actions!r}, action_dim={self.action_dim!r}"
            )
        if self.n_actions is not None:
            positive_int("n_actions")
            if self.n_actions < 2:
                raise SpecError(f"n_actions must be at least 2, got {self.n_actions}")
            if self.action_low is not None or self.action_high is not None:
                raise SpecError("action_low/action_high apply to continuous actions only")
        else:
            positive_int("action_dim")
            if (self.action_low is None) != (self.action_high is None):
                raise SpecError("give both action_low and action_high, or neither (unbounded)")
            if self.action_low is not None:
                lo, hi = self.action_low, self.action_high
                assert hi is not None
                if len(lo) != self.action_dim or len(hi) != self.action_dim:
                    raise SpecError(
                        f"action_low and action_high need {self.action_dim} entries each, "
                        f"got {len(lo)} and {len(hi)}"
                    )
                if not all(
                    math.isfinite(a) and math.isfinite(b) and a < b
                    for a, b in zip(lo, hi, strict=True)
                ):
                    raise SpecError(
                        "action bounds must be finite with low < high in every dimension; "
                        f"got low={lo}, high={hi} (leave both None for an unbounded action)"
                    )
        for name, allowed in (("body", BODIES), ("jacobian", JACOBIANS), ("trace", TRACES)):
            if getattr(self, name) not in allowed:
                raise SpecError(f"unknown {name} {getattr(self, name)!r}; choose one of {allowed}")
        for name in ("feedback_alignment", "meta_rl", "var_scaling", "freeze_rnn"):
            if not isinstance(getattr(self, name), bool):
                raise SpecError(f"{name} must be a bool, got {getattr(self, name)!r}")
        unit_interval = ("gamma", "lambda_actor", "lambda_critic", "lambda_rnn")
        for name in unit_interval:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise SpecError(f"{name} must lie in [0, 1], got {value!r}")
        for name in ("adam_b1", "adam_b2"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value < 1.0):
                raise SpecError(f"{name} must lie in [0, 1), got {value!r}")
        non_negative = ("eta_pi", "entropy_rate", "lr_td", "lr_rnn")
        for name in non_negative:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise SpecError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("dt", "adam_eps", "tau_min"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise SpecError(f"{name} must be a finite number > 0, got {value!r}")
        if self.tau_min < self.dt:
            raise SpecError(
                f"tau_min={self.tau_min} is below dt={self.dt}: the Euler step of a neuron with "
                "tau < dt overshoots and can diverge; raise tau_min or lower dt"
            )
        if self.freeze_rnn and self.body == "linear":
            raise SpecError(
                "freeze_rnn needs a recurrent body (ctrnn or lru); the linear body has none"
            )
        r_min, r_max = self.lru_r_min, self.lru_r_max
        if not (
            isinstance(r_min, int | float)
            and isinstance(r_max, int | float)
            and 0.0 <= r_min < r_max <= 1.0
        ):
            raise SpecError(
                f"LRU ring needs 0 <= lru_r_min < lru_r_max <= 1, got {r_min!r} and {r_max!r} "
                "(|λ| > 1 would make the recurrence explode)"
            )
        phase = self.lru_max_phase
        if not (isinstance(phase, int | float) and math.isfinite(phase) and phase > 0):
            raise SpecError(f"lru_max_phase must be a finite number > 0, got {phase!r}")
        for name in ("clip_norm", "reward_rate_lr"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, int | float) and math.isfinite(value) and value > 0
            ):
                raise SpecError(f"{name} must be None or a finite number > 0, got {value!r}")

    # Derived sizes -------------------------------------------------------------------------

    @property
    def discrete(self) -> bool:
        """True for discrete actions."""
        return self.n_actions is not None

    @property
    def bounded(self) -> bool:
        """True for continuous actions with a box."""
        return self.action_low is not None

    @property
    def action_size(self) -> int:
        """Entries of ``a_prev`` fed to the RNN: ``n_actions`` (one-hot) or ``D``."""
        return self.n_actions if self.n_actions is not None else int(self.action_dim)  # type: ignore[arg-type]

    @property
    def n_out(self) -> int:
        """``K``: actor outputs (logits, or mean and scale pre-activations)."""
        return self.n_actions if self.n_actions is not None else 2 * int(self.action_dim)  # type: ignore[arg-type]

    @property
    def input_dim(self) -> int:
        """``I``: length of the RNN input ``x`` (``[o, a_prev, r]`` with meta-RL, else ``o``)."""
        return self.obs_dim + (self.action_size + 1 if self.meta_rl else 0)

    @property
    def z_dim(self) -> int:
        """``Z = I + N + 1``: columns of ``W`` (input, recurrent, bias)."""
        return self.input_dim + self.n_hidden + 1

    @property
    def feature_dim(self) -> int:
        """``F``: what the heads read: ``N`` hidden units (CT-RNN ``h'``, LRU ``y``), or ``I``
        for the linear body."""
        return self.input_dim if self.body == "linear" else self.n_hidden

    @property
    def recurrent(self) -> bool:
        """True when there is a recurrent body (``ctrnn`` or ``lru``), trained or frozen."""
        return self.body != "linear"

    @property
    def trains_body(self) -> bool:
        """True when the recurrent body learns: it carries a Jacobian trace, eligibility traces
        and the ``rnn`` optimizer group (a recurrent body that is not frozen)."""
        return self.recurrent and not self.freeze_rnn

    def replace(self, **changes: object) -> Config:
        """A copy with some fields changed (validated again)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        unknown = set(changes) - set(values)
        if unknown:
            raise SpecError(f"unknown Config field(s) {sorted(unknown)}; known: {sorted(values)}")
        values.update(changes)
        return Config(**values)  # type: ignore[arg-type]


# Fields that are plain numbers: they change no shape and no branch of the step, so a compiling
# backend can pass them as traced values and share one compilation between configs.
NUMERIC_FIELDS = (
    "dt",
    "gamma",
    "lambda_actor",
    "lambda_critic",
    "lambda_rnn",
    "eta_pi",
    "entropy_rate",
    "lr_td",
    "lr_rnn",
    "adam_b1",
    "adam_b2",
    "adam_eps",
    "tau_min",
    "lru_r_min",
    "lru_r_max",
    "lru_max_phase",
)
_NUMERIC_DEFAULTS = {f.name: f.default for f in fields(Config) if f.name in NUMERIC_FIELDS}


@functools.lru_cache(maxsize=1024)
def structure_of(config: Config) -> Config:
    """The structure of ``config``: the same config with every plain number at its default.

    It decides everything static (shapes, which branches exist) and is hashable, so compiling
    backends use it as their static argument and pass the numbers separately. Action bounds
    keep their length (only their values are numbers); ``clip_norm`` and ``reward_rate_lr``
    keep whether they are ``None``.
    """
    changes: dict[str, object] = dict(_NUMERIC_DEFAULTS)
    if config.bounded:
        D = int(config.action_dim)  # type: ignore[arg-type]
        changes["action_low"], changes["action_high"] = (0.0,) * D, (1.0,) * D
    if config.clip_norm is not None:
        changes["clip_norm"] = 1.0
    if config.reward_rate_lr is not None:
        changes["reward_rate_lr"] = 1.0
    return config.replace(**changes)


@functools.lru_cache(maxsize=1024)
def _numbers(config: Config) -> dict[str, object]:
    c = config
    # Products and differences are formed in Python floats (float64) and rounded once, as the
    # reference does when it multiplies a float32 array by the Python float ``gamma * lambda``.
    values: dict[str, object] = {
        "dt": c.dt,
        "tau_min": c.tau_min,
        "gamma": c.gamma,
        "eta_pi": c.eta_pi,
        "entropy_rate": c.entropy_rate,
        "gl_actor": c.gamma * c.lambda_actor,
        "gl_critic": c.gamma * c.lambda_critic,
        "gl_rnn": c.gamma * c.lambda_rnn,
        "lr_td": c.lr_td,
        "lr_rnn": c.lr_rnn,
        "b1": c.adam_b1,
        "b2": c.adam_b2,
        "omb1": 1.0 - c.adam_b1,
        "omb2": 1.0 - c.adam_b2,
        # Bias corrections 1 − βᵗ can be formed as −expm1(t ln β), accurate in float32 too;
        # ln 0 = −inf gives exactly 1.
        "log_b1": math.log(c.adam_b1) if c.adam_b1 > 0 else -math.inf,
        "log_b2": math.log(c.adam_b2) if c.adam_b2 > 0 else -math.inf,
        "eps": c.adam_eps,
        # Unused when the config says None: its structure (structure_of) has no clip and no
        # average reward, so no backend reads these; 0 keeps them finite.
        "clip_norm": c.clip_norm if c.clip_norm is not None else 0.0,
        "reward_rate_lr": c.reward_rate_lr if c.reward_rate_lr is not None else 0.0,
    }
    if c.bounded:
        values["action_low"] = c.action_low
        values["action_high"] = c.action_high
    return values


def numbers_of(config: Config, dtype: str = "float64") -> dict[str, np.ndarray]:
    """The numbers of ``config``: the half of it that :func:`structure_of` sets to defaults.

    One definition for every backend: a compiling backend passes these as traced values
    beside the static structure, so configs that differ only in numbers share a compilation
    and a population can give each member its own. Keys: ``dt``, ``tau_min``, ``gamma``,
    ``eta_pi``, ``entropy_rate``, ``gl_actor`` / ``gl_critic`` / ``gl_rnn`` (``γλ`` of each
    group), ``lr_td``, ``lr_rnn``, ``b1``, ``b2``, ``omb1`` / ``omb2`` (``1 − β``), ``log_b1`` /
    ``log_b2`` (``ln β``), ``eps``, ``clip_norm``, ``reward_rate_lr`` and, for bounded actions,
    ``action_low`` / ``action_high`` (``(D,)``). Each is a NumPy array of ``dtype`` (0-d except
    the bounds), rounded once from the float64 value.
    """
    return {k: np.asarray(v, dtype=dtype) for k, v in _numbers(config).items()}
