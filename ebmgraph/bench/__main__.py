import sys

from ebmgraph.bench.cli import main

sys.exit(main())
