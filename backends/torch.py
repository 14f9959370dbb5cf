"""The ``torch`` backend: the RTRRL step of :mod:`rtrrl_spec` as batched PyTorch tensor math.

Installed as ``rtrrl.backends.torch``. Select it with ``rtrrl.use("torch")``; see
``docs/backends/torch.md`` for devices, dtypes, the optimizer and ``torch.compile``.

Design, in short (each point is explained where it happens):

- An agent is a ``dict[str, torch.Tensor]`` in the canonical layout of
  :mod:`rtrrl_spec.layout`, on one device, in float32 or float64.
- The step is :func:`rtrrl_spec.step` written with tensor ops over the whole batch, under
  ``torch.inference_mode()``: every gradient is the reference's explicit formula (eligibility
  traces, RFLO / RTRL Jacobian traces, the LRU's exact sensitivities), never autograd, so no
  graph is ever built. The LRU's complex numbers are (re, im) pairs of real tensors, as in
  :mod:`rtrrl_spec.lru`, so a float32 agent stays float32.
- The step is pure: it never writes into a tensor it was given. Arrays the step does not
  change (the feedback matrices ``B_A``, ``B_C``, a frozen body's parameters) are returned as
  the same tensor objects, as the reference returns the same NumPy arrays; every other entry
  is a new tensor.
- The optimizer is the spec's per-group global-norm clip and Adam
  (:func:`rtrrl_spec.apply_update`) written with tensor ops, not ``torch.optim.Adam`` and
  ``torch.nn.utils.clip_grad_norm_``, which compute something else (see the docs).
- Inputs are not validated on the hot path (no ``.item()`` syncs, no Python-side checks);
  ``rtrrl_spec.validate_agent(config, backend.to_numpy(agent))`` checks an agent on demand.
"""

from __future__ import annotations

import os
import threading
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


