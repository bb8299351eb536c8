import sys

from shared import names
from shared.lifecycle import run_worker
from workers.rebalancer.settings import RebalancerSettings
from workers.rebalancer.worker import run

if __name__ == "__main__":
    sys.exit(run_worker(names.REBALANCER, RebalancerSettings, run))
