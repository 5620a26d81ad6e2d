"""The collector's OpenAPI 3.0 schema, written by hand so that it is exact."""

from __future__ import annotations

import re
from typing import Any

from netvigil import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


MAX_INT64 = 2**63 - 1
# "YYYY-MM-DD hh:mm:ss" that Python's datetime accepts (year 1-9999, the Gregorian calendar):
# the server checks the same, so that the schema says exactly what is accepted.
_YEAR = "([0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"
_MONTH_DAY = (
    "((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
    "|02-(0[1-9]|1[0-9]|2[0-8]))"
)
_LEAP_DAY = "(([0-9]{2}(0[48]|[2468][048]|[13579][26])|([2468][048]|[13579][26]|0[48])00)-02-29)"
_CLOCK = "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
START_TIME_PATTERN = f"^({_YEAR}-{_MONTH_DAY}|{_LEAP_DAY}) {_CLOCK}$"
# search bounds are compared as text with stored start times, so any well-formed date will do
_SEARCH_TIME = (
    "([0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01]))"
    "(?:[T ](([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9])Z?)?"
)
SEARCH_TIME = re.compile(_SEARCH_TIME)
SEARCH_ASN = re.compile("(AS)?[0-9]{1,10}")

B64_HASH = {"type": "string", "format": "byte", "description": "standard base64 of 32 bytes"}
UID_PATTERN = r"^[0-9]{14}\.[0-9]{6}_[A-Z]{2}_[a-z0-9]{1,64}_[0-9a-f]{16}$"

_COMMON_ERRORS = {
    "429": _err("rate limited (see Retry-After)"),
    "500": _err("internal error"),
    "503": _err("too many connections from this client or in all (see Retry-After)"),
}


