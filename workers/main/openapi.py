"""The OpenAPI 3.1 document of the main API (served at ``/api/openapi.json``).

Kept by hand next to the routes; a test checks that every route is described and every
described path is routed, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "bad query parameter", 401: "missing or invalid bearer token",
            403: "mutations disabled (no token configured)", 409: "not possible in this configuration",
            413: "body too large", 415: "not JSON", 422: "invalid body",
            502: "an exchange failed", 503: "not available yet, or a dependency is down"}
    return {str(c): _json(ERROR, text[c]) for c in codes}


LIMIT = {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}
ITEMS = {"type": "object", "required": ["items", "count"],
         "properties": {"items": {"type": "array", "items": {"type": "object"}},
                        "count": {"type": "integer"}}}
OBJ = {"type": "object"}
NUMBERS = {"type": "object", "additionalProperties": {"type": "number"}}
HALT = {"$ref": "#/components/schemas/Halt"}
BEARER = [{"bearer": []}]
ACTOR = {"name": "X-Actor", "in": "header", "required": False,
         "description": "who is acting, for the audit log (1-64 of letters, digits, space, _.@-)",
         "schema": {"type": "string", "maxLength": 64}}


def spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "CryptoSpreadEdge main API", "version": "1",
                 "description": "Portfolio, pipeline and controls of one crypto portfolio across exchanges."},
        "paths": {
            "/health": {"get": {"summary": "Liveness", "responses": {"200": _json({"type": "object"}),
                                                                   "503": _json({"type": "object"})}}},
            "/ready": {"get": {"summary": "Readiness: Kafka, Redis and the store reachable",
                               "responses": {"200": _json(OBJ), "503": _json(OBJ)}}},
            "/status/": {"get": {"summary": "The status page (HTML; also at /)",
                                 "responses": {"200": {"description": "HTML",
                                                       "content": {"text/html": {}}}}}},
            "/api/": {"get": {"summary": "This API's endpoints, with a line on each",
                              "responses": {"200": _json({"type": "object"})}}},
            "/api/status": {"get": {"summary": "The portfolio and pipeline at a glance",
                                    "responses": {"200": _json({"type": "object"}), **_errors(400, 503)}}},
            "/api/portfolio": {"get": {
                "summary": "Value, allocation by symbol and exchange, PnL, drawdown",
                "responses": {"200": _json({"$ref": "#/components/schemas/Portfolio"}),
                              **_errors(400, 503)}}},
            "/api/opportunities": {"get": {"summary": "Recent arbitrage opportunities, newest first",
                                           "parameters": [LIMIT],
                                           "responses": {"200": _json(ITEMS), **_errors(400, 503)}}},
            "/api/executions": {"get": {
                "summary": "Recent orders and fills, newest first", "parameters": [
                    LIMIT, {"name": "source", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["arbitrage", "rebalancer", "hedge"]}}],
                "responses": {"200": _json(ITEMS), **_errors(400, 503)}}},
            "/api/rebalance/plan": {"get": {
                "summary": "The plan a rebalance cycle would make now (dry run, computed on demand)",
                "responses": {"200": _json({"type": "object"}), **_errors(400, 409, 422, 502, 503)}}},
            "/api/rebalance/last": {"get": {
                "summary": "The last rebalance plans and their outcome, newest first",
                "parameters": [{**LIMIT, "schema": {**LIMIT["schema"], "default": 10}}],
                "responses": {"200": _json(ITEMS), **_errors(400, 503)}}},
            "/api/rebalance": {"post": {
                "summary": "Ask the rebalance leader for a cycle now (audited)", "security": BEARER,
                "parameters": [ACTOR],
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"reason": {"type": "string", "maxLength": 200}}}}}},
                "responses": {"202": _json({"type": "object"}, "requested"),
                              **_errors(400, 401, 403, 409, 413, 415, 422, 503)}}},
            "/api/halt": {
                "get": {"summary": "The trading halt (kill switch)",
                        "responses": {"200": _json(HALT), **_errors(400, 503)}},
                "put": {"summary": "Halt or resume trading on every worker at once (audited)",
                        "security": BEARER, "parameters": [ACTOR],
                        "requestBody": {"required": True, "content": {"application/json": {"schema": {
                            "type": "object", "required": ["halted"], "additionalProperties": False,
                            "properties": {"halted": {"type": "boolean"},
                                           "reason": {"type": "string", "maxLength": 200}}}}}},
                        "responses": {"200": _json(HALT), **_errors(400, 401, 403, 413, 415, 422, 503)}}},
            "/api/audit": {"get": {"summary": "The recent audit trail, newest first", "parameters": [LIMIT],
                                   "responses": {"200": _json(ITEMS), **_errors(400, 503)}}},
            "/api/openapi.json": {"get": {"summary": "This document",
                                          "responses": {"200": _json({"type": "object"})}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error", "status"],
                          "properties": {"error": {"type": "string"}, "status": {"type": "integer"}}},
                "Halt": {"type": "object", "required": ["halted"],
                         "properties": {"halted": {"type": "boolean"}, "reason": {"type": "string"},
                                        "by": {"type": "string"}, "since_ms": {"type": "integer"}}},
                "Portfolio": {"type": "object", "required": ["total_value", "allocation", "drawdown"],
                              "properties": {
                                  "total_value": {"type": "number"}, "quote": {"type": "string"},
                                  "allocation": NUMBERS, "value_by_exchange": NUMBERS,
                                  "pnl_by_exchange": NUMBERS,
                                  "pnl_total": {"type": "number"}, "drawdown": {"type": "number"},
                                  "peak_value": {"type": "number"}}},
            },
        },
    }
