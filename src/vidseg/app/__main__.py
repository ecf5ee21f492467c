"""``python -m vidseg.app [ckpt_vos=...] [ckpt_vps=...] [port=7860] [host=127.0.0.1]``: serve the web app.

Offline and private by default: binds 127.0.0.1, no share link, no analytics or version check, no server-side
rendering (no Node), fonts served locally. Uploads (Gradio's temporary files) and results (one folder per
browser session) live in one temporary root that is removed when the server stops.
"""

from __future__ import annotations

import atexit
import os
import sys
import tempfile
import threading
from pathlib import Path

from vidseg.app.config import USAGE, AppConfig, parse_args
from vidseg.utils.cli import run_cli

# Set before gradio is imported: it reads them at import time.
OFFLINE_ENV = {"GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SHARE": "False", "HF_HUB_OFFLINE": "1",
               "GRADIO_SSR_MODE": "False"}


def serve(cfg: AppConfig, *, block: bool = True):
    """Start the server for ``cfg``; blocks until it is stopped (Ctrl-C) unless ``block=False`` (tests), in
    which case the Gradio app is returned and its temporary root is removed at exit."""
    os.environ.update(OFFLINE_ENV)
    root = Path(tempfile.mkdtemp(prefix="vidseg-app-"))
    os.environ["GRADIO_TEMP_DIR"] = str(root / "uploads")

    from vidseg.app.sessions import SessionFolders
    from vidseg.app.ui import build_app

    sessions = SessionFolders(root / "sessions", ttl_s=cfg.session_ttl_s)
    atexit.register(sessions.close)
    atexit.register(lambda: __import__("shutil").rmtree(root, ignore_errors=True))
    stop = threading.Event()

    def expire() -> None:
        while not stop.wait(60):
            sessions.expire()

    threading.Thread(target=expire, daemon=True, name="vidseg-app-expire").start()
    app = build_app(cfg, sessions)
    print(f"vidseg app: http://{cfg.host}:{cfg.port} (temporary files in {root}; Ctrl-C stops it)", flush=True)
    app.launch(server_name=cfg.host, server_port=cfg.port, share=False, inbrowser=False, ssr_mode=False,
               max_file_size=f"{cfg.max_upload_mb}mb", allowed_paths=[str(sessions.root)], show_error=False,
               prevent_thread_lock=not block, quiet=True)
    if block:
        stop.set()
    return app


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--help" in argv or "-h" in argv:
        print(USAGE)
        return
    run_cli(lambda: serve(parse_args(argv)))


if __name__ == "__main__":
    main()
