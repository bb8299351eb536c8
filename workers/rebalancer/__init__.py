"""portfolio-rebalancer: the dedicated, leader-elected rebalance loop."""
