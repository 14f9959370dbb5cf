"""Checkpoints: ``checkpoint.npz`` (the run as it stands) and ``best.npz`` (each seed's agent
at its best evaluation so far), arrays and JSON only: nothing in them is ever unpickled.

Why ``.npz`` read with ``allow_pickle=False``: it is NumPy's own container (a zip of ``.npy``
files), so every backend loads it with what rtrrl already needs and no new dependency; each
array keeps its exact dtype and shape (uint64 generator words, bool flags, int32 counters);
and ``allow_pickle=False`` makes NumPy refuse an object array instead of unpickling it, so a
crafted file cannot run code. safetensors would bring the same guarantee, but adds a
dependency and keeps only numeric tensors (JSON only as string metadata in its header).

Format 3 (this version), ``checkpoint.npz``:

- ``agent/<name>``: every seed's agent in the canonical layout, stacked on a leading seed axis;
- ``config.json``: the run's ``config.json`` (settings, agent, engine, run identity and
  metadata);
- ``state.json`` (UTF-8 bytes): the loop's records and metric rows, the wall time and the
  engine's state as JSON, where an array is a reference ``{"__rtrrl__": "array", "key": ...}``
  to an entry ``state/<n>``; JAX pytrees (a gymnax environment's state) are kept as their
  leaves, re-assembled on resume in the structure the live environment gives;
- ``state/<n>``: those arrays (generator states, environment states, observations, ...).

An object that is not arrays (a gymnasium environment's state: its pickled sub-environments)
cannot be kept this way. It goes to ``env_state-<hash>.pkl`` beside the checkpoint, named by
the SHA-256 of its bytes (so a kill between the two writes never pairs a checkpoint with the
wrong file); ``state.json`` names it and its hash. Only ``--resume`` (:func:`resolve`) reads
it, after checking the hash; ``rtrrl eval`` never opens it.

``best.npz``: ``agent/<name>`` (each seed's agent at its best evaluation), ``config.json`` and
``best.json`` (per seed: its best score and the epoch it was reached, ``null`` for a seed not
evaluated yet, whose slot holds its agent as of that epoch).

Formats 1 and 2 (earlier versions) kept the resume state as a pickle, ``state.pkl``, inside
the npz. They still evaluate (agents and ``config.json`` are arrays: nothing is unpickled);
:func:`load_checkpoint` unpickles their ``state.pkl`` only when asked with ``trusted=True``,
which only ``rtrrl.resume`` does: resume your own runs only. A host-loop run of format 1
cannot resume (its generators were saved in a per-framework form) and says so.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import rtrrl_spec
from rtrrl.errors import CheckpointError
from rtrrl.run_folder import atomic_write
from rtrrl.settings import TASK_FIELDS, RunSettings

__all__ = [
    "BEST",
    "CHECKPOINT",
    "FORMAT_VERSION",
    "PICKLE_PREFIX",
    "READABLE_FORMATS",
    "Pickled",
    "Tree",
    "check_agents",
    "check_identity",
    "check_task",
    "load_best",
    "load_checkpoint",
    "locate",
    "needs_template",
    "new_run_command",
    "read_run",
    "resolve",
    "save_best",
    "save_checkpoint",
]

CHECKPOINT = "checkpoint.npz"
BEST = "best.npz"
FORMAT_VERSION = 3
#: Formats this version loads (see the module docstring for what formats 1 and 2 can do).
READABLE_FORMATS = (1, 2, 3)
#: Prefix of the file that holds what cannot be stored as arrays (read by resume only).
PICKLE_PREFIX = "env_state-"
_MARK = "__rtrrl__"
_UNTOUCHED = "nothing was overwritten"
#: The sections of ``config.json`` that make a run what it is (the rest is metadata).
IDENTITY = ("engine", "protocol", "agent")


# --- state <-> arrays and JSON ---------------------------------------------------------------


class _Encoder:
    """Turns a state (dicts, lists, numbers, strings, arrays, pytrees) into JSON whose arrays
    are references to entries of ``arrays``; anything else goes to ``objects`` (pickled
    beside the checkpoint)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.objects: dict[str, Any] = {}

    def _array(self, value: Any, scalar: bool) -> dict[str, Any]:
        key = f"state/{len(self.arrays)}"
        self.arrays[key] = np.asarray(value)
        return {_MARK: "array", "key": key, "scalar": scalar}

    def encode(self, value: Any) -> Any:
        # NumPy scalars first: np.float64 is a float, but keeps its type (and its str).
        if isinstance(value, np.generic) and not isinstance(value, np.object_):
            return self._array(value, scalar=True)
        if value is None or isinstance(value, bool | int | float | str):
            return value
        if isinstance(value, np.ndarray) and value.dtype != object:
            return self._array(value, scalar=False)
        if not isinstance(value, np.ndarray) and all(
            hasattr(value, a) for a in ("__array__", "shape", "dtype")
        ):  # a framework's array (JAX, torch): stored as NumPy
            return self._array(np.asarray(value), scalar=False)
        if isinstance(value, Tree):  # a state read back and saved again
            leaves = [self._array(x, scalar=False) for x in value.leaves]
            return {_MARK: "tree", "structure": value.structure, "leaves": leaves}
        if isinstance(value, dict):
            if all(isinstance(k, str) for k in value) and _MARK not in value:
                return {k: self.encode(v) for k, v in value.items()}
            items = [[self.encode(k), self.encode(v)] for k, v in value.items()]
            return {_MARK: "dict", "items": items}
        if isinstance(value, list):
            return [self.encode(v) for v in value]
        if isinstance(value, tuple) and type(value) is tuple:
            return {_MARK: "tuple", "items": [self.encode(v) for v in value]}
        tree = self._tree(value)
        if tree is not None:
            return tree
        if isinstance(value, Pickled):  # saved again: the object itself goes to the new file
            value = value.load()
        key = f"object/{len(self.objects)}"
        self.objects[key] = value
        return {_MARK: "pickled", "key": key}

    def _tree(self, value: Any) -> dict[str, Any] | None:
        """A JAX pytree of arrays (e.g. a gymnax state) as its leaves, or ``None``."""
        jax = sys.modules.get("jax")
        if jax is None or isinstance(value, bytes | bytearray):
            return None
        try:
            leaves, treedef = jax.tree_util.tree_flatten(value)
        except Exception:  # not a pytree jax can read
            return None
        if treedef.num_nodes <= 1 or not all(hasattr(x, "__array__") for x in leaves):
            return None
        arrays = [self._array(np.asarray(x), scalar=False) for x in leaves]
        return {_MARK: "tree", "structure": str(treedef), "leaves": arrays}


