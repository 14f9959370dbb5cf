"""``checkpoint.npz``: every seed's agent in the canonical layout, the run's settings, and the
pickled state that resumes it.

Format 2 (this version) saves each host-loop noise generator as ``backend.rng_state(rng)``.
Format 1 checkpoints (earlier versions) still load: they evaluate on any backend, and fused
runs resume; a host-loop run of format 1 cannot resume (its generators were saved in a
per-framework form this version no longer reads) and says so.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

import rtrrl_spec
from rtrrl.errors import CheckpointError
from rtrrl.run_folder import atomic_write
from rtrrl.settings import RunSettings

__all__ = ["CHECKPOINT", "FORMAT_VERSION", "load_checkpoint", "read_run", "save_checkpoint"]

CHECKPOINT = "checkpoint.npz"
FORMAT_VERSION = 2
#: Formats this version loads (see the module docstring for what format 1 can still do).
READABLE_FORMATS = (1, 2)
_UNTOUCHED = "nothing was overwritten"


def save_checkpoint(
    folder: Path, agents: dict[str, np.ndarray], run_json: dict[str, Any], state: dict[str, Any]
) -> None:
    """Write ``folder/checkpoint.npz`` atomically (the old one stays until the new is whole)."""
    arrays = {f"agent/{k}": np.asarray(v) for k, v in agents.items()}
    arrays["config.json"] = np.asarray(json.dumps(run_json))
    arrays["state.pkl"] = np.frombuffer(pickle.dumps(state), dtype=np.uint8)
    atomic_write(folder / CHECKPOINT, lambda f: np.savez(f, **arrays))


def load_checkpoint(run: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``RUN/checkpoint.npz`` (or a checkpoint file): ``{"run", "agents", "state", "path"}``.

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
            names = set(data.files)
            missing = {"config.json", "state.pkl"} - names
            if missing:
                raise CheckpointError(
                    f"{path} is not an rtrrl checkpoint (missing {sorted(missing)}); {_UNTOUCHED}"
                )
            run_json = json.loads(str(data["config.json"]))
            state = pickle.loads(data["state.pkl"].tobytes())
            agents = {k[len("agent/") :]: data[k] for k in names if k.startswith("agent/")}
    except CheckpointError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, pickle.UnpicklingError) as err:
        raise CheckpointError(
            f"{path} is corrupt or truncated ({type(err).__name__}: {err}); {_UNTOUCHED}"
        ) from err
    if run_json.get("format") not in READABLE_FORMATS:
        raise CheckpointError(
            f"{path} has checkpoint format {run_json.get('format')!r}; this rtrrl reads "
            f"formats {', '.join(map(str, READABLE_FORMATS))}; {_UNTOUCHED}"
        )
    if not agents:
        raise CheckpointError(f"{path} holds no agent arrays; {_UNTOUCHED}")
    return {"run": run_json, "agents": agents, "state": state, "path": path}


def read_run(run_json: dict[str, Any]) -> tuple[RunSettings, rtrrl_spec.Config]:
    """The run settings and the agent config a ``config.json`` (or checkpoint) holds."""
    try:
        return RunSettings.from_json(run_json["protocol"]), rtrrl_spec.Config(**run_json["agent"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"the run's config.json cannot be read: {err}; {_UNTOUCHED}") from err
