"""``python -m tfrecords_tools CORPUS SRC_DIR OUT_DIR [options]`` and
``python -m tfrecords_tools merge OUT_DIR``; see `tfrecords_tools.cli`."""

import sys

from tfrecords_tools.cli import main

# Guarded: worker processes started with the spawn method (``--workers``) must not run it.
if __name__ == "__main__":
    sys.exit(main())
