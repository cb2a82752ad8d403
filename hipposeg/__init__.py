"""hipposeg: hippocampus segmentation in brain MRI, the MONAI way.

Data flows one way: files -> ``hipposeg.data`` (manifest, readers) -> ``hipposeg.transforms`` ->
``hipposeg.model`` -> ``hipposeg.inference`` -> ``hipposeg.metrics`` / ``hipposeg.volumes`` / ``hipposeg.qc_picture`` -> files.
"""

__version__ = "0.9.0"  # the wheel's and the bundle's version too (configs/metadata.json); tests/test_wheel.py checks