def _make_step(
    config: Config,
    dtype: torch.dtype,
    device: torch.device,
    compiled: bool = False,
    row_sums: bool = False,
) -> StepImpl:
    """The step for one (config, dtype, device): config-derived constants are closed over.

    Branches on the config are resolved here, in Python, once; the returned function runs only
    tensor ops, which keeps eager dispatch short at small batch sizes and gives
    ``torch.compile`` one static graph per config.

    ``row_sums`` (compiled, CPU, one thread only; other bodies and RTRL ignore it): RFLO's
    large trace update runs on (B·N, Z) rows, and its two sums over the batch
    (Σ_b δ_b e_W[b] / B and the entropy projection Σ_b gH_b J_W'[b]) are index_add_ over
    those rows. Inductor then fuses them into the one
    loop that writes J_W' and e_W': four passes over the (B, N, Z) traces, in memory order.
    Written as products or as ``sum(0)``, inductor reduces over the batch column by column
    (rows 5 KB apart at N = 32) in a loop of its own: the whole step measured 1.35x slower at
    B = 1024 that way (benchmarks/torch_row_sums.py). TorchBackend.row_sums_min_batch says
    from which batch size on the row form is used.
    Parallel, inductor would turn these sums into atomic adds, whose order (and so the last
    bits) changes from run to run; hence one thread only.

    At small B the eager step's cost is the number of ATen calls (about 1-3 µs each), so the
    step is written to make few of them. Measured on the development CPU: an op between a
    tensor and a Python float (``x * 0.99``, ``1.0 - x``) costs 2.5-3.5 µs, because the float
    is wrapped into a tensor and cast for every call, against 1 µs for the same op with a
    0-dim tensor of the agent's dtype; so constants are such tensors, made once here (``_c``).
    Python floats remain only where an op takes them as a plain argument (``alpha=``,
    ``value=``, ``min=``), which costs nothing extra.
    """
    N, n_in, K = config.n_hidden, config.input_dim, config.n_out
    discrete, meta_rl = config.discrete, config.meta_rl
    # The body: ctrnn or lru steps h (trained or frozen); only a trained body carries
    # Jacobians / sensitivities, body eligibility traces and the rnn optimizer group.
    is_ctrnn, is_lru = config.body == "ctrnn", config.body == "lru"
    trains = config.trains_body
    rnn = rtrrl_spec.rnn_params(config)
    rtrl = config.jacobian == "rtrl"
    row_sums = row_sums and is_ctrnn and trains and not rtrl  # an RFLO-only form
    dutch = config.trace == "dutch"
    average_reward = config.reward_rate_lr is not None
    # c = min(mean σ, 1) multiplies the immediate gradients only in this case; elsewhere c = 1
    # and multiplying by it is exact, so it is skipped.
    scaled = not discrete and config.var_scaling
    entropy_rate = config.entropy_rate
    use_entropy = entropy_rate != 0.0  # adding 0 · ∇H changes no bit of a finite direction
    dt, gamma = config.dt, config.gamma
    params = rtrrl_spec.params_of(config)
    shapes = {k: rtrrl_spec.layout(config, 1)[k].shape for k in params}
    sizes = [int(np.prod(shapes[k], dtype=np.int64)) for k in params]
    n_td = sum(sizes[: len(rtrrl_spec.TD_PARAMS)])
    total = sum(sizes)
    groups = 2 if trains else 1
    flat_1d = {k: len(shapes[k]) == 1 for k in params}  # these need no view to/from flat
    opt_keys = {k: (f"mu_{k}", f"nu_{k}", f"update.{k}", f"direction.{k}") for k in params}
    flat_keys = tuple(params) + tuple(f"mu_{k}" for k in params) + tuple(f"nu_{k}" for k in params)

    def const(values: Any, dt_: torch.dtype = dtype) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values), dtype=dt_, device=device)

    _c = const  # 0-dim constants read better as _c(1.0)
    one = _c(1.0)
    # group_ind[g, i] = 1 where flat entry i belongs to group g: per-group sums of squares and
    # the expansion of per-group factors to entries are then one matrix-vector product each
    # (exact for the expansion: one 1 per column), where index_select costs ~5 µs per call.
    ind = np.zeros((groups, total))
    ind[0, :n_td] = 1.0
    if trains:
        ind[1, n_td:] = 1.0
    group_ind = const(ind)
    group_ind_t = const(ind.T.copy())
    same_lr = not trains or config.lr_td == config.lr_rnn
    lr_flat = (
        None if same_lr else const(np.repeat([config.lr_td, config.lr_rnn], [n_td, total - n_td]))
    )
    # tau ≥ tau_min as one elementwise maximum over the flat vector (-inf elsewhere); only a
    # trained CT-RNN has tau in the optimizer (apply_update: `if "tau" in params`).
    clip_tau = "tau" in params
    floor = np.full(total, -np.inf)
    if clip_tau:
        start = sum(sizes[: params.index("tau")])
        floor[start : start + N] = config.tau_min
    lower = const(floor)
    b1, b2, eps, clip = config.adam_b1, config.adam_b2, config.adam_eps, config.clip_norm
    # β1^t and β2^t for both groups in one float64 pow: bases (2, 1) against counts (groups,).
    betas = const([[b1], [b2]], torch.float64)
    one64 = const(1.0, torch.float64)
    one_i = const(1, torch.int32)
    b1_c, b2_c, eps_c = _c(b1), _c(b2), _c(eps)
    clip_c = _c(clip) if clip is not None else None
    gamma_c = _c(gamma)
    dt_c = _c(dt)
    # One decay factor per distinct γλ (all three are equal by default: computed once).
    gl_values = {
        "actor": gamma * config.lambda_actor,
        "critic": gamma * config.lambda_critic,
        "rnn": gamma * config.lambda_rnn,
    }
    gl_consts = {v: _c(v) for v in gl_values.values()}
    eye_a = const(np.eye(config.action_size)) if discrete and meta_rl else None
    eye_n = const(np.eye(N)) if is_ctrnn and trains and rtrl else None
    if not discrete and config.bounded:
        lo, hi = const(config.action_low), const(config.action_high)
        span = hi - lo
    else:
        lo = hi = span = None
    half_log_2pi = float(0.5 * np.log(2.0 * np.pi))
    half_log_2pi_c = _c(half_log_2pi)
    ent_const_c = _c(0.5 + half_log_2pi)
    four_c, minus_two_c, minus_half_c = _c(4.0), _c(-2.0), _c(-0.5)
    D = K // 2
    Z_rows = n_in + N + 1  # the width of [x, h, 1]

    def step(
        agent: Mapping[str, torch.Tensor],
        obs: torch.Tensor,
        reward: torch.Tensor,
        done: torch.Tensor,
        noise: torch.Tensor,
        bufs: Mapping[str, torch.Tensor] | None = None,
        flat_memo: list[Any] | None = None,
    ) -> tuple[Agent, torch.Tensor, Agent]:
        # bufs (CPU only): buffers for the large CT-RNN results, by name and shape as in
        # step.buffer_shapes(B) (see _run): "rtrl" (the eager RTRL product over J_W), or
        # RFLO's new "J_W" and "e_W"; None allocates them. Never a tensor the caller can
        # still see.
        # flat_memo (eager only): a one-slot memo [(stacked, handed_out)] of the previous step's
        # flat optimizer rows, see step 7.
        B = obs.shape[0]
        new: Agent = dict(agent)
        ones_b1 = one.expand(B, 1)  # a view of the constant 1, only ever read
        # Resets as multiplications by 0/1 (exact for finite values) rather than `where`.
        keep = one - done.to(dtype)  # (B,)
        keep_col = keep[:, None]

        # 1-2. RNN input; at a boundary the previous action and reward are not fed.
        if meta_rl:
            a_in = eye_a.index_select(0, agent["a_prev"]) if discrete else agent["a_prev"]
            x_parts = [obs, a_in * keep_col, (reward * keep)[:, None]]
        else:
            x_parts = [obs]

        # 3. Body. CT-RNN (rtrrl_spec.ctrnn): h' here; the Jacobian traces after the heads,
        # which give the signals RTRL projects through J' in the same product that computes
        # it. LRU (rtrrl_spec.lru): h', y and, when trained, the exact sensitivities, in real
        # arithmetic on (re, im) pairs. A frozen body steps h only.
        if is_ctrnn:
            W, tau = agent["W"], agent["tau"]
            h = agent["h"] * keep_col
            zeta = torch.cat([*x_parts, h, ones_b1], 1)  # [x, h, 1]
            phi = torch.tanh(torch.mm(zeta, W.t()))
            rate = one / tau if dt == 1.0 else dt_c / tau
            # h' = h + dt (φ − h) / τ and ∂h'/∂τ (local) = dt (h − φ) / τ², sharing (h − φ) dt/τ.
            h_rate = (h - phi) * rate
            h_next = h - h_rate
            if trains:
                dtau_term = h_rate / tau
                dphi = torch.addcmul(one, phi, phi, value=-1.0)  # 1 − φ²
            new["h"] = features = h_next
        elif is_lru:
            x = torch.cat(x_parts, 1) if meta_rl else obs
            # λ = exp(−exp ν) e^{i exp θ}, norm = exp γ (rtrrl_spec.lru.lru_step).
            exp_nu = torch.exp(agent["log_nu"])
            modulus = torch.exp(-exp_nu)
            phase = torch.exp(agent["log_theta"])
            lam_re, lam_im = modulus * torch.cos(phase), modulus * torch.sin(phase)
            norm = torch.exp(agent["log_gamma"])
            u_re, u_im = F.linear(x, agent["B_re"]), F.linear(x, agent["B_im"])
            h_re, h_im = agent["h_re"] * keep_col, agent["h_im"] * keep_col
            # h' = λ ⊙ h + exp(γ) ⊙ u
            nu_re, nu_im = norm * u_re, norm * u_im
            hn_re = lam_re * h_re - lam_im * h_im + nu_re
            hn_im = lam_re * h_im + lam_im * h_re + nu_im
            C_re, C_im = agent["C_re"], agent["C_im"]
            # y = Re(C h') = C_re Re h' − C_im Im h'
            features = F.linear(hn_re, C_re) - F.linear(hn_im, C_im)
            new["h_re"], new["h_im"] = hn_re, hn_im
            if trains:
                # Sensitivities at h' from those at h (reset at a boundary), parameters fixed.
                keep_3 = keep[:, None, None]
                Jl_re, Jl_im = agent["J_lam_re"] * keep_col, agent["J_lam_im"] * keep_col
                Jg_re, Jg_im = agent["J_gam_re"] * keep_col, agent["J_gam_im"] * keep_col
                Ji_re, Ji_im = agent["J_in_re"] * keep_3, agent["J_in_im"] * keep_3
                J_lam_re = lam_re * Jl_re - lam_im * Jl_im + h_re
                J_lam_im = lam_re * Jl_im + lam_im * Jl_re + h_im
                J_gam_re = lam_re * Jg_re - lam_im * Jg_im + nu_re
                J_gam_im = lam_re * Jg_im + lam_im * Jg_re + nu_im
                lam_re_m, lam_im_m = lam_re[:, None], lam_im[:, None]
                J_in_re = lam_re_m * Ji_re - lam_im_m * Ji_im + norm[None, :, None] * x[:, None, :]
                J_in_im = lam_re_m * Ji_im + lam_im_m * Ji_re
                new["J_lam_re"], new["J_lam_im"] = J_lam_re, J_lam_im
                new["J_gam_re"], new["J_gam_im"] = J_gam_re, J_gam_im
                new["J_in_re"], new["J_in_im"] = J_in_re, J_in_im
        else:
            features = torch.cat(x_parts, 1) if meta_rl else obs

        # 4. Heads (rtrrl_spec.heads), parameters as before this step's update.
        W_A, W_C, b_C = agent["W_A"], agent["W_C"], agent["b_C"]
        value = torch.addmm(b_C, features, W_C)[:, 0]
        out = torch.mm(features, W_A)
        if discrete:
            log_p = torch.log_softmax(out, -1)
            p = log_p.exp()
            idx = torch.argmax(out - torch.log(-torch.log(noise)), -1)
            action = idx.to(torch.int32)
            sample = action
            # one-hot − p as −p with 1 added at the sample: 1 − p there, −p elsewhere, exactly.
            dlogp = torch.neg(p).scatter_add_(1, idx[:, None], ones_b1)
            log_prob = log_p.gather(1, idx[:, None])[:, 0]
            # −H = Σ p ln p; ∂H/∂ℓ = −p (ln p + H) = p (−H − ln p), the same floats.
            neg_ent = (p * log_p).sum(-1, keepdim=True)
            entropy = -neg_ent[:, 0]
            dent = p * (neg_ent - log_p)
            c_col = None
        else:
            m, s = out[:, :D], out[:, D:]
            if lo is not None:
                sig_m = torch.sigmoid(m)
                mu = lo + span * sig_m
                dmu_dm = span * sig_m * (one - sig_m)
            else:
                mu = m
            sig_s = torch.sigmoid(s)
            pre_sigma = torch.add(minus_two_c, sig_s, alpha=4.0)  # −2 + 4 sigmoid(s)
            sigma = F.softplus(pre_sigma)
            dsigma_ds = torch.sigmoid(pre_sigma) * four_c * sig_s * (one - sig_s)
            sample = torch.addcmul(mu, sigma, noise)
            action = torch.clamp(sample, lo, hi) if lo is not None else sample
            log_sigma = torch.log(sigma)
            log_prob = (minus_half_c * noise * noise - log_sigma - half_log_2pi_c).sum(-1)
            entropy = (log_sigma + ent_const_c).sum(-1)
            dlogp_m = noise / sigma
            if lo is not None:
                dlogp_m = dlogp_m * dmu_dm
            dent_s = dsigma_ds / sigma
            dlogp = torch.cat([dlogp_m, (noise * noise - one) / sigma * dsigma_ds], -1)
            dent = F.pad(dent_s, (D, 0))  # ∂H/∂m = 0
            c_col = torch.clamp(sigma.mean(-1, keepdim=True), max=1.0) if scaled else None

        # 5. Immediate gradients: per environment f ⊗ (∂/∂out), times c where it applies.
        cf = features if c_col is None else c_col * features
        if trains:
            B_A = agent["B_A"] if config.feedback_alignment else W_A
            B_C = agent["B_C"] if config.feedback_alignment else W_C
            signal = torch.addmm(B_C[:, 0], dlogp, B_A.t(), alpha=config.eta_pi)
            if c_col is not None:
                signal = c_col * signal
            if use_entropy:
                ent_signal = torch.mm(dent, B_A.t())
                if c_col is not None:
                    ent_signal = c_col * ent_signal
        if trains and is_ctrnn:
            J_W_old, J_tau_old = agent["J_W"], agent["J_tau"]
            if rtrl:
                # J' = M J + diag(local), M = I + dt ∂f/∂h with the reset of J folded into M.
                # The projections ∇_R = J'ᵀ g (and Σ_b J'ᵀ g_H) are Σ_i g_i J'[i] = (gᵀM) J +
                # g ⊙ local: stacking the S signal rows gᵀM under M gives J' and the
                # projections from ONE batched product over J (B, N + S, N·Z), so the large
                # trace is read once and J' is never read back. J' is returned as the first N
                # rows of that product (a view; a fresh, non-contiguous tensor).
                W_h = W[:, n_in : n_in + N]
                M = eye_n + (dphi[:, :, None] * W_h - eye_n) * rate[:, None]
                M = M * keep[:, None, None]
                sig = torch.stack([signal, ent_signal], 1) if use_entropy else signal[:, None]
                Mx = torch.cat([M, torch.bmm(sig, M)], 1)  # (B, N + S, N)
                Z = zeta.shape[1]
                rtrl_out = bufs["rtrl"] if bufs is not None else None
                out_W = torch.bmm(Mx, J_W_old.reshape(B, N, N * Z), out=rtrl_out)
                out_tau = torch.bmm(Mx, J_tau_old)
                J_W = out_W[:, :N].view(B, N, N, Z)
                J_tau = out_tau[:, :N]
                local = (rate * dphi)[:, :, None] * zeta[:, None, :]  # (B, N, Z), row i = j
                # In place into the fresh product only (nothing the caller owns).
                J_W.diagonal(0, 1, 2).add_(local.transpose(1, 2))
                J_tau.diagonal(0, 1, 2).add_(dtau_term)
                proj_W = torch.addcmul(
                    out_W[:, N:].view(B, -1, N, Z), sig[:, :, :, None], local[:, None]
                )
                proj_tau = torch.addcmul(out_tau[:, N:], sig, dtau_term[:, None, :])
                grad_W, grad_tau = proj_W[:, 0], proj_tau[:, 0]
                if use_entropy:
                    ent_W, ent_tau = proj_W[:, 1].sum(0), proj_tau[:, 1].sum(0)
            else:
                coef = (one - rate) * keep_col  # decay and reset in one (B, N) factor
                # In place on the product (into a reused buffer when given): one (B, N, Z)
                # result instead of two; large fresh allocations page-fault, which dominates
                # at large B.
                J_W_out = bufs["J_W"] if bufs is not None else None
                # Compiled, one out= op per result: with the in-place chain below, inductor
                # kept a fresh (B, N, Z) temporary (~200 page faults a step at B = 1024).
                if row_sums:
                    # (see the docstring) J_W' on (B·N, Z) rows, into a (B·N, Z) buffer.
                    rows = B * N
                    J_W_rows = torch.addcmul(
                        ((rate * dphi)[:, :, None] * zeta[:, None, :]).reshape(rows, Z_rows),
                        coef.reshape(rows, 1),
                        J_W_old.reshape(rows, Z_rows),
                        out=J_W_out,
                    )
                    J_W = J_W_rows  # returned as rows too; see row_traces below
                    neuron_of_row = torch.arange(N, device=device).repeat(B)
                elif compiled:
                    J_W = torch.addcmul(
                        (rate * dphi)[:, :, None] * zeta[:, None, :],
                        coef[:, :, None],
                        J_W_old,
                        out=J_W_out,
                    )
                else:
                    J_W = torch.mul(coef[:, :, None], J_W_old, out=J_W_out).addcmul_(
                        (rate * dphi)[:, :, None], zeta[:, None, :]
                    )
                J_tau = torch.addcmul(dtau_term, coef, J_tau_old)
                if use_entropy:
                    # Σ_b gH_bi J[b, i, :]: row sums (see the docstring), or a batched
                    # (1, B) @ (B, Z) product per neuron.
                    if row_sums:
                        ent_W = J_W_rows.new_zeros(N, Z_rows).index_add_(
                            0, neuron_of_row, ent_signal.reshape(rows, 1) * J_W_rows
                        )
                    else:
                        ent_W = torch.bmm(ent_signal.t()[:, None, :], J_W.transpose(0, 1))
                    ent_tau = (ent_signal * J_tau).sum(0)
            new["J_W"], new["J_tau"] = J_W, J_tau
        if trains and is_lru:
            # J'ᵀ g for the LRU (rtrrl_spec.lru.project_lru), for the learning signal and the
            # entropy signal stacked on a leading axis S: w = Cᵀ s, then products with J'.
            sig = torch.stack([signal, ent_signal]) if use_entropy else signal[None]  # (S, B, N)
            w_re, w_im = sig @ C_re, sig @ C_im
            a_re = w_re * J_lam_re - w_im * J_lam_im  # w ⊙ J_lam
            a_im = w_re * J_lam_im + w_im * J_lam_re
            a_re, a_im = a_re * lam_re - a_im * lam_im, a_re * lam_im + a_im * lam_re  # ⊙ λ
            w_re3, w_im3 = w_re[..., None], w_im[..., None]
            b_re = w_re3 * J_in_re - w_im3 * J_in_im
            b_im = w_re3 * J_in_im + w_im3 * J_in_re
            sig3 = sig[..., None]
            proj = {
                "log_nu": -a_re * exp_nu,
                "log_theta": -a_im * phase,
                "log_gamma": w_re * J_gam_re - w_im * J_gam_im,
                "B_re": b_re,
                "B_im": -b_im,
                "C_re": sig3 * hn_re[:, None, :],
                "C_im": -sig3 * hn_im[:, None, :],
            }
            lru_grad = {k: v[0] for k, v in proj.items()}  # per environment, for the traces
            if use_entropy:
                lru_ent = {k: v[1].sum(0) for k, v in proj.items()}  # Σ_b over the batch

        # 6. TD error (rtrrl_spec.agent.td_error).
        r_minus = reward - agent["reward_rate"] if average_reward else reward
        gamma_keep = gamma_c * keep
        delta = torch.addcmul(r_minus, gamma_keep, value) - agent["v_prev"]

        # 7. Batch-mean ascent directions, from the traces as they were, straight into the
        # flat vector the optimizer works on: Σ_b (δ_b / B) e_b is one (1, B) @ (B, size)
        # product per trace, already flat; the entropy terms are added scaled by η_H / B.
        d_row = (delta / B)[None, :]
        ent_alpha = entropy_rate / B
        # (addcmul with value=, not add with alpha=: inductor in torch 2.13 rewrites
        # add(mm(a, b), x, alpha=s) into a wrong addmm; the compiled-vs-eager test caught it.)

        def dmean(trace: torch.Tensor) -> torch.Tensor:
            return torch.mm(d_row, trace.reshape(B, -1))

        pieces: dict[str, torch.Tensor] = {}
        dir_W_A = dmean(agent["e_W_A"])
        if use_entropy:
            ent_W_A = torch.mm(cf.t(), dent).view(1, -1)
            dir_W_A = torch.addcmul(dir_W_A, ent_W_A, one, value=ent_alpha)
        pieces["W_A"] = dir_W_A
        if dutch:
            # True-online correction with v̂_prev under the current critic (spec, step 7).
            x_W_C, x_b_C = agent["x_W_C"], agent["x_b_C"]
            value_now = torch.addmm(x_b_C * b_C, x_W_C[:, :, 0], W_C)[:, 0]
            corr_row = ((value_now - agent["v_prev"]) / B)[None, :]
            pieces["W_C"] = torch.addmm(dmean(agent["e_W_C"]), corr_row, x_W_C[:, :, 0], alpha=-1)
            pieces["b_C"] = torch.addmm(dmean(agent["e_b_C"]), corr_row, x_b_C, alpha=-1)
        else:
            pieces["W_C"] = dmean(agent["e_W_C"])
            pieces["b_C"] = dmean(agent["e_b_C"])
        if trains and is_ctrnn:
            if row_sums:
                d_rows = (delta / B)[:, None].expand(B, N).reshape(rows, 1)
                e_W_rows = agent["e_W"].reshape(rows, Z_rows)
                dir_W = (
                    e_W_rows.new_zeros(N, Z_rows)
                    .index_add_(0, neuron_of_row, d_rows * e_W_rows)
                    .view(1, -1)
                )
            else:
                dir_W = dmean(agent["e_W"])
            dir_tau = dmean(agent["e_tau"])
            if use_entropy:
                dir_W = torch.addcmul(dir_W, ent_W.reshape(1, -1), one, value=ent_alpha)
                dir_tau = torch.addcmul(dir_tau, ent_tau, one, value=ent_alpha)
            pieces["W"], pieces["tau"] = dir_W, dir_tau
        elif trains:  # the LRU
            for k in rnn:
                dir_k = dmean(agent[f"e_{k}"])
                if use_entropy:
                    dir_k = torch.addcmul(dir_k, lru_ent[k].reshape(1, -1), one, value=ent_alpha)
                pieces[k] = dir_k

        # Clip per group by global norm, then Adam (rtrrl_spec.apply_update), on one flat vector.
        d_flat = torch.cat([pieces[k] for k in params], 1)[0]

        def flat(prefix: str) -> torch.Tensor:
            return torch.cat(
                [agent[prefix + k] if flat_1d[k] else agent[prefix + k].view(-1) for k in params]
            )

        # The parameters and moments this step returned are views into one (5, total) tensor:
        # when the agent still holds exactly those tensor objects (the usual loop), its rows
        # are the flat vectors already, and the three concatenations are skipped. Views share
        # storage, so an in-place change to a handed-out tensor is seen here too.
        memo = flat_memo[0] if flat_memo is not None else None
        if memo is not None and all(agent[k] is t for k, t in zip(flat_keys, memo[1], strict=True)):
            p_flat, mu_flat, nu_flat = memo[0][:3].unbind(0)
        else:
            p_flat, mu_flat, nu_flat = flat(""), flat("mu_"), flat("nu_")
        norms = torch.mv(group_ind, d_flat * d_flat).sqrt()  # (groups,)
        if trains:
            counts = torch.stack([agent["count_td"], agent["count_rnn"]]) + one_i
        else:
            counts = agent["count_td"][None] + one_i
        if clip is not None:
            factor = clip_c / torch.clamp(norms, min=clip)  # c / max(‖Δ‖, c)
            d_c = d_flat * (torch.mv(group_ind_t, factor) if trains else factor)
        else:
            d_c = d_flat
        # Bias corrections 1 − β^t in float64, rounded to the agent's dtype once, as the
        # reference's Python-float corrections are when they meet a float32 array.
        bc = (one64 - torch.pow(betas, counts)).to(dtype)  # (2, groups)
        bc1, bc2 = (torch.mm(bc, group_ind) if trains else bc).unbind(0)
        mu_new = torch.add(b1_c * mu_flat, d_c, alpha=1.0 - b1)
        nu_new = torch.addcmul(b2_c * nu_flat, d_c, d_c, value=1.0 - b2)
        denom = (nu_new / bc2).sqrt_().add_(eps_c)
        if same_lr:
            p_new = torch.addcdiv(p_flat, mu_new / bc1, denom, value=config.lr_td)
        else:
            p_new = p_flat + lr_flat * (mu_new / bc1) / denom
        if clip_tau:
            p_new = torch.maximum(p_new, lower)
        upd_flat = p_new - p_flat

        # One stack and one split hand out all five flat results per parameter.
        info: Agent = {}
        stacked = torch.stack([p_new, mu_new, nu_new, upd_flat, d_flat])
        for k, part in zip(params, stacked.split(sizes, 1), strict=True):
            p_k, mu_k, nu_k, u_k, d_k = (
                part.unbind(0) if flat_1d[k] else part.view(5, *shapes[k]).unbind(0)
            )
            k_mu, k_nu, k_upd, k_dir = opt_keys[k]
            new[k], new[k_mu], new[k_nu] = p_k, mu_k, nu_k
            info[k_upd], info[k_dir] = u_k, d_k
        if flat_memo is not None:
            flat_memo[0] = (stacked, tuple(new[k] for k in flat_keys))
        if trains:
            new["count_td"], new["count_rnn"] = counts.unbind(0)
            info["grad_norm_td"], info["grad_norm_rnn"] = norms.unbind(0)
        else:
            new["count_td"], info["grad_norm_td"] = counts[0], norms[0]
        if average_reward:
            new["reward_rate"] = agent["reward_rate"] + config.reward_rate_lr * delta.mean()

        # 8. Traces: reset at the boundary, decay, add this step's gradients.
        decay = {v: (c * keep) for v, c in gl_consts.items()}  # γλ (1 − done) per distinct γλ
        dk_actor = decay[gl_values["actor"]][:, None, None]
        dk_critic = decay[gl_values["critic"]][:, None]
        f3 = features[:, :, None]
        if dutch:
            e_W_C = dk_critic[:, :, None] * agent["e_W_C"]
            e_b_C = dk_critic * agent["e_b_C"]
            # x = ∇_C v = (f, 1): ⟨e_C, x⟩ = e_W_C · f + e_b_C.
            inner = torch.baddbmm(e_b_C[:, :, None], e_W_C.transpose(1, 2), f3).view(B, 1)
            weight = torch.addcmul(one, inner, one, value=-config.lr_td)  # 1 − α ⟨e_C, x⟩
            new["e_W_C"] = torch.addcmul(e_W_C, weight[:, :, None], f3)
            new["e_b_C"] = e_b_C + weight
            new["x_W_C"], new["x_b_C"] = f3, keep_col.new_ones((B, 1))
        elif c_col is None:
            new["e_W_C"] = torch.addcmul(f3, dk_critic[:, :, None], agent["e_W_C"])
            new["e_b_C"] = torch.addcmul(one, dk_critic, agent["e_b_C"])
        else:
            new["e_W_C"] = torch.addcmul(cf[:, :, None], dk_critic[:, :, None], agent["e_W_C"])
            new["e_b_C"] = torch.addcmul(c_col, dk_critic, agent["e_b_C"])
        new["e_W_A"] = torch.addcmul(cf[:, :, None] * dlogp[:, None, :], dk_actor, agent["e_W_A"])
        if trains and is_ctrnn:
            dk_rnn = decay[gl_values["rnn"]][:, None]
            if rtrl:
                new["e_W"] = torch.addcmul(grad_W, dk_rnn[:, :, None], agent["e_W"])
                new["e_tau"] = torch.addcmul(grad_tau, dk_rnn, agent["e_tau"])
            else:
                e_W_out = bufs["e_W"] if bufs is not None else None
                if row_sums:
                    e_W_new = torch.addcmul(
                        dk_rnn.expand(B, N).reshape(rows, 1) * e_W_rows,
                        signal.reshape(rows, 1),
                        J_W_rows,
                        out=e_W_out,
                    )
                    new["e_W"] = e_W_new
                elif compiled:
                    new["e_W"] = torch.addcmul(
                        dk_rnn[:, :, None] * agent["e_W"], signal[:, :, None], J_W, out=e_W_out
                    )
                else:
                    new["e_W"] = torch.mul(dk_rnn[:, :, None], agent["e_W"], out=e_W_out).addcmul_(
                        signal[:, :, None], J_W
                    )
                new["e_tau"] = torch.addcmul(dk_rnn * agent["e_tau"], signal, J_tau)
        elif trains:  # the LRU: e ← γλ (1 − done) e + ∇
            dk_rnn = decay[gl_values["rnn"]]
            for k in rnn:
                e_k = agent[f"e_{k}"]
                dk_k = dk_rnn.view((B,) + (1,) * (e_k.dim() - 1))
                new[f"e_{k}"] = torch.addcmul(lru_grad[k], dk_k, e_k)

        # 9. Carry.
        new["v_prev"] = value
        new["a_prev"] = action
        info["td_error"] = delta
        info["value"] = value
        info["log_prob"] = log_prob
        info["entropy"] = entropy
        info["sample"] = sample
        info["features"] = features
        return new, action, info

    # Compiled, RFLO writes its new J_W and e_W straight into the buffers (inductor stores
    # its fused kernel's results there: no page faults on fresh 5 MB tensors at B = 1024,
    # benchmarks/results/step_speed.md); the compiled RTRL product is not written in place
    # (measured: as many page faults with the buffer as without), so it gets none.
    if is_ctrnn and trains and not (compiled and rtrl):
        Z = Z_rows
        S = 2 if use_entropy else 1

        def buffer_shapes(B: int) -> dict[str, tuple[int, ...]]:
            if rtrl:
                return {"rtrl": (B, N + S, N * Z)}
            if row_sums:
                return {"J_W": (B * N, Z), "e_W": (B * N, Z)}
            return {"J_W": (B, N, Z), "e_W": (B, N, Z)}

        step.buffer_shapes = buffer_shapes  # type: ignore[attr-defined]
    if row_sums:
        # The new J_W and e_W leave the step as (B·N, Z) rows, and the caller views them as
        # (B, N, Z) (_run). A view taken inside the compiled graph is an output inductor
        # writes a second time, into a fresh tensor.
        step.row_traces = ("J_W", "e_W")  # type: ignore[attr-defined]
    return step


