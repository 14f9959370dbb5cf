"""The ``torch`` backend: the RTRRL step of :mod:`rtrrl_spec` as batched PyTorch tensor math.

Installed as ``rtrrl.backends.torch``. Select it with ``rtrrl.use("torch")``; see
``docs/backends/torch.md`` for devices, dtypes, the optimizer and ``torch.compile``.

Design, in short (each point is explained where it happens):

- An agent is a ``dict[str, torch.Tensor]`` in the canonical layout of
  :mod:`rtrrl_spec.layout`, on one device, in float32 or float64.
- The step is :func:`rtrrl_spec.step` written with tensor ops over the whole batch, under
  ``torch.inference_mode()``: every gradient is the reference's explicit formula (eligibility
  traces, RFLO / RTRL Jacobian traces), never autograd, so no graph is ever built.
- The step is pure: it never writes into a tensor it was given. Arrays the step does not
  change (the feedback matrices ``B_A``, ``B_C``) are returned as the same tensor objects, as
  the reference returns the same NumPy arrays; every other entry is a new tensor.
- The optimizer is the spec's per-group global-norm clip and Adam
  (:func:`rtrrl_spec.apply_update`) written with tensor ops, not ``torch.optim.Adam`` and
  ``torch.nn.utils.clip_grad_norm_``, which compute something else (see the docs).
- Inputs are not validated on the hot path (no ``.item()`` syncs, no Python-side checks);
  ``rtrrl_spec.validate_agent(config, backend.to_numpy(agent))`` checks an agent on demand.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import rtrrl_spec
from rtrrl.backends.base import BackendBase, map_tree
from rtrrl_spec import Config

__all__ = ["TorchBackend", "CompiledTorchBackend", "CudaTorchBackend", "DEVICE_ENV_VAR"]

#: Environment variable naming the default device of ``TorchBackend()`` (e.g. ``cuda``); the
#: registry creates backends with no arguments, so this is how ``--backend torch`` reaches a GPU.
DEVICE_ENV_VAR = "RTRRL_TORCH_DEVICE"

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_NUMPY_TO_TORCH = {
    np.dtype("float32"): torch.float32,
    np.dtype("float64"): torch.float64,
    np.dtype("int32"): torch.int32,
    np.dtype("int64"): torch.int64,
    np.dtype("bool"): torch.bool,
}

Agent = dict[str, torch.Tensor]
StepImpl = Callable[..., tuple[Agent, torch.Tensor, Agent]]


def _make_step(config: Config, dtype: torch.dtype, device: torch.device) -> StepImpl:
    """The step for one (config, dtype, device): config-derived constants are closed over.

    Branches on the config are resolved here, in Python, once; the returned function runs only
    tensor ops, which keeps eager dispatch short at small batch sizes and gives
    ``torch.compile`` one static graph per config.
    """
    N, n_in, K = config.n_hidden, config.input_dim, config.n_out
    discrete, has_rnn, meta_rl = config.discrete, config.has_rnn, config.meta_rl
    rtrl = config.jacobian == "rtrl"
    dutch = config.trace == "dutch"
    average_reward = config.reward_rate_lr is not None
    # c = min(mean σ, 1) multiplies the immediate gradients only in this case; elsewhere c = 1
    # and multiplying by it is exact, so it is skipped.
    scaled = not discrete and config.var_scaling
    entropy_rate = config.entropy_rate
    use_entropy = entropy_rate != 0.0  # adding 0 · ∇H changes no bit of a finite direction
    dt, gamma = config.dt, config.gamma
    gl_actor = config.gamma * config.lambda_actor
    gl_critic = config.gamma * config.lambda_critic
    gl_rnn = config.gamma * config.lambda_rnn
    params = rtrrl_spec.params_of(config)
    shapes = {k: rtrrl_spec.layout(config, 1)[k].shape for k in params}
    sizes = [int(np.prod(shapes[k], dtype=np.int64)) for k in params]
    n_td = sum(sizes[: len(rtrrl_spec.TD_PARAMS)])
    total = sum(sizes)
    groups = 2 if has_rnn else 1

    def const(values: Any, dt_: torch.dtype = dtype) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values), dtype=dt_, device=device)

    # The optimizer works on all parameters as one flat vector; these map entries to groups.
    group_of = const(np.repeat(np.arange(groups), [n_td, total - n_td][:groups]), torch.long)
    lr = const(np.repeat([config.lr_td, config.lr_rnn][:groups], [n_td, total - n_td][:groups]))
    # tau ≥ tau_min as one elementwise maximum over the flat vector (-inf elsewhere).
    floor = np.full(total, -np.inf)
    if has_rnn:
        floor[total - N :] = config.tau_min
    lower = const(floor)
    b1, b2, eps, clip = config.adam_b1, config.adam_b2, config.adam_eps, config.clip_norm
    eye_a = const(np.eye(config.action_size)) if discrete and meta_rl else None
    eye_k = const(np.eye(K)) if discrete else None
    eye_n = const(np.eye(N)) if has_rnn and rtrl else None
    if not discrete and config.bounded:
        lo, hi = const(config.action_low), const(config.action_high)
    else:
        lo = hi = None
    half_log_2pi = float(0.5 * np.log(2.0 * np.pi))
    D = K // 2

    def step(
        agent: Mapping[str, torch.Tensor],
        obs: torch.Tensor,
        reward: torch.Tensor,
        done: torch.Tensor,
        noise: torch.Tensor,
    ) -> tuple[Agent, torch.Tensor, Agent]:
        B = obs.shape[0]
        new: Agent = dict(agent)
        # Resets as multiplications by 0/1 (exact for finite values) rather than `where`.
        keep = 1.0 - done.to(dtype)  # (B,)
        keep_col = keep[:, None]

        # 1-2. RNN input; at a boundary the previous action and reward are not fed.
        if meta_rl:
            a_in = eye_a.index_select(0, agent["a_prev"]) if discrete else agent["a_prev"]
            x_parts = [obs, a_in * keep_col, (reward * keep)[:, None]]
        else:
            x_parts = [obs]

        # 3. Body (rtrrl_spec.ctrnn).
        if has_rnn:
            W, tau = agent["W"], agent["tau"]
            h = agent["h"] * keep_col
            # zeta = [x, h, 1] in one cat and one pad.
            zeta = F.pad(torch.cat([*x_parts, h], 1), (0, 1), value=1.0)
            phi = torch.tanh(zeta @ W.T)
            h_next = h + dt * (phi - h) / tau
            dphi = 1.0 - phi * phi
            rate = dt / tau
            dtau_term = dt * (h - phi) / (tau * tau)  # ∂h'/∂tau, local part
            if rtrl:
                # M = I + dt ∂f/∂h; the reset of J is folded into M's columns (M @ (k J)).
                W_h = W[:, n_in : n_in + N]
                M = eye_n + (dphi[:, :, None] * W_h - eye_n) * rate[:, None]
                M = M * keep[:, None, None]
                J_W = torch.bmm(M, agent["J_W"].reshape(B, N, -1)).reshape(B, N, N, -1)
                J_tau = torch.bmm(M, agent["J_tau"])
                # The local term on the diagonal i = j; J_W / J_tau are fresh tensors here, so
                # adding in place writes into nothing the caller owns.
                local = (rate * dphi)[:, :, None] * zeta[:, None, :]
                J_W.diagonal(0, 1, 2).add_(local.transpose(1, 2))
                J_tau.diagonal(0, 1, 2).add_(dtau_term)
            else:
                coef = (1.0 - rate) * keep_col  # decay and reset in one (B, N) factor
                # In place on the fresh product: one (B, N, Z) allocation instead of two (large
                # fresh allocations page-fault, which dominates at large B).
                J_W = (coef[:, :, None] * agent["J_W"]).addcmul_(
                    (rate * dphi)[:, :, None], zeta[:, None, :]
                )
                J_tau = coef * agent["J_tau"] + dtau_term
            features = h_next
            new["h"], new["J_W"], new["J_tau"] = h_next, J_W, J_tau
        else:
            features = torch.cat(x_parts, 1) if meta_rl else obs

        # 4. Heads (rtrrl_spec.heads), parameters as before this step's update.
        W_A, W_C, b_C = agent["W_A"], agent["W_C"], agent["b_C"]
        value = features @ W_C[:, 0] + b_C
        out = features @ W_A
        if discrete:
            log_p = torch.log_softmax(out, -1)
            p = log_p.exp()
            idx = torch.argmax(out - torch.log(-torch.log(noise)), -1)
            action = idx.to(torch.int32)
            sample = action
            dlogp = eye_k.index_select(0, idx) - p
            log_prob = log_p.gather(1, idx[:, None])[:, 0]
            entropy = -(p * log_p).sum(-1)
            dent = -p * (log_p + entropy[:, None])
            c_col = None
        else:
            m, s = out[:, :D], out[:, D:]
            if lo is not None:
                sig_m = torch.sigmoid(m)
                mu = lo + (hi - lo) * sig_m
                dmu_dm = (hi - lo) * sig_m * (1.0 - sig_m)
            else:
                mu = m
            sig_s = torch.sigmoid(s)
            pre_sigma = 4.0 * sig_s - 2.0
            sigma = F.softplus(pre_sigma)
            dsigma_ds = torch.sigmoid(pre_sigma) * 4.0 * sig_s * (1.0 - sig_s)
            sample = mu + sigma * noise
            action = torch.clamp(sample, lo, hi) if lo is not None else sample
            log_sigma = torch.log(sigma)
            log_prob = (-0.5 * noise * noise - log_sigma - half_log_2pi).sum(-1)
            entropy = (log_sigma + (0.5 + half_log_2pi)).sum(-1)
            dlogp_m = noise / sigma
            if lo is not None:
                dlogp_m = dlogp_m * dmu_dm
            dent_s = dsigma_ds / sigma
            dlogp = torch.cat([dlogp_m, (noise * noise - 1.0) / sigma * dsigma_ds], -1)
            dent = F.pad(dent_s, (D, 0))  # ∂H/∂m = 0
            c_col = torch.clamp(sigma.mean(-1, keepdim=True), max=1.0) if scaled else None

        # 5. Immediate gradients: per environment f ⊗ (∂/∂out), times c where it applies.
        cf = features if c_col is None else c_col * features
        grad_W_A = cf[:, :, None] * dlogp[:, None, :]
        if dutch or c_col is None:
            grad_W_C, grad_b_C = features[:, :, None], keep.new_ones((B, 1))
        else:
            grad_W_C, grad_b_C = cf[:, :, None], c_col
        if has_rnn:
            B_A = agent["B_A"] if config.feedback_alignment else W_A
            B_C = agent["B_C"] if config.feedback_alignment else W_C
            signal = torch.addmm(B_C[:, 0], dlogp, B_A.T, alpha=config.eta_pi)
            if c_col is not None:
                signal = c_col * signal
            if use_entropy:
                ent_signal = dent @ B_A.T
                if c_col is not None:
                    ent_signal = c_col * ent_signal
            if rtrl:
                # ∇_R = J'ᵀ g per environment and Σ_b J'ᵀ g_H, in one pass over the large J'.
                sig = torch.stack([signal, ent_signal], 1) if use_entropy else signal[:, None, :]
                proj_W = torch.bmm(sig, J_W.reshape(B, N, -1))
                proj_tau = torch.bmm(sig, J_tau)
                grad_W, grad_tau = proj_W[:, 0].reshape(B, N, -1), proj_tau[:, 0]
                if use_entropy:
                    ent_W, ent_tau = proj_W[:, 1].sum(0).reshape(N, -1), proj_tau[:, 1].sum(0)

        # 6. TD error (rtrrl_spec.agent.td_error).
        r_minus = reward - agent["reward_rate"] if average_reward else reward
        delta = r_minus + gamma * keep * value - agent["v_prev"]

        # 7. Batch-mean ascent directions, from the traces as they were. Σ_b δ_b e_b is one
        # matrix-vector product per trace instead of a (B, ...) temporary and a mean.
        def dmean(coef: torch.Tensor, trace: torch.Tensor) -> torch.Tensor:
            return (coef @ trace.reshape(B, -1)).reshape(trace.shape[1:]) / B

        direction: Agent = {}
        dir_W_A = dmean(delta, agent["e_W_A"])
        if use_entropy:
            dir_W_A = dir_W_A + entropy_rate * ((cf.T @ dent) / B)
        direction["W_A"] = dir_W_A
        if dutch:
            # True-online correction with v̂_prev under the current critic (spec, step 7).
            x_W_C, x_b_C = agent["x_W_C"], agent["x_b_C"]
            value_now = x_W_C[:, :, 0] @ W_C[:, 0] + x_b_C[:, 0] * b_C[0]
            corr = value_now - agent["v_prev"]
            direction["W_C"] = dmean(delta, agent["e_W_C"]) - dmean(corr, x_W_C)
            direction["b_C"] = dmean(delta, agent["e_b_C"]) - dmean(corr, x_b_C)
        else:
            direction["W_C"] = dmean(delta, agent["e_W_C"])
            direction["b_C"] = dmean(delta, agent["e_b_C"])
        if has_rnn:
            dir_W = dmean(delta, agent["e_W"])
            dir_tau = dmean(delta, agent["e_tau"])
            if use_entropy:
                if not rtrl:  # (RTRL: computed with ∇_R above)
                    # Σ_b gH_bi J[b, i, :] as a batched (1, B) @ (B, Z) product per neuron.
                    ent_W = torch.bmm(ent_signal.T[:, None, :], J_W.transpose(0, 1))[:, 0]
                    ent_tau = (ent_signal * J_tau).sum(0)
                dir_W = dir_W + entropy_rate * (ent_W / B)
                dir_tau = dir_tau + entropy_rate * (ent_tau / B)
            direction["W"], direction["tau"] = dir_W, dir_tau

        # Clip per group by global norm, then Adam (rtrrl_spec.apply_update), on one flat vector.
        d_flat = torch.cat([direction[k].reshape(-1) for k in params])
        p_flat = torch.cat([agent[k].reshape(-1) for k in params])
        mu_flat = torch.cat([agent[f"mu_{k}"].reshape(-1) for k in params])
        nu_flat = torch.cat([agent[f"nu_{k}"].reshape(-1) for k in params])
        sq = d_flat * d_flat
        if has_rnn:
            norms = torch.stack([sq[:n_td].sum(), sq[n_td:].sum()]).sqrt()
            counts = torch.stack([agent["count_td"], agent["count_rnn"]]) + 1
        else:
            norms = sq.sum().sqrt()[None]
            counts = agent["count_td"][None] + 1
        if clip is not None:
            factor = clip / torch.clamp(norms, min=clip)  # c / max(‖Δ‖, c)
            d_flat = d_flat * factor.index_select(0, group_of)
        t = counts.to(torch.float64)
        # Bias corrections in float64, rounded to the agent's dtype once, as the reference's
        # Python-float corrections are when they meet a float32 array.
        bc1 = (1.0 - torch.pow(b1, t)).to(dtype).index_select(0, group_of)
        bc2 = (1.0 - torch.pow(b2, t)).to(dtype).index_select(0, group_of)
        mu_new = b1 * mu_flat + (1.0 - b1) * d_flat
        nu_new = b2 * nu_flat + (1.0 - b2) * (d_flat * d_flat)
        p_new = p_flat + lr * (mu_new / bc1) / (torch.sqrt(nu_new / bc2) + eps)
        if has_rnn:
            p_new = torch.maximum(p_new, lower)
        upd_flat = p_new - p_flat

        info: Agent = {}
        for k, p_k, mu_k, nu_k, u_k in zip(
            params,
            p_new.split(sizes),
            mu_new.split(sizes),
            nu_new.split(sizes),
            upd_flat.split(sizes),
            strict=True,
        ):
            shape = shapes[k]
            new[k], new[f"mu_{k}"], new[f"nu_{k}"] = (
                p_k.view(shape),
                mu_k.view(shape),
                nu_k.view(shape),
            )
            info[f"update.{k}"] = u_k.view(shape)
        new["count_td"] = counts[0]
        info["grad_norm_td"] = norms[0]
        if has_rnn:
            new["count_rnn"] = counts[1]
            info["grad_norm_rnn"] = norms[1]
        if average_reward:
            new["reward_rate"] = agent["reward_rate"] + config.reward_rate_lr * delta.mean()

        # 8. Traces: reset at the boundary, decay, add this step's gradients.
        if dutch:
            e_W_C = (gl_critic * keep)[:, None, None] * agent["e_W_C"]
            e_b_C = (gl_critic * keep)[:, None] * agent["e_b_C"]
            inner = (e_W_C[:, :, 0] * grad_W_C[:, :, 0]).sum(-1) + e_b_C[:, 0] * grad_b_C[:, 0]
            weight = (1.0 - config.lr_td * inner)[:, None]
            new["e_W_C"] = torch.addcmul(e_W_C, weight[:, :, None], grad_W_C)
            new["e_b_C"] = torch.addcmul(e_b_C, weight, grad_b_C)
            new["x_W_C"], new["x_b_C"] = grad_W_C, grad_b_C
        else:
            new["e_W_C"] = (gl_critic * keep)[:, None, None] * agent["e_W_C"] + grad_W_C
            new["e_b_C"] = (gl_critic * keep)[:, None] * agent["e_b_C"] + grad_b_C
        new["e_W_A"] = ((gl_actor * keep)[:, None, None] * agent["e_W_A"]).add_(grad_W_A)
        if has_rnn:
            keep_rnn = gl_rnn * keep
            if rtrl:
                new["e_W"] = (keep_rnn[:, None, None] * agent["e_W"]).add_(grad_W)
                new["e_tau"] = (keep_rnn[:, None] * agent["e_tau"]).add_(grad_tau)
            else:
                new["e_W"] = (keep_rnn[:, None, None] * agent["e_W"]).addcmul_(
                    signal[:, :, None], J_W
                )
                new["e_tau"] = torch.addcmul(keep_rnn[:, None] * agent["e_tau"], signal, J_tau)

        # 9. Carry.
        new["v_prev"] = value
        new["a_prev"] = action
        info["td_error"] = delta
        info["value"] = value
        info["log_prob"] = log_prob
        info["entropy"] = entropy
        info["sample"] = sample
        info["features"] = features
        for k in params:
            info[f"direction.{k}"] = direction[k]
        return new, action, info

    return step


def _fresh_code(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A copy of ``fn`` with its own code object.

    Dynamo keys its compile cache (and its recompile limit, 8 by default) on the code object,
    which every closure of :func:`_make_step` shares; past the limit it silently runs eager.
    One code object per config gives each config a cache of its own.
    """
    code = fn.__code__.replace()
    if code is fn.__code__:  # replace() without changes may return the same object
        code = fn.__code__.replace(co_name=fn.__code__.co_name + "_")
    return types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def _tensor(x: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if x.dtype == dtype and x.device == device else x.to(device, dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


class TorchBackend(BackendBase):
    """RTRRL on PyTorch tensors.

    Args:
        device: where agents live (``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``);
            default ``$RTRRL_TORCH_DEVICE``, else ``"cpu"``.
        compile: also offer a ``torch.compile``-d step (``step_variants()["compiled"]``) and
            use it for :meth:`step`. Compiling takes seconds per config (see the docs), so it
            is opt-in; the eager step is always available as :meth:`step_eager`.
    """

    name = "torch"
    supported_dtypes = ("float32", "float64")

    def __init__(self, device: str | torch.device | None = None, compile: bool = False) -> None:
        if device is None:
            device = os.environ.get(DEVICE_ENV_VAR, "").strip() or "cpu"
        self._device = torch.device(device)
        if self._device.type == "cuda" and self._device.index is None:
            self._device = torch.device("cuda", torch.cuda.current_device())
        self.compile = compile
        self._eager: dict[tuple[Config, torch.dtype, torch.device], StepImpl] = {}
        self._compiled: dict[tuple[Config, torch.dtype, torch.device], StepImpl] = {}

    # --- protocol --------------------------------------------------------------------------

    def version(self) -> str:
        return torch.__version__

    def device(self) -> str:
        return str(self._device)

    def to_numpy(self, tree: Any) -> Any:
        """Tensors (or dicts of them) to NumPy on the CPU; dtypes exact, always copies."""

        def one(x: Any) -> np.ndarray:
            if isinstance(x, torch.Tensor):
                return x.detach().to("cpu", copy=True).numpy()
            return np.array(x, copy=True)

        return map_tree(one, tree)

    def from_numpy(self, tree: Any) -> Any:
        """NumPy arrays (or dicts of them) to tensors on this backend's device; dtypes exact."""

        def one(x: Any) -> torch.Tensor:
            array = np.asarray(x)
            if array.dtype not in _NUMPY_TO_TORCH:
                raise TypeError(f"no torch dtype for NumPy dtype {array.dtype}")
            # A copy, so the caller's array and the tensor never share memory.
            return torch.tensor(array, dtype=_NUMPY_TO_TORCH[array.dtype], device=self._device)

        return map_tree(one, tree)

    def init(
        self, config: Config, batch_size: int, seed: int, dtype: str = "float32"
    ) -> dict[str, torch.Tensor]:
        """The reference's initial agent (same numbers in every backend), on this device."""
        return self.from_numpy(rtrrl_spec.init(config, batch_size, seed, dtype=dtype))

    def step(
        self,
        config: Config,
        agent: Mapping[str, torch.Tensor],
        obs: Any,
        reward: Any,
        done: Any,
        noise: Any,
    ) -> tuple[Agent, torch.Tensor, Agent]:
        """One pure step (:func:`rtrrl_spec.step`); the compiled one when ``compile=True``.

        ``agent`` is not modified; the returned agent holds new tensors except for arrays the
        step does not change (``B_A``, ``B_C``), which are the input's own tensors. Inputs may
        be tensors or NumPy arrays; they are cast to the agent's float dtype and device.
        """
        if self.compile:
            return self.step_compiled(config, agent, obs, reward, done, noise)
        return self.step_eager(config, agent, obs, reward, done, noise)

    def rng(self, seed: int) -> torch.Generator:
        """A ``torch.Generator`` on this device, seeded with ``seed``."""
        gen = torch.Generator(device=self._device)
        gen.manual_seed(int(seed))
        return gen

    def draw_noise(
        self, config: Config, batch_size: int, rng: torch.Generator, dtype: str
    ) -> tuple[torch.Tensor, torch.Generator]:
        """Noise of :func:`rtrrl_spec.noise_shape`: U(0, 1) strictly inside, or N(0, 1).

        The generator is stateful: it is advanced and returned.
        """
        shape = rtrrl_spec.noise_shape(config, batch_size)
        torch_dtype = _DTYPES[dtype]
        if config.discrete:
            u = torch.rand(shape, generator=rng, dtype=torch_dtype, device=self._device)
            # rand draws from [0, 1): 0 would make log(-log u) infinite, so keep both ends
            # inside the open interval, as rtrrl_spec.draw_noise does.
            tiny = torch.finfo(torch_dtype).tiny
            below_one = float(np.nextafter(np.asarray(1.0, dtype), np.asarray(0.0, dtype)))
            return torch.clamp(u, tiny, below_one), rng
        noise = torch.randn(shape, generator=rng, dtype=torch_dtype, device=self._device)
        return noise, rng

    # --- variants --------------------------------------------------------------------------

    def step_variants(self) -> dict[str, Callable[..., tuple[Agent, torch.Tensor, Agent]]]:
        """The step functions the conformance suite checks: eager, and compiled if enabled."""
        variants = {"eager": self.step_eager}
        if self.compile:
            variants["compiled"] = self.step_compiled
        return variants

    def step_eager(
        self,
        config: Config,
        agent: Mapping[str, torch.Tensor],
        obs: Any,
        reward: Any,
        done: Any,
        noise: Any,
    ) -> tuple[Agent, torch.Tensor, Agent]:
        """The step op by op (no compilation)."""
        return self._run(self._eager, False, config, agent, obs, reward, done, noise)

    def step_compiled(
        self,
        config: Config,
        agent: Mapping[str, torch.Tensor],
        obs: Any,
        reward: Any,
        done: Any,
        noise: Any,
    ) -> tuple[Agent, torch.Tensor, Agent]:
        """The step through ``torch.compile`` (one compiled graph per config, dtype, device,
        recompiled when the batch size changes)."""
        return self._run(self._compiled, True, config, agent, obs, reward, done, noise)

    def _run(
        self,
        cache: dict[tuple[Config, torch.dtype, torch.device], StepImpl],
        compiled: bool,
        config: Config,
        agent: Mapping[str, torch.Tensor],
        obs: Any,
        reward: Any,
        done: Any,
        noise: Any,
    ) -> tuple[Agent, torch.Tensor, Agent]:
        W_A = agent["W_A"]
        dtype, device = W_A.dtype, W_A.device
        key = (config, dtype, device)
        fn = cache.get(key)
        if fn is None:
            fn = _make_step(config, dtype, device)
            if compiled:
                fn = torch.compile(_fresh_code(fn), dynamic=False, fullgraph=True)
            cache[key] = fn
        with torch.inference_mode():
            return fn(
                agent,
                _tensor(obs, dtype, device),
                _tensor(reward, dtype, device),
                _tensor(done, torch.bool, device),
                _tensor(noise, dtype, device),
            )

    # --- devices ---------------------------------------------------------------------------

    @staticmethod
    def to_device(agent: Mapping[str, torch.Tensor], device: str | torch.device) -> Agent:
        """The agent on ``device``, dtypes unchanged (a copy unless it is already there)."""
        return {k: v.to(device) for k, v in agent.items()}


class CompiledTorchBackend(TorchBackend):
    """``TorchBackend(compile=True)``, by import string for the conformance suite:
    ``--backend rtrrl.backends.torch:CompiledTorchBackend``."""

    conformance_name = "rtrrl.backends.torch:CompiledTorchBackend"

    def __init__(self, device: str | torch.device | None = None) -> None:
        super().__init__(device=device, compile=True)


class CudaTorchBackend(TorchBackend):
    """``TorchBackend("cuda")`` with TF32 off, for the GPU conformance run.

    TF32 matrix products round inputs to 10 mantissa bits, far outside the float32 tolerance;
    the spec is IEEE float32 / float64 arithmetic, so this backend turns TF32 off (globally,
    as PyTorch only offers it globally).
    """

    conformance_name = "rtrrl.backends.torch:CudaTorchBackend"

    def __init__(self) -> None:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        super().__init__(device="cuda")
