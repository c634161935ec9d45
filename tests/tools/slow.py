"""A tool that takes far too long (for timeouts), and starts a child that must be killed with it."""

import subprocess
import sys
import time

subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print("working...", flush=True)
time.sleep(120)