class _PickleFile:
    """The ``env_state-<hash>.pkl`` a checkpoint names; unpickled (once) on first use only."""

    def __init__(self, path: Path, sha256: str) -> None:
        self.path, self.sha256 = path, sha256
        self._objects: dict[str, Any] | None = None

    def get(self, key: str) -> Any:
        if self._objects is None:
            try:
                blob = self.path.read_bytes()
            except OSError as err:
                raise CheckpointError(
                    f"{self.path.name}, which holds this checkpoint's environment state, cannot "
                    f"be read ({err}); without it the run cannot resume (`rtrrl eval` still "
                    f"scores it); {_UNTOUCHED}"
                ) from err
            if hashlib.sha256(blob).hexdigest() != self.sha256:
                raise CheckpointError(
                    f"{self.path} is not the file this checkpoint wrote (its SHA-256 differs); "
                    f"the run cannot resume from it; {_UNTOUCHED}"
                )
            self._objects = pickle.loads(blob)
        return self._objects[key]


@dataclasses.dataclass(frozen=True)
class Pickled:
    """An object a checkpoint keeps in its ``env_state-<hash>.pkl``: :meth:`load` unpickles
    it (what :func:`resolve` does on resume; nothing else calls it). Two are equal when they
    name the same object of files of the same content (same SHA-256)."""

    sha256: str
    key: str
    file: _PickleFile = dataclasses.field(compare=False, repr=False)

    def load(self) -> Any:
        """The object (unpickled from the file beside the checkpoint)."""
        return self.file.get(self.key)


