"""`python -m orchestrator.cli`: the same as `dlbench`."""
import sys

from orchestrator.cli import main

sys.exit(main())
