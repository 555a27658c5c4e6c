"""``python -m vpgkit.launch ddp_gpu`` prints the path of a shipped accelerate config."""

import sys

from . import main

sys.exit(main())
