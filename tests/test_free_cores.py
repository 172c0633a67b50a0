"""A CPU training takes the cores that are free when it starts
(core.devices.free_cores): with other programs busy, fewer compute threads
wait less for each other. Real busy processes, no mocks."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from core.devices import describe_device, free_cores, use_in_this_thread


def test_a_cpu_training_takes_the_free_cores_and_says_how_many():
    cores = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        use_in_this_thread(torch.device("cpu"))
        assert 1 <= torch.get_num_threads() <= cores
        assert describe_device(torch.device("cpu"))["cpu_threads"] == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="counts running tasks in /proc/loadavg (Linux)")
def test_busy_programs_leave_fewer_cores():
    cores = len(os.sched_getaffinity(0))
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        time.sleep(0.5)
        assert free_cores() < cores or cores == 1
        assert free_cores() >= 1
    finally:
        for process in busy:
            process.kill()
            process.wait()