def _viewing_rows(fn: StepImpl, names: tuple[str, ...], n_hidden: int) -> StepImpl:
    """``fn`` with its (B·N, Z) results ``names`` viewed as (B, N, Z) (see row_traces)."""

    def step(*args: Any) -> tuple[Agent, torch.Tensor, Agent]:
        new, action, info = fn(*args)
        for name in names:
            rows = new[name]
            new[name] = rows.view(rows.shape[0] // n_hidden, n_hidden, rows.shape[1])
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


#: The use count of a tensor storage (private PyTorch API; without it, no buffer reuse).
_use_count: Callable[[int], int] | None = getattr(torch._C, "_storage_Use_Count", None)


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
    #: The eager CPU step writes its large CT-RNN results into reused buffers (see _buffer)
    #: from this batch size on; below it they are small, and the pool's bookkeeping measured
    #: ~6% slower than plain allocation at B = 1 (RFLO, N = 32).
    buffer_min_batch = 64
    #: The compiled RFLO step on one CPU thread sums over the batch row by row, fused into its
    #: trace update (see _make_step), from this batch size on. Below it the traces fit in the
    #: cache and the row loop's per-row overhead made the step 3-30% slower (B = 64-256); it
    #: breaks even at 512 and is 1.35x faster at 1024 (benchmarks/torch_row_sums.py).
    #: ``None``: never.
    row_sums_min_batch: int | None = 512

    def __init__(self, device: str | torch.device | None = None, compile: bool = False) -> None:
        if device is None:
            device = os.environ.get(DEVICE_ENV_VAR, "").strip() or "cpu"
        self._device = torch.device(device)
        if self._device.type == "cuda" and self._device.index is None:
            self._device = torch.device("cuda", torch.cuda.current_device())
        self.compile = compile
        self._eager: dict[tuple[Config, torch.dtype, torch.device], StepImpl] = {}
        # Keyed (config, dtype, device, row_sums): see _run.
        self._compiled: dict[tuple[Any, ...], StepImpl] = {}
        # Output buffers of the CPU CT-RNN step's large results, per
        # ((config, dtype, device), compiled, name): see _buffer.
        self._buffer_pool: dict[tuple[Any, bool, str], list[torch.Tensor]] = {}
        self._buffer_lock = threading.Lock()
        # The eager step's memo of its last flat optimizer rows, per key (see _make_step).
        self._flat_memo: dict[tuple[Config, torch.dtype, torch.device], list[Any]] = {}

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
        step does not change (``B_A``, ``B_C``, a frozen body's parameters), which are the
        input's own tensors. Inputs may be tensors or NumPy arrays; they are cast to the
        agent's float dtype and device.
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
        cache: dict[tuple[Any, ...], StepImpl],
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
        # The row-order batch sums are for one thread only (see _make_step), and inductor fixes
        # a kernel's thread count when it compiles it: whether the step compiles them is part
        # of the key, decided by the thread count (and batch size) of the call.
        row_sums = (
            compiled
            and self.row_sums_min_batch is not None
            and len(obs) >= self.row_sums_min_batch
            and device.type == "cpu"
            and torch.get_num_threads() == 1
        )
        cache_key = (*key, row_sums) if compiled else key
        fn = cache.get(cache_key)
        if fn is None:
            fn = _make_step(config, dtype, device, compiled, row_sums)
            if compiled:
                shapes = getattr(fn, "buffer_shapes", None)
                row_traces = getattr(fn, "row_traces", ())
                fn = torch.compile(_fresh_code(fn), dynamic=False, fullgraph=True)
                if row_traces:
                    fn = _viewing_rows(fn, row_traces, config.n_hidden)
                if shapes is not None:
                    fn.buffer_shapes = shapes
            cache[cache_key] = fn
        with torch.inference_mode():
            obs = _tensor(obs, dtype, device)
            args = (
                agent,
                obs,
                _tensor(reward, dtype, device),
                _tensor(done, torch.bool, device),
                _tensor(noise, dtype, device),
            )
            # The flat-row memo is Python-side state, which a compiled graph cannot carry.
            memo = None if compiled else self._flat_memo.setdefault(key, [None])
            shapes_of = getattr(fn, "buffer_shapes", None)
            batch = obs.shape[0]
            no_pool = _use_count is None or device.type != "cpu"
            if shapes_of is None or batch < self.buffer_min_batch or no_pool:
                return fn(*args, None, memo)
            bufs = {
                name: self._buffer((key, compiled, name), shape, dtype, device)
                for name, shape in shapes_of(batch).items()
            }
            return fn(*args, bufs, memo)

    def _buffer(
        self,
        pool_key: tuple[tuple[Config, torch.dtype, torch.device], bool, str],
        shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor:
        """A buffer for one large CT-RNN result that nothing else references.

        ``pool_key`` is (config key, compiled, name); name "rtrl" the (B, N + S, N·Z) eager
        RTRL product over J_W (the new J_W is a view into it); with RFLO, eager or compiled,
        "J_W" and "e_W" the new (B, N, Z) J_W and e_W. (RTRL's e_W is left to the allocator:
        a buffer for it did not measure faster.) The eager and the compiled step have pools
        of their own, so that a loop over each, side by side, reuses as one loop does.
        The buffer handed out two steps ago becomes free as soon as the caller drops that
        agent (the usual ``agent = step(...)`` loop). Reusing it instead of allocating afresh
        matters on the CPU: a fresh large tensor (170 MB for the RTRL product at B = 1024,
        N = 32; 5 MB for RFLO's J_W) is page-faulted in on first touch and given back on
        release, which costs about as much as the op writing it. A buffer is reused only
        when no tensor but the pool's own shares its storage (the storage's use count), so an
        agent the caller keeps is never written into; otherwise a new one is allocated. The
        pool keeps at most two buffers per name (the live one and the one being written).
        """
        assert _use_count is not None
        with self._buffer_lock:  # check and claim at once (the claim is the returned view)
            pool = self._buffer_pool.setdefault(pool_key, [])
            for buf in pool:
                # 2 = the pool's tensor + the temporary storage object of this call.
                if buf.shape == shape and _use_count(buf.untyped_storage()._cdata) == 2:
                    return buf.view(shape)
            buf = torch.empty(shape, dtype=dtype, device=device)
            pool.append(buf)
            if len(pool) > 2:
                del pool[0]
            return buf.view(shape)

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
