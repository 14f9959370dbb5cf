"""The one tolerance table of the conformance suite, keyed by dtype and quantity.

An entry ``i`` of a backend's array passes when::

    |backend_i − ref64_i| <= rtol · |ref64_i| + floor · max|ref64| + natural · cond_i

``ref64`` is the reference evaluated in float64 on exactly the values the backend received.
``cond_i`` is an estimate of how much rounding alone moves entry ``i`` at this input: the
difference between the reference run in float32 and in float64 on the same values. For float64
backends it is scaled by ``eps64 / eps32 = 2**-29``. This keeps the table tight where the math
is well conditioned (float64 stays near 1e-10 relative) and honest where it is not (a
difference of nearly equal numbers), without widening anything by hand.

Quantities:

- ``state``: per-environment state and ``info`` computed before the optimizer.
- ``optimizer``: parameters, Adam moments and applied updates, compared against the reference
  optimizer applied to the backend's *own* update direction (the direction itself is checked
  as ``state``), because Adam's ``g / (|g| + ε)`` amplifies rounding of a direction near zero.
  Here the rounding estimate is the spacing of ``dtype`` numbers at the parameter's magnitude,
  the best any implementation can store.
- ``free_running``: trajectories the backend runs alone; ``rtol`` grows by ``growth`` per step.

``tie_margin`` is the smallest gap between the two best Gumbel scores of a discrete action for
which the sampled action must match exactly; closer ties are not drawn (``hypothesis.assume``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Tolerance", "TOLERANCES", "tolerance", "EPS_RATIO"]

# eps(float64) / eps(float32): scales a float32-vs-float64 rounding estimate to float64.
EPS_RATIO = 2.0**-29


@dataclass(frozen=True)
class Tolerance:
    """One row of the table (see module docstring for the formula)."""

    rtol: float
    floor: float
    natural: float
    growth: float = 0.0
    tie_margin: float = 0.0

    def at_step(self, t: int) -> Tolerance:
        """The row for step ``t`` of a free-running trajectory."""
        return Tolerance(
            self.rtol * (1.0 + self.growth * t),
            self.floor * (1.0 + self.growth * t),
            self.natural,
            self.growth,
            self.tie_margin,
        )


TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("float64", "state"): Tolerance(rtol=1e-10, floor=1e-12, natural=16.0, tie_margin=1e-9),
    ("float64", "optimizer"): Tolerance(rtol=1e-10, floor=1e-12, natural=2.0),
    ("float64", "free_running"): Tolerance(
        rtol=1e-10, floor=1e-12, natural=16.0, growth=0.0, tie_margin=1e-9
    ),
    ("float32", "state"): Tolerance(rtol=1e-4, floor=1e-5, natural=16.0, tie_margin=1e-3),
    ("float32", "optimizer"): Tolerance(rtol=1e-4, floor=1e-5, natural=2.0),
    ("float32", "free_running"): Tolerance(
        rtol=1e-4, floor=1e-5, natural=16.0, growth=1.0, tie_margin=1e-3
    ),
}


def tolerance(dtype: str, quantity: str) -> Tolerance:
    """The row for ``dtype`` and ``quantity``."""
    try:
        return TOLERANCES[(dtype, quantity)]
    except KeyError:
        known = sorted({q for _, q in TOLERANCES})
        raise KeyError(
            f"no tolerance for dtype={dtype!r}, quantity={quantity!r}; known: {known}"
        ) from None
