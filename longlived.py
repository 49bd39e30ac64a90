"""run_check called from a process that started 15 s ago (a test runner, a management tool)."""
import sys, time
sys.path.insert(0, "/work/main")
time.sleep(15)
from instrument.cli import main
t = time.monotonic()
rc = main(["check", "-o", "strategy=rabbit", "-o", "transport_url=amqp://guest:guest@127.0.0.1:47999/", "--timeout", "10"])
print(f"rc={rc} after {time.monotonic() - t:.1f}s (asked for --timeout 10)")
