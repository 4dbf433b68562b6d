"""``python -m tfrecords_tools CORPUS SRC_DIR OUT_DIR [options]``; see `tfrecords_tools.cli`."""

import sys

from tfrecords_tools.cli import main

sys.exit(main())
