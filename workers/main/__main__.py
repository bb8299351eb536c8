import sys

from shared.lifecycle import run_worker
from workers.main.settings import MainSettings
from workers.main.worker import run

if __name__ == "__main__":
    sys.exit(run_worker("cryptospreadedge-main", MainSettings, run))
