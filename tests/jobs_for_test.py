"""Module-level job functions for tests that spawn workers (spawned processes import them by name)."""
import os
import time


def sleep_and_record(path: str) -> int:
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(120)
    return os.getpid()
