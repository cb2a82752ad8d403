"""The names of the runtimes that can run the networks, in a module without torch: the ``--runtime`` choices of
``hipposeg`` (whose parser stays light) and :func:`hipposeg.runtime.choose_runtime` read this one tuple."""

#: ``--runtime`` values (``inference.json``'s ``runtime``): ``auto`` or a runtime of :mod:`hipposeg.runtime`
RUNTIMES = ("auto", "torch", "onnx", "openvino")
