import sys

from engine.compare.cli import main

sys.exit(main())
