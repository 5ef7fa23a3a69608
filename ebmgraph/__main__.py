import sys

from ebmgraph.cli import main

sys.exit(main())
