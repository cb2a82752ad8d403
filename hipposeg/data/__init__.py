"""Datasets (manifest, folds, checksums), image readers and dataset importers."""

from hipposeg.data.manifest import Manifest, load_manifest, resolve_data_root
from hipposeg.data.readers import Image, read_image

__all__ = ["Image", "Manifest", "load_manifest", "read_image", "resolve_data_root"]
