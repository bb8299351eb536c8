import sys

from shared import names
from shared.lifecycle import run_worker
from workers.arbitrage.settings import ArbitrageSettings
from workers.arbitrage.worker import run

if __name__ == "__main__":
    sys.exit(run_worker(names.ARBITRAGE, ArbitrageSettings, run))
