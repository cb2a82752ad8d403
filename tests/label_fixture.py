"""Label maps and affines shared by tests/test_volumes.py and tests/test_qc_picture.py."""

from __future__ import annotations

import numpy as np

LR = {1: "left", 2: "right"}
LR4 = {1: "left_anterior", 2: "left_posterior", 3: "right_anterior", 4: "right_posterior"}
AP = {0: "background", 1: "anterior", 2: "posterior"}


def lia_affine(shape, zooms=(0.94, 0.94, 1.5)):
    """An LIA affine (i -> Left, j -> Inferior, k -> Anterior) centred on world (0, 0, 0)."""
    si, sj, sk = zooms
    aff = np.zeros((4, 4))
    aff[0, 0] = -si  # x (towards Right) decreases with i
    aff[2, 1] = -sj  # z (towards Superior) decreases with j
    aff[1, 2] = sk  # y (towards Anterior) increases with k
    aff[3, 3] = 1.0
    centre = (np.array(shape) - 1) / 2
    aff[:3, 3] = -aff[:3, :3] @ centre
    return aff
