"""``python -m tinyengine_tf``: the same command line as ``tinyengine-tf``."""
import sys

from tinyengine_tf.cli import main

if __name__ == "__main__":
    sys.exit(main())
