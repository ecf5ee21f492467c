"""ONNX export of vidseg's per-frame networks and the ONNX Runtime backend that runs them.

- :mod:`vidseg.onnx.folder`: the export folder (config.json + .onnx graphs), written safely and read without
  pickle; which backend runs a ``ckpt=`` path.
- :mod:`vidseg.onnx.runtime`: ONNX Runtime sessions (execution providers, named inputs/outputs).
- :mod:`vidseg.onnx.matching`: FEELVOS matching in traceable tensor ops (what the graph contains).
- :mod:`vidseg.onnx.feelvos`: FEELVOS's per-frame step as a graph (:func:`export_feelvos`) and its ONNX Runtime
  backend (:class:`OnnxFrameStep`) for :class:`vidseg.inference.vos.VOSSession`.

A second model plugs in the same way: ``vidseg/onnx/<model>.py`` with an ``export_<model>(checkpoint, folder)``
writing through :func:`vidseg.onnx.folder.write_onnx_folder`, and a backend for that task's session.
"""
