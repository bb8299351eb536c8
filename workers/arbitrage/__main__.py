import sys

from shared.lifecycle import run_worker
from workers.arbitrage.settings import ArbitrageSettings
from workers.arbitrage.worker import run

if __name__ == "__main__":
    sys.exit(run_worker("arbitrage-worker", ArbitrageSettings, run))
