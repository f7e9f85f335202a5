"""`python -m bench.quality ...`: the same run as `coinage bench quality ...`."""
import sys

from bench.quality.report import main

sys.exit(main())