class Tree(dict):
    """A pytree's leaves as saved, ``{"structure": str, "leaves": [arrays]}`` (a dict, so it
    compares and prints as data); :meth:`restore` puts them in a live template's structure."""

    @property
    def leaves(self) -> list[np.ndarray]:
        """The leaves, in the order ``jax.tree_util.tree_flatten`` gave them."""
        return self["leaves"]

    @property
    def structure(self) -> str:
        """The tree's structure as ``str(treedef)`` (for messages; the template decides)."""
        return self["structure"]

    def restore(self, template: Any) -> Any:
        """The pytree with ``template``'s structure (and node types) and the saved leaves."""
        import jax

        want, treedef = jax.tree_util.tree_flatten(template)
        shapes = [np.shape(x) for x in want]
        got = [np.shape(x) for x in self.leaves]
        if shapes != got:
            raise CheckpointError(
                f"the checkpoint's environment state (leaf shapes {got}) does not fit this "
                f"task's ({shapes}): was the checkpoint written for another task? {_UNTOUCHED}"
            )
        leaves = [
            np.asarray(v, dtype=np.asarray(w).dtype) for v, w in zip(self.leaves, want, strict=True)
        ]
        return jax.tree_util.tree_unflatten(treedef, leaves)


def _decode(value: Any, arrays: Mapping[str, np.ndarray], pickles: _PickleFile | None) -> Any:
    if isinstance(value, list):
        return [_decode(v, arrays, pickles) for v in value]
    if not isinstance(value, dict):
        return value
    kind = value.get(_MARK)
    if kind is None:
        return {k: _decode(v, arrays, pickles) for k, v in value.items()}
    if kind == "array":
        array = arrays[value["key"]]
        return array[()] if value.get("scalar") else array
    if kind == "tuple":
        return tuple(_decode(v, arrays, pickles) for v in value["items"])
    if kind == "dict":
        return {_decode(k, arrays, pickles): _decode(v, arrays, pickles) for k, v in value["items"]}
    if kind == "tree":
        leaves = [_decode(v, arrays, pickles) for v in value["leaves"]]
        return Tree(structure=value["structure"], leaves=leaves)
    if kind == "pickled":
        if pickles is None:
            raise CheckpointError(f"the checkpoint names no pickle file; {_UNTOUCHED}")
        return Pickled(pickles.sha256, value["key"], pickles)
    raise CheckpointError(f"unknown entry {kind!r} in the checkpoint's state; {_UNTOUCHED}")


def needs_template(value: Any) -> bool:
    """Whether ``value`` (a decoded state) holds a :class:`Tree`, which :func:`resolve` can
    only rebuild from a live template."""
    if isinstance(value, Tree):
        return True
    if isinstance(value, dict):
        return any(needs_template(v) for v in value.values())
    if type(value) in (list, tuple):
        return any(needs_template(v) for v in value)
    return False


