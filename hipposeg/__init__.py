"""hipposeg: hippocampus segmentation in brain MRI, the MONAI way.

Data flows one way: files -> ``hipposeg.data`` (manifest, readers) -> ``hipposeg.transforms`` ->
``hipposeg.model`` -> ``hipposeg.inference`` -> ``hipposeg.metrics`` / ``hipposeg.report`` -> files.
"""

__version__ = "0.1.0"
