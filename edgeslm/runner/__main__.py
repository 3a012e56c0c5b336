"""python3 runner.pyz ... (or python -m edgeslm.runner ...)"""

import sys

from edgeslm.runner.main import main

sys.exit(main())