def resolve(value: Any, template: Any = None) -> Any:
    """A decoded state as the engine saved it: pytrees rebuilt in ``template``'s structure (a
    live object of the same kind, walked in parallel) and pickled objects unpickled from the
    checkpoint's ``env_state-<hash>.pkl``. Only resume calls this: it is where a run reads
    its own pickles (see the module docstring)."""
    if isinstance(value, Pickled):
        return value.load()
    if isinstance(value, Tree):
        if template is None:
            raise CheckpointError(f"no template to rebuild the saved state; {_UNTOUCHED}")
        return value.restore(template)
    if isinstance(value, dict):
        sub = template if isinstance(template, Mapping) else {}
        return {k: resolve(v, sub.get(k)) for k, v in value.items()}
    if type(value) in (list, tuple):  # a NamedTuple is an object of its own, left as it is
        same = isinstance(template, list | tuple) and len(template) == len(value)
        items = [resolve(v, template[i] if same else None) for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    return value


# --- writing ---------------------------------------------------------------------------------


def _json_bytes(value: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(value).encode(), dtype=np.uint8)


def _agent_entries(agents: Mapping[str, Any], run_json: Mapping[str, Any]) -> dict[str, Any]:
    entries: dict[str, Any] = {f"agent/{k}": np.asarray(v) for k, v in agents.items()}
    entries["config.json"] = np.asarray(json.dumps(run_json))
    return entries


def save_checkpoint(
    folder: Path, agents: dict[str, np.ndarray], run_json: dict[str, Any], state: dict[str, Any]
) -> None:
    """Write ``folder/checkpoint.npz`` atomically (the old one stays until the new is whole).

    ``state`` (records, metric rows, wall time, the engine's state) is stored as JSON and
    arrays; what is neither goes to ``env_state-<hash>.pkl``, written first (see the module
    docstring), and files of that name the new checkpoint no longer names are removed after.
    """
    enc = _Encoder()
    skeleton = enc.encode(state)
    pickles = None
    if enc.objects:
        blob = pickle.dumps(enc.objects, protocol=pickle.HIGHEST_PROTOCOL)
        sha = hashlib.sha256(blob).hexdigest()
        pickles = {"file": f"{PICKLE_PREFIX}{sha[:16]}.pkl", "sha256": sha}
        if not (folder / pickles["file"]).exists():
            atomic_write(folder / pickles["file"], lambda f: f.write(blob))
    entries = _agent_entries(agents, run_json)
    entries["state.json"] = _json_bytes({"state": skeleton, "pickles": pickles})
    entries.update(enc.arrays)
    atomic_write(folder / CHECKPOINT, lambda f: np.savez(f, **entries))
    keep = pickles["file"] if pickles else None
    for old in folder.glob(f"{PICKLE_PREFIX}*.pkl"):
        if old.name != keep:
            old.unlink(missing_ok=True)


def save_best(
    folder: Path,
    agents: Mapping[str, np.ndarray],
    run_json: Mapping[str, Any],
    info: list[dict[str, Any]],
) -> None:
    """Write ``folder/best.npz``: each seed's agent at its best evaluation (``info``: per
    seed ``{"seed", "score", "epoch"}``), atomically."""
    entries = _agent_entries(agents, run_json)
    entries["best.json"] = _json_bytes(info)
    atomic_write(folder / BEST, lambda f: np.savez(f, **entries))


def load_best(
    folder: Path, run_json: Mapping[str, Any], agents: Mapping[str, np.ndarray]
) -> dict[str, Any] | None:
    """``{"agents", "info"}`` of the ``best.npz`` in ``folder`` when it is this run's (same run
    id, same arrays as ``agents``), to go on from on resume; else ``None`` (a new one is
    made: a resumed run of an earlier version has none)."""
    path = folder / BEST
    if not path.exists():
        return None
    try:
        saved = load_checkpoint(path)
    except CheckpointError:
        return None
    run_id = (run_json.get("run") or {}).get("id")
    same = (
        saved["best"] is not None
        and (saved["run"].get("run") or {}).get("id") == run_id
        and saved["agents"].keys() == agents.keys()
        and all(saved["agents"][k].shape == np.shape(v) for k, v in agents.items())
        and len(saved["best"]) == len(next(iter(agents.values())))
    )
    if not same:
        return None
    return {"agents": {k: np.array(v) for k, v in saved["agents"].items()}, "info": saved["best"]}


# --- reading ---------------------------------------------------------------------------------


def locate(run: str | os.PathLike[str], which: str | None = None) -> tuple[Path, str | None]:
    """The file ``rtrrl eval`` reads for ``run`` and ``which`` (``"best"``, ``"last"``, or
    ``None``: best where the run has one), and a note when it falls back.

    A file is read as it is. A run folder gives ``best.npz`` or ``checkpoint.npz``; a run
    written before best checkpoints existed has no ``best.npz``: ``None`` then falls back to
    the last agents (the note says so), ``"best"`` is an error that says what to do.
    """
    if which not in (None, "best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    path = Path(run)
    if not path.is_dir():
        return path, None
    if (path / BEST).exists() and which != "last":
        return path / BEST, None
    if which == "last" or not (path / CHECKPOINT).exists():
        return path / CHECKPOINT, None  # (a missing one is load_checkpoint's error)
    if which == "best":
        raise CheckpointError(
            f"{path} has no {BEST} (runs of earlier rtrrl versions have none); "
            f"`rtrrl eval {path} --which last` (which='last') scores its last agents"
        )
    return path / CHECKPOINT, (
        f"{path} has no {BEST} (written by an earlier rtrrl); evaluating its last agents "
        f"({CHECKPOINT})"
    )


def load_checkpoint(
    run: str | os.PathLike[str], *, state: bool = True, trusted: bool = False
) -> dict[str, Any]:
    """Read a checkpoint: ``RUN/checkpoint.npz``, or a file (``checkpoint.npz``, ``best.npz``).

    Returns ``{"run", "agents", "state", "best", "path", "format"}``: ``run`` is the
    ``config.json`` inside; ``state`` the resume state (``None`` for ``best.npz``, with
    ``state=False``, or for a format 1 or 2 checkpoint unless ``trusted``); ``best`` the
    per-seed scores of a ``best.npz`` (else ``None``). Pickled parts of a format 3 state stay
    :class:`Pickled` placeholders (see :func:`resolve`).

    ``trusted=True`` unpickles the ``state.pkl`` of a format 1 or 2 checkpoint: a pickle runs
    code, so only ``rtrrl.resume`` of your own run asks for it.

    Raises:
        CheckpointError: the file is missing, truncated or not an rtrrl checkpoint. Reading
            never writes: nothing is overwritten.
    """
    path = Path(run)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint at {path}: expected a run folder written by `rtrrl train` "
            f"(holding {CHECKPOINT}) or the checkpoint file itself; {_UNTOUCHED}"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            out = _read(path, data, state, trusted)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({type(err).__name__}: {err}); {_UNTOUCHED}"
        ) from err
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: its state.pkl is corrupt ({err}); {_UNTOUCHED}") from err
    return out


def _read(path: Path, data: Any, state: bool, trusted: bool) -> dict[str, Any]:
    names = set(data.files)
    if "config.json" not in names or not any(n.startswith("agent/") for n in names):
        raise CheckpointError(
            f"{path} is not an rtrrl checkpoint (no config.json or agent arrays); {_UNTOUCHED}"
        )
    run_json = json.loads(str(data["config.json"]))
    if not isinstance(run_json, dict) or run_json.get("format") not in READABLE_FORMATS:
        found = run_json.get("format") if isinstance(run_json, dict) else None
        raise CheckpointError(
            f"{path} has checkpoint format {found!r}; this rtrrl reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}; {_UNTOUCHED}"
        )
    agents = {k[len("agent/") :]: data[k] for k in sorted(names) if k.startswith("agent/")}
    out: dict[str, Any] = {
        "run": run_json,
        "agents": agents,
        "state": None,
        "best": None,
        "path": path,
        "format": run_json["format"],
    }
    if "best.json" in names:
        out["best"] = json.loads(bytes(data["best.json"]).decode())
        return out
    if "state.json" not in names and "state.pkl" not in names:
        raise CheckpointError(f"{path} is not an rtrrl checkpoint (no resume state); {_UNTOUCHED}")
    if not state:
        return out
    if "state.json" in names:
        saved = json.loads(bytes(data["state.json"]).decode())
        pickles = None
        if saved.get("pickles"):
            info = saved["pickles"]
            pickles = _PickleFile(path.parent / Path(info["file"]).name, info["sha256"])
        arrays = {n: data[n] for n in names if n.startswith("state/")}
        out["state"] = _decode(saved["state"], arrays, pickles)
    elif trusted:  # format 1 or 2: the resume state is a pickle
        out["state"] = pickle.loads(data["state.pkl"].tobytes())
    return out


def read_run(run_json: dict[str, Any]) -> tuple[RunSettings, rtrrl_spec.Config]:
    """The run settings and the agent config a ``config.json`` (or checkpoint) holds."""
    try:
        return RunSettings.from_json(run_json["protocol"]), rtrrl_spec.Config(**run_json["agent"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"the run's config.json cannot be read: {err}; {_UNTOUCHED}") from err


# --- checks ----------------------------------------------------------------------------------


def check_agents(
    agents: Mapping[str, np.ndarray], settings: RunSettings, config: rtrrl_spec.Config, path: Path
) -> None:
    """Every agent array of a checkpoint against the run's layout: names, shapes (a leading
    seed axis, then ``rtrrl_spec.layout(config, num_envs)``), dtypes and finiteness.

    Why here: a damaged array, or a config that no longer matches the arrays (an edited
    ``obs_dim``), would otherwise surface mid-epoch as "divergence" with advice about
    learning rates. The error names the array.
    """
    expected = rtrrl_spec.layout(config, settings.num_envs)
    P = len(settings.seeds)
    missing = [k for k in expected if k not in agents]
    extra = [k for k in agents if k not in expected]
    if missing or extra:
        raise CheckpointError(
            f"{path}: its agent arrays do not match the run's agent config (missing {missing}, "
            f"unexpected {extra}); the checkpoint is damaged or its config.json was changed; "
            f"{_UNTOUCHED}"
        )
    for name, spec in expected.items():
        array = np.asarray(agents[name])
        shape, dtype = (P, *spec.shape), spec.numpy_dtype(settings.dtype)
        if array.shape != shape:
            raise CheckpointError(
                f"{path}: agent array {name!r} has shape {array.shape}, but the run's config "
                f"(obs_dim {config.obs_dim}, n_hidden {config.n_hidden}, {P} seed(s), "
                f"{settings.num_envs} environment(s) each) needs {shape}; the checkpoint is "
                f"damaged or its config was changed; {_UNTOUCHED}"
            )
        if array.dtype != dtype:
            raise CheckpointError(
                f"{path}: agent array {name!r} is {array.dtype}, the run's dtype needs "
                f"{dtype}; the checkpoint is damaged or its config was changed; {_UNTOUCHED}"
            )
        if np.issubdtype(dtype, np.floating) and not np.all(np.isfinite(array)):
            bad = [
                s for s, a in zip(settings.seeds, array, strict=True) if not np.all(np.isfinite(a))
            ]
            raise CheckpointError(
                f"{path}: agent array {name!r} holds NaN or inf (seed(s) {bad}): the checkpoint "
                f"is damaged (a run that diverges keeps its last finite checkpoint); {_UNTOUCHED}"
            )


def check_task(spec: Any, config: rtrrl_spec.Config, task: str) -> None:
    """The task's sizes (``spec``, an :class:`rtrrl.envs.EnvSpec`) against the run's agent."""
    now = spec.agent_config()
    for name in TASK_FIELDS:
        if getattr(now, name) != getattr(config, name):
            raise CheckpointError(
                f"the run's agent has {name} = {getattr(config, name)!r}, but task {task!r} now "
                f"gives {getattr(now, name)!r}: the task changed since the run (another version "
                f"of its package?) or the checkpoint's config was edited; {_UNTOUCHED}"
            )


def _describe(run_json: Mapping[str, Any]) -> str:
    protocol = run_json.get("protocol") or {}
    meta = run_json.get("run") or {}
    text = f"{protocol.get('task')!s} on {protocol.get('backend')!s}"
    if meta.get("id"):
        text = f"run {meta['id'][:8]}: {text}"
    if meta.get("started"):
        text += f", started {meta['started']}"
    return text


def _differences(on_disk: Mapping[str, Any], saved: Mapping[str, Any]) -> list[str]:
    """``section.field: saved → on disk`` for every identity field that differs."""
    out = []
    for section in IDENTITY:
        a, b = saved.get(section), on_disk.get(section)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b), key=lambda k: (k not in a, str(k))):
                if a.get(key, "(absent)") != b.get(key, "(absent)"):
                    out.append(
                        f"{section}.{key}: {a.get(key, '(absent)')!r} in the checkpoint, "
                        f"{b.get(key, '(absent)')!r} in config.json"
                    )
        elif a != b:
            out.append(f"{section}: {a!r} in the checkpoint, {b!r} in config.json")
    return out