def _q(
    name: str, schema: dict[str, Any], description: str, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


_INT0 = {"type": "integer", "minimum": 0, "maximum": MAX_INT64}
_INT1 = {"type": "integer", "minimum": 1, "maximum": MAX_INT64}
_UID_PARAM = {
    "name": "uid",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": UID_PATTERN},
    "description": "measurement uid, YYYYMMDDhhmmss.ffffff_CC_testname_<16 hex>",
}
_ADMIN: list[dict[str, list[str]]] = [{"bearer": []}]

COMPONENTS: dict[str, Any] = {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    "schemas": {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
        },
        "Measurement": {
            "type": "object",
            "description": "An OONI data format 0.2.0 measurement. Other keys are kept verbatim.",
            "required": [
                "data_format_version",
                "test_name",
                "input",
                "measurement_start_time",
                "probe_cc",
                "probe_asn",
                "test_keys",
            ],
            "properties": {
                "data_format_version": {"type": "string", "enum": ["0.2.0"]},
                "test_name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"},
                "input": {"type": "string", "nullable": True, "maxLength": 8192},
                "measurement_start_time": {
                    "type": "string",
                    "pattern": START_TIME_PATTERN,
                    "example": "2026-11-27 18:00:00",
                },
                "probe_cc": {"type": "string", "pattern": "^[A-Z]{2}$"},
                "probe_asn": {"type": "string", "pattern": "^AS[0-9]{1,10}$"},
                "probe_ip": {
                    "type": "string",
                    "enum": ["127.0.0.1"],
                    "description": "absent or scrubbed",
                },
                "test_keys": {"type": "object", "additionalProperties": True},
            },
            "additionalProperties": True,
        },
        "SubmitResult": {
            "type": "object",
            "required": ["measurement_uid", "leaf_index", "leaf_hash", "duplicate"],
            "properties": {
                "measurement_uid": {"type": "string", "pattern": UID_PATTERN},
                "leaf_index": {"type": "integer", "minimum": 0},
                "leaf_hash": B64_HASH,
                "duplicate": {"type": "boolean"},
            },
        },
        "TreeHead": {
            "type": "object",
            "required": ["tree_size", "timestamp_ms", "root_hash", "log_id", "signature"],
            "properties": {
                "tree_size": {"type": "integer", "minimum": 0},
                "timestamp_ms": {"type": "integer", "minimum": 0},
                "root_hash": B64_HASH,
                "log_id": B64_HASH,
                "signature": {
                    "type": "string",
                    "format": "byte",
                    "description": "Ed25519, 64 bytes",
                },
            },
        },
        "InclusionBundle": {
            "type": "object",
            "required": ["leaf_index", "tree_size", "proof", "tree_head"],
            "properties": {
                "leaf_index": {"type": "integer", "minimum": 0},
                "tree_size": {"type": "integer", "minimum": 1},
                "leaf_hash": B64_HASH,
                "proof": {"type": "array", "items": B64_HASH},
                "tree_head": _ref("TreeHead"),
            },
        },
        "StoredMeasurement": {
            "allOf": [
                _ref("Measurement"),
                {
                    "type": "object",
                    "required": ["x_evidence"],
                    "properties": {"x_evidence": _ref("InclusionBundle")},
                },
            ]
        },
        "Removed": {
            "type": "object",
            "required": [
                "error",
                "detail",
                "measurement_uid",
                "leaf_index",
                "leaf_hash",
                "x_evidence",
            ],
            "properties": {
                "error": {"type": "string", "enum": ["gone"]},
                "detail": {"type": "string"},
                "measurement_uid": {"type": "string"},
                "leaf_index": {"type": "integer"},
                "leaf_hash": B64_HASH,
                "x_evidence": _ref("InclusionBundle"),
            },
        },
        "SearchResult": {
            "type": "object",
            "required": ["results", "next_cursor"],
            "properties": {
                "results": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "measurement_uid": {"type": "string"},
                            "leaf_index": {"type": "integer"},
                            "received_at": {"type": "string"},
                            "probe_cc": {"type": "string"},
                            "probe_asn": {"type": "string"},
                            "test_name": {"type": "string"},
                            "input": {"type": "string", "nullable": True},
                            "domain": {"type": "string", "nullable": True},
                            "measurement_start_time": {"type": "string"},
                            "payload_removed": {"type": "boolean"},
                        },
                    },
                },
                "next_cursor": {"type": "string", "nullable": True},
            },
        },
        "Inclusion": {
            "type": "object",
            "required": ["leaf_index", "tree_size", "leaf_hash", "root_hash", "proof"],
            "properties": {
                "leaf_index": {"type": "integer"},
                "tree_size": {"type": "integer"},
                "leaf_hash": B64_HASH,
                "root_hash": B64_HASH,
                "proof": {"type": "array", "items": B64_HASH},
            },
        },
        "Consistency": {
            "type": "object",
            "required": ["first", "second", "first_root", "second_root", "proof"],
            "properties": {
                "first": {"type": "integer"},
                "second": {"type": "integer"},
                "first_root": B64_HASH,
                "second_root": B64_HASH,
                "proof": {"type": "array", "items": B64_HASH},
            },
        },
        "PublicKeys": {
            "type": "object",
            "required": ["keys"],
            "properties": {
                "keys": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "log_id": B64_HASH,
                            "public_key_pem": {"type": "string"},
                            "added_ms": {"type": "integer"},
                            "current": {"type": "boolean"},
                        },
                    },
                }
            },
        },
    },
}


