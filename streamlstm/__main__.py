"""``python -m streamlstm``: the command line (see :mod:`streamlstm.cli`)."""

import sys

from streamlstm.cli import main

sys.exit(main())
