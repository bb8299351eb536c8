"""cryptospreadedge-main: HTTP API, market-data ingest, integrated rebalancer."""