def openapi_schema() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/api/v1/measurements": {
            "post": {
                "summary": "Submit a measurement",
                "description": (
                    "The body is JSON; it may be sent with Content-Encoding: gzip (a transport"
                    " encoding, so not a parameter here). Anything else is 415."
                ),
                "operationId": "submitMeasurement",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Measurement")}},
                },
                "responses": {
                    "201": _json(_ref("SubmitResult"), "accepted and durably stored"),
                    "200": _json(_ref("SubmitResult"), "identical measurement already stored"),
                    "400": _err("not JSON, bad gzip"),
                    "408": _err("body not received in time"),
                    "413": _err("body over 2 MiB, or over 8 MiB decompressed"),
                    "415": _err("unsupported Content-Encoding"),
                    "422": _err("not a valid OONI measurement (the detail says why)"),
                    **_COMMON_ERRORS,
                },
            },
            "get": {
                "summary": "Search measurements, oldest first, with cursor pagination",
                "operationId": "searchMeasurements",
                "parameters": [
                    _q("probe_cc", {"type": "string", "pattern": "^[A-Za-z]{2}$"}, "country"),
                    _q(
                        "probe_asn",
                        {"type": "string", "pattern": f"^{SEARCH_ASN.pattern}$"},
                        "ASN",
                    ),
                    _q(
                        "domain",
                        {"type": "string", "minLength": 1, "maxLength": 253},
                        "host name of the input URL",
                    ),
                    _q(
                        "test_name",
                        {"type": "string", "minLength": 1, "maxLength": 64},
                        "test name",
                    ),
                    _q(
                        "since",
                        {"type": "string", "pattern": f"^{_SEARCH_TIME}$"},
                        "measurement_start_time >= (YYYY-MM-DD[Thh:mm:ssZ])",
                    ),
                    _q(
                        "until",
                        {"type": "string", "pattern": f"^{_SEARCH_TIME}$"},
                        "measurement_start_time < (YYYY-MM-DD[Thh:mm:ssZ])",
                    ),
                    _q(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                        "page size",
                    ),
                    _q(
                        "cursor",
                        {"type": "integer", "minimum": 0, "maximum": MAX_INT64},
                        "next_cursor of the previous page",
                    ),
                ],
                "responses": {
                    "200": _json(_ref("SearchResult"), "a page"),
                    "400": _err("bad parameter"),
                    **_COMMON_ERRORS,
                },
            },
        },
        "/api/v1/measurements/{uid}": {
            "get": {
                "summary": "A measurement with its inclusion bundle (x_evidence) under the latest head",
                "operationId": "getMeasurement",
                "parameters": [_UID_PARAM],
                "responses": {
                    "200": _json(_ref("StoredMeasurement"), "the measurement"),
                    "404": _err("unknown uid"),
                    "410": _json(_ref("Removed"), "payload removed; the leaf stays verifiable"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/v1/measurements/{uid}/payload": {
            "delete": {
                "summary": "Admin: remove a payload, keep its leaf",
                "operationId": "removePayload",
                "security": _ADMIN,
                "parameters": [
                    _UID_PARAM,
                    _q("reason", {"type": "string", "minLength": 1, "maxLength": 500}, "why"),
                ],
                "responses": {
                    "200": _json({"type": "object"}, "removed"),
                    "400": _err("bad parameter"),
                    "401": _err("no or wrong admin token"),
                    "403": _err("admin disabled"),
                    "404": _err("unknown uid"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/v1/log/tree-head": {
            "get": {
                "summary": "The latest signed tree head",
                "operationId": "getTreeHead",
                "responses": {"200": _json(_ref("TreeHead"), "latest head"), **_COMMON_ERRORS},
            }
        },
        "/api/v1/log/inclusion": {
            "get": {
                "summary": "RFC 6962 inclusion proof",
                "operationId": "getInclusion",
                "parameters": [
                    _q("leaf_index", _INT0, "leaf", required=True),
                    _q("tree_size", _INT1, "tree size (default: latest head)"),
                ],
                "responses": {
                    "200": _json(_ref("Inclusion"), "proof"),
                    "400": _err("bad parameter"),
                    "404": _err("tree_size beyond the latest head, or leaf_index not in it"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/v1/log/consistency": {
            "get": {
                "summary": "RFC 6962 consistency proof between two tree sizes",
                "operationId": "getConsistency",
                "parameters": [
                    _q("first", _INT0, "smaller size", required=True),
                    _q("second", _INT0, "larger size (default: latest head)"),
                ],
                "responses": {
                    "200": _json(_ref("Consistency"), "proof"),
                    "400": _err("bad parameter"),
                    "404": _err("second beyond the latest head, or first larger than second"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/v1/log/public-key": {
            "get": {
                "summary": "The current log key (PEM)",
                "operationId": "getPublicKey",
                "responses": {
                    "200": {
                        "description": "PEM",
                        "content": {"application/x-pem-file": {"schema": {"type": "string"}}},
                    },
                    **_COMMON_ERRORS,
                },
            }
        },
        "/api/v1/log/public-keys": {
            "get": {
                "summary": "Every log key ever used, so old heads stay verifiable",
                "operationId": "getPublicKeys",
                "responses": {"200": _json(_ref("PublicKeys"), "keys"), **_COMMON_ERRORS},
            }
        },
        "/api/v1/admin/rotate-key": {
            "post": {
                "summary": "Admin: new signing key; a head at the current size is signed with it",
                "operationId": "rotateKey",
                "security": _ADMIN,
                "responses": {
                    "200": _json({"type": "object"}, "rotated"),
                    "401": _err("no or wrong admin token"),
                    "403": _err("admin disabled"),
                    **_COMMON_ERRORS,
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This schema",
                "operationId": "getOpenApi",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.0 document")},
            }
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "netvigil collector", "version": __version__},
        "paths": paths,
        "components": COMPONENTS,
    }
