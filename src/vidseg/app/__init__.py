"""The local web app (``python -m vidseg.app``, ``make app``): one tab per task, UI only.

    python -m vidseg.app [ckpt_vos=<ckpt>] [ckpt_vps=<ckpt>] [port=7860] [host=127.0.0.1] [max_upload_mb=200] ...

- :mod:`vidseg.app.config`: the server's options (``key=value``), the demo's checkpoints as defaults.
- :mod:`vidseg.app.inputs`: upload checks (type, size, length), frames for the editor, painted masks -> ids.
- :mod:`vidseg.app.runs`: a run of the task's predictor (the one :mod:`vidseg.predict` uses) over an upload,
  writing masks / panoptic PNG+JSON, the overlay video and zips, reporting progress per frame.
- :mod:`vidseg.app.sessions`: one temporary folder per browser session, removed when the session ends.
- :mod:`vidseg.app.ui`: the Gradio page (imports gradio; the modules above do not).
"""
