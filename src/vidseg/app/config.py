"""The app's options: ``python -m vidseg.app key=value ...`` (no Hydra: the app is a server, not a run).

Checkpoints come only from here (the server's command line), never from the browser. Without ``ckpt_vos`` /
``ckpt_vps`` the demo's checkpoints are used when they exist (``make demo`` writes them under outputs/demo).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vidseg.errors import DataError

# Where `make demo` (vidseg.demo, --out outputs/demo) leaves its checkpoints.
DEMO_DIR = Path("outputs/demo")
DEMO_VOS_CKPT = DEMO_DIR / "train" / "checkpoints" / "last.ckpt"
DEMO_VPS_CKPT = DEMO_DIR / "vps" / "train_fusetrack" / "checkpoints" / "last.ckpt"


@dataclass
class AppConfig:
    """Options of ``python -m vidseg.app`` (each is ``key=value`` on the command line).

    Attributes:
        ckpt_vos / ckpt_vps: checkpoints of the two tabs (None: the demo's, if present; a tab without one says
            how to make it).
        host: the interface to bind; 127.0.0.1 (default) is reachable only from this machine.
        port: the TCP port.
        max_upload_mb: the largest upload accepted (Gradio refuses bigger files in the page).
        max_frames / max_seconds: the longest video accepted (frames, and seconds at its frame rate).
        max_pixels: the largest frame (height x width) accepted.
        device / precision: as in ``vidseg.predict`` (auto = CUDA when available).
        session_ttl_s: a session's folder is also removed after this long without use (a tab that never
            said goodbye).
    """

    ckpt_vos: str | None = None
    ckpt_vps: str | None = None
    host: str = "127.0.0.1"
    port: int = 7860
    max_upload_mb: int = 200
    max_frames: int = 600
    max_seconds: float = 120.0
    max_pixels: int = 1920 * 1080
    device: str = "auto"
    precision: str = "32"
    session_ttl_s: int = 3600
    notes: list[str] = field(default_factory=list)  # what the page says about missing checkpoints

    def vos_checkpoint(self) -> str | None:
        return _checkpoint(self.ckpt_vos, DEMO_VOS_CKPT)

    def vps_checkpoint(self) -> str | None:
        return _checkpoint(self.ckpt_vps, DEMO_VPS_CKPT)


def _checkpoint(given: str | None, demo: Path) -> str | None:
    """The checkpoint to load, as the predictors' ``from_checkpoint`` takes it: a string, because a Hub id
    (``hf://owner/name``) is no path (``Path`` would fold its "//")."""
    if given is not None:
        return given
    return str(demo) if demo.is_file() else None


_OPTIONS = {f.name: f for f in dataclasses.fields(AppConfig) if f.name != "notes"}

USAGE = """\
python -m vidseg.app: a local web page to segment your own videos (VOS: FEELVOS, VPS: VPSNet).

  ckpt_vos=<ckpt>      VOS checkpoint (default: the demo's, outputs/demo/train/checkpoints/last.ckpt); a .ckpt,
                       a pretrained folder (python -m vidseg.export) or hf://<owner>/<name>
  ckpt_vps=<ckpt>      VPS checkpoint (default: the demo's, outputs/demo/vps/train_fusetrack/checkpoints/last.ckpt)
  host=127.0.0.1       interface to bind (default: only this machine; host=0.0.0.0 opens it to the network)
  port=7860
  max_upload_mb=200 max_frames=600 max_seconds=120 max_pixels=2073600   limits on uploads
  device=auto|cpu|cuda  precision=32|bf16-mixed|16-mixed

Example: python -m vidseg.app ckpt_vos=runs/feelvos/checkpoints/last.ckpt port=7861
"""


def parse_args(argv: Sequence[str]) -> AppConfig:
    """``key=value`` words -> :class:`AppConfig`; checks the values and that given checkpoints exist.

    Raises:
        DataError: an unknown key, a word without ``=``, a value of the wrong type or range, a missing file.
    """
    values: dict[str, object] = {}
    for word in argv:
        key, sep, value = word.partition("=")
        if not sep:
            raise DataError(f"{word!r}: options are key=value (e.g. port=7861); python -m vidseg.app --help lists them")
        if key not in _OPTIONS:
            raise DataError(f"{key}: unknown option; known: {', '.join(_OPTIONS)}")
        kind = _OPTIONS[key].type
        try:
            if "int" in str(kind):
                values[key] = int(value)
            elif "float" in str(kind):
                values[key] = float(value)
            else:
                values[key] = None if value in ("", "null", "None") else value
        except ValueError:
            raise DataError(f"{key}={value}: expected a number") from None
    cfg = AppConfig(**values)
    if not 0 < cfg.port < 65536:
        raise DataError(f"port={cfg.port}: give a TCP port in 1..65535")
    for key in ("max_upload_mb", "max_frames", "max_seconds", "max_pixels", "session_ttl_s"):
        if getattr(cfg, key) <= 0:
            raise DataError(f"{key}={getattr(cfg, key)}: must be > 0")
    from vidseg.pretrained import is_pretrained_folder
    from vidseg.utils.device import PRECISIONS

    if cfg.precision not in PRECISIONS:
        raise DataError(f"precision={cfg.precision}: use one of {', '.join(PRECISIONS)}")
    for key in ("ckpt_vos", "ckpt_vps"):
        path = getattr(cfg, key)
        if path is not None and not (path.startswith("hf://") or Path(path).is_file() or is_pretrained_folder(path)):
            raise FileNotFoundError(f"{key}={path}: checkpoint not found; give a file written by vidseg.train "
                                    "(e.g. <run>/checkpoints/last.ckpt), a pretrained folder or hf://<owner>/<name>")
    for task, path in (("VOS", cfg.vos_checkpoint()), ("VPS", cfg.vps_checkpoint())):
        if path is None:
            key = f"ckpt_{task.lower()}"
            cfg.notes.append(f"No {task} checkpoint: run `make demo` (trains toy models on CPU, writes "
                             f"{DEMO_VOS_CKPT if task == 'VOS' else DEMO_VPS_CKPT}) or start the app with "
                             f"{key}=<your checkpoint>.")
    return cfg
