"""``python -m hipposeg ...`` (and ``torchrun ... -m hipposeg bids ... --distributed``): the ``hipposeg`` command."""

import sys

from hipposeg.cli import main

sys.exit(main())
