import sys

from shared import names
from shared.lifecycle import run_worker
from workers.main.settings import MainSettings
from workers.main.worker import run

if __name__ == "__main__":
    sys.exit(run_worker(names.MAIN, MainSettings, run))