def check_identity(folder: Path, ckpt: Mapping[str, Any]) -> None:
    """Refuse to resume when the folder's ``config.json`` or ``best.npz`` is not the
    checkpoint's: another run's checkpoint copied in, or settings edited by hand (which
    resume would otherwise silently overwrite with the checkpoint's)."""
    saved = ckpt["run"]
    run_id = (saved.get("run") or {}).get("id")
    path = folder / "config.json"
    if path.exists():
        try:
            on_disk = json.loads(path.read_text())
            if not isinstance(on_disk, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            raise CheckpointError(
                f"{path} cannot be read ({err}); the checkpoint holds the run's settings: "
                f"restore the file, or delete it and resume (it is rewritten from the "
                f"checkpoint); {_UNTOUCHED}"
            ) from err
        disk_meta = on_disk.get("run")
        disk_id = disk_meta.get("id") if isinstance(disk_meta, dict) else None
        if run_id and disk_id and run_id != disk_id:
            raise CheckpointError(
                f"{ckpt['path']} belongs to another run ({_describe(saved)}) than this folder "
                f"({_describe(on_disk)}); was it copied here? It cannot take this run over: put "
                f"it in a folder of its own (alone, or with its own config.json) and resume "
                f"that; {_UNTOUCHED}"
            )
        diffs = _differences(on_disk, saved)
        if diffs:
            raise CheckpointError(
                f"{path} differs from the run's checkpoint ({'; '.join(diffs)}): it was edited, "
                f"or the checkpoint comes from another run. A run continues with the settings "
                f"it started with, so resuming would undo the edit. To continue the run as it "
                f"was, undo the edit (or delete config.json: resume rewrites it). To train "
                f"with the edited settings, start a new run: {new_run_command(on_disk)}; "
                f"{_UNTOUCHED}"
            )
    best = folder / BEST
    if best.exists() and run_id:
        try:
            with np.load(best, allow_pickle=False) as data:
                best_json = json.loads(str(data["config.json"]))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
            raise CheckpointError(
                f"{best} is corrupt ({err}); move it away to resume (the next evaluations "
                f"write a new one); {_UNTOUCHED}"
            ) from err
        best_id = (best_json.get("run") or {}).get("id")
        if best_id != run_id:
            raise CheckpointError(
                f"{best} belongs to another run ({_describe(best_json)}) than {ckpt['path']} "
                f"({_describe(saved)}); move one of them into a folder of its own; {_UNTOUCHED}"
            )


def _flag_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


def new_run_command(run_json: Mapping[str, Any]) -> str:
    """``rtrrl train --out NEW_FOLDER ...``: a new run with ``run_json``'s settings (those
    that differ from the defaults)."""
    import shlex

    parts = ["rtrrl", "train", "--out", "NEW_FOLDER"]
    protocol = run_json.get("protocol") or {}
    # As config.json spells them (tuples are lists there).
    defaults = json.loads(json.dumps(RunSettings().to_json()))
    for key, value in protocol.items():
        # --task always: without it `rtrrl train` is the quick start, with other defaults.
        if key not in defaults or (value == defaults[key] and key not in ("task", "backend")):
            continue
        if isinstance(value, bool):
            parts.append(f"--{'' if value else 'no-'}{key.replace('_', '-')}")
        elif isinstance(value, list | tuple) and key == "imports":
            parts += [a for m in value for a in ("--import", str(m))]
        elif key == "seeds" and list(value) == list(range(len(value))):
            parts += ["--seeds", str(len(value))]
        else:
            parts += [f"--{key.replace('_', '-')}", _flag_value(value)]
    agent_defaults = {
        f.name: f.default
        for f in dataclasses.fields(rtrrl_spec.Config)
        if f.name not in TASK_FIELDS and f.default is not dataclasses.MISSING
    }
    for key, value in (run_json.get("agent") or {}).items():
        if key in TASK_FIELDS or (key in agent_defaults and agent_defaults[key] == value):
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        parts += ["--set", f"{key}={text}"]
    return " ".join(shlex.quote(p) for p in parts)
