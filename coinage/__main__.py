import sys

from coinage.cli import main

sys.exit(main())
