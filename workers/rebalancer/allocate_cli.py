"""`cse allocate`: target weights and risk contributions for a covariance file.

Reads ``.npy`` or ``.csv`` (a square matrix; a CSV may carry a header row of asset names),
optional expected returns (``--mu``) and risk budgets (``--budgets``) as ``.npy``/``.csv``
vectors, solves with :mod:`shared.allocation` and prints a table, or with ``--json`` one
JSON object last (``weights``, ``risk_contributions``, ...). A bad input prints one line
naming the problem and exits 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from shared import allocation


class InputError(Exception):
    pass


def _load(path: Path, what: str) -> tuple[np.ndarray, list[str] | None]:
    if not path.exists():
        raise InputError(f"{what} file {path} does not exist")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        if path.suffix == ".csv":
            rows = [r for r in csv.reader(path.read_text().splitlines()) if r and any(c.strip() for c in r)]
            names = None
            try:
                float(rows[0][0])
            except ValueError:
                names, rows = [c.strip() for c in rows[0]], rows[1:]
            return np.array([[float(c) for c in row] for row in rows], dtype=float), names
    except (ValueError, IndexError, OSError) as exc:
        raise InputError(f"{what} file {path} cannot be read: {exc}") from None
    raise InputError(f"{what} file {path}: expected .npy or .csv")


def allocate(args: argparse.Namespace) -> dict[str, Any]:
    raw, names = _load(args.cov, "covariance")
    mu = _load(args.mu, "mu")[0].ravel() if args.mu else None
    budgets = _load(args.budgets, "budgets")[0].ravel() if args.budgets else None
    started = time.perf_counter()
    cov = allocation.validate_covariance(raw)  # once: the solvers and the report use the checked copy
    n = cov.shape[0]
    info: dict[str, Any] = {}
    if args.method == "rp":
        weights = allocation.risk_parity(cov, budgets, check=False, info=info)
    else:
        if mu is None and args.objective != "min_variance":
            raise InputError(f"--objective {args.objective} needs --mu")
        weights = allocation.mean_variance(cov, mu, objective=args.objective,
                                           risk_aversion=args.risk_aversion, check=False, info=info)
    elapsed = time.perf_counter() - started
    rc = allocation.risk_contributions(weights, cov)
    labels = names if names and len(names) == n else [f"asset{i}" for i in range(n)]
    return {
        "method": args.method,
        "objective": args.objective if args.method == "mv" else "equal_risk_contribution",
        "assets": labels,
        "weights": weights.tolist(),
        "risk_contributions": rc.tolist(),
        "volatility": float(np.sqrt(weights @ cov @ weights)),
        "solve_ms": elapsed * 1000,
        "iterations": info.get("iterations"),
    }


def main(args: argparse.Namespace) -> int:
    try:
        result = allocate(args)
    except (InputError, allocation.AllocationError) as exc:
        print(f"cse allocate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'ASSET':<16} {'WEIGHT':>10} {'RISK':>10}")
    for name, w, r in zip(result["assets"], result["weights"], result["risk_contributions"], strict=True):
        print(f"{name:<16} {w:>10.4%} {r:>10.4%}")
    print(f"volatility {result['volatility']:.6g} (the covariance's horizon); solved in "
          f"{result['solve_ms']:.2f} ms")
    return 0
