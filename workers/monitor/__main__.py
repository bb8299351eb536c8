import sys

from shared import names
from shared.lifecycle import run_worker
from workers.monitor.settings import MonitorSettings
from workers.monitor.worker import run

if __name__ == "__main__":
    sys.exit(run_worker(names.MONITOR, MonitorSettings, run))
