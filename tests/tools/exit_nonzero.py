"""A tool that fails: prints a reason to stderr and exits 3."""

import sys

print("loading model... RuntimeError: checkpoint has unexpected keys", file=sys.stderr)
sys.exit(3)
