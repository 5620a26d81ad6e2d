"""The pipeline's tables: one place that says what every column means.

A pipeline run writes, under its output directory ``OUT``::

    OUT/verdicts/day=YYYY-MM-DD/part-<writer>-<seq>.parquet      one row per measurement
    OUT/observations/day=YYYY-MM-DD/part-<writer>-<seq>.parquet  one row per DNS answer,
                                                                 TCP connect, TLS handshake,
                                                                 HTTP response
    OUT/endpoints/day=YYYY-MM-DD/part-<writer>-<seq>.parquet     one row per messaging-app
                                                                 endpoint (and one per app)
    OUT/aggregates/<name>.parquet                                 see AGGREGATE_SCHEMAS
    OUT/ingest.json                                               per-file counts (read, skipped,
                                                                  corrupt with reasons)

``day`` is the UTC day of ``measurement_start_time`` (hive partitioning: DuckDB and Dask both
read it back as a column). Every engine writes exactly these schemas, so the tables from a local
run and from a Dask cluster on the same input compare equal row for row after sorting by
``SORT_KEYS``.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = [
    "AGGREGATE_SCHEMAS",
    "ENDPOINT_SCHEMA",
    "OBSERVATION_SCHEMA",
    "OBSERVATION_TYPES",
    "ONSET_SCHEMA",
    "SORT_KEYS",
    "VERDICT_SCHEMA",
]

# Columns shared by both row tables: who measured what, when. ``probe_asn`` is the number
# (``AS12345`` → 12345; 0 when unknown). ``domain`` is the input URL's host, lower case,
# without a trailing dot (empty when the test has no URL input).
_ENVELOPE: list[pa.Field] = [
    pa.field("measurement_uid", pa.string(), nullable=False),
    pa.field("report_id", pa.string()),
    pa.field("test_name", pa.string(), nullable=False),
    pa.field("input", pa.string()),
    pa.field("domain", pa.string(), nullable=False),
    pa.field("probe_cc", pa.string(), nullable=False),
    pa.field("probe_asn", pa.int64(), nullable=False),
    pa.field("measurement_start_time", pa.timestamp("us", tz="UTC"), nullable=False),
]

# One row per measurement. ``outcome`` is the verdict engine's (``netvigil.verdict.analyze``)
# precise outcome without the fingerprint suffix; ``technique`` its stage (``dns``, ``tcp``,
# ``tls``, ``http``) when blocked, else empty. ``blocking`` is OONI's field as text ("false",
# "dns", "tcp_ip", "http-failure", "http-diff") or null. ``fingerprint`` names the blockpage,
# ``root`` the interception root, when the verdict found one. ``source`` is the file the
# measurement came from (relative to the ingest root it was found under). ``network_status`` is
# what the probe found of its own network around the measurement (``test_keys.
# x_network_status``: "online", "degraded", "offline"), null when it did not check (OONI's
# probes, and outputs written before the column); outcomes ``network/offline`` and
# ``network/degraded`` are never blocked.
VERDICT_SCHEMA = pa.schema(
    [
        *_ENVELOPE,
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("technique", pa.string(), nullable=False),
        pa.field("blocked", pa.bool_(), nullable=False),
        pa.field("confidence", pa.float64(), nullable=False),
        pa.field("blocking", pa.string()),
        pa.field("accessible", pa.bool_()),
        pa.field("fingerprint", pa.string()),
        pa.field("root", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("network_status", pa.string()),
    ]
)

OBSERVATION_TYPES = ("dns", "tcp", "tls", "http")

# One row per network event in the measurement's ``test_keys`` (OONI archival format):
# ``dns``: one per answer (``answer`` = address or CNAME, ``answer_type`` A/AAAA/CNAME) or one
# row with null answer when the query failed or was empty; ``tcp``: one per ``tcp_connect``
# entry; ``tls``: one per ``tls_handshakes`` entry (``cert_sha256`` of the leaf, ``tls_version``,
# ``server_name``); ``http``: one per ``requests`` entry (``status_code``, ``body_length`` of the
# body as recorded, ``body_truncated``). ``failure`` is OONI's failure string, null on success.
# ``t`` is seconds since the measurement started, when recorded.
OBSERVATION_SCHEMA = pa.schema(
    [
        *_ENVELOPE,
        pa.field("obs_type", pa.string(), nullable=False),
        pa.field("hostname", pa.string()),
        pa.field("resolver", pa.string()),
        pa.field("query_type", pa.string()),
        pa.field("answer_type", pa.string()),
        pa.field("answer", pa.string()),
        pa.field("ip", pa.string()),
        pa.field("port", pa.int32()),
        pa.field("server_name", pa.string()),
        pa.field("tls_version", pa.string()),
        pa.field("cert_sha256", pa.string()),
        pa.field("url", pa.string()),
        pa.field("status_code", pa.int32()),
        pa.field("body_length", pa.int64()),
        pa.field("body_truncated", pa.bool_()),
        pa.field("failure", pa.string()),
        pa.field("t", pa.float64()),
    ]
)

# One row per endpoint of a messaging-app measurement (test_name telegram, whatsapp, signal,
# facebook_messenger; ``netvigil.verdict.im``), plus one row per measurement for the app as a
# whole (``endpoint`` "*", ``kind`` "app", the measurement's outcome). ``outcome`` is the
# verdict's precise outcome for that endpoint, ``failure`` OONI's failure string (or the
# probe-side one such as ``http_unexpected_status_code``), ``blocked`` whether the outcome is
# a blocking one. ``source`` as in the verdicts table.
ENDPOINT_SCHEMA = pa.schema(
    [
        *_ENVELOPE,
        pa.field("app", pa.string(), nullable=False),
        pa.field("endpoint", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("failure", pa.string()),
        pa.field("blocked", pa.bool_(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ]
)

# Aggregates: small tables, decomposable (counts, sums, minima, maxima) so any engine can
# compute them by parts and merge them exactly.
AGGREGATE_SCHEMAS: dict[str, pa.Schema] = {
    # Blocking by country × network × domain × day. ``confidence_mean`` is the mean verdict
    # confidence of the blocked measurements (0 when none), rounded to 6 places. ``offline``
    # counts the measurements the network's own failure decided (outcome ``network/*``):
    # neither blocked nor ok, and left out of the blocked share of the event rule.
    "daily": pa.schema(
        [
            pa.field("probe_cc", pa.string(), nullable=False),
            pa.field("probe_asn", pa.int64(), nullable=False),
            pa.field("domain", pa.string(), nullable=False),
            pa.field("day", pa.date32(), nullable=False),
            pa.field("measurements", pa.int64(), nullable=False),
            pa.field("blocked", pa.int64(), nullable=False),
            pa.field("ok", pa.int64(), nullable=False),
            pa.field("offline", pa.int64(), nullable=False),
            pa.field("confidence_mean", pa.float64(), nullable=False),
        ]
    ),
    # The mix of outcomes by country × network × domain × day.
    "outcomes": pa.schema(
        [
            pa.field("probe_cc", pa.string(), nullable=False),
            pa.field("probe_asn", pa.int64(), nullable=False),
            pa.field("domain", pa.string(), nullable=False),
            pa.field("day", pa.date32(), nullable=False),
            pa.field("outcome", pa.string(), nullable=False),
            pa.field("count", pa.int64(), nullable=False),
        ]
    ),
    # First and last time each blocking outcome was seen per domain and network.
    "techniques": pa.schema(
        [
            pa.field("probe_cc", pa.string(), nullable=False),
            pa.field("probe_asn", pa.int64(), nullable=False),
            pa.field("domain", pa.string(), nullable=False),
            pa.field("outcome", pa.string(), nullable=False),
            pa.field("first_seen", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("last_seen", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("count", pa.int64(), nullable=False),
        ]
    ),
    # Messaging apps by country × network × app × endpoint × day, from ``OUT/endpoints`` (each
    # measurement once): ``endpoint`` "*" is the app as a whole (its measurements' outcomes).
    "apps": pa.schema(
        [
            pa.field("probe_cc", pa.string(), nullable=False),
            pa.field("probe_asn", pa.int64(), nullable=False),
            pa.field("app", pa.string(), nullable=False),
            pa.field("endpoint", pa.string(), nullable=False),
            pa.field("day", pa.date32(), nullable=False),
            pa.field("measurements", pa.int64(), nullable=False),
            pa.field("blocked", pa.int64(), nullable=False),
            pa.field("ok", pa.int64(), nullable=False),
        ]
    ),
    # Sudden onset of blocking (computed from ``daily`` by one shared function, not by the
    # engines): one row per flagged country × network × domain × day.
    "events": pa.schema(
        [
            pa.field("probe_cc", pa.string(), nullable=False),
            pa.field("probe_asn", pa.int64(), nullable=False),
            pa.field("domain", pa.string(), nullable=False),
            pa.field("day", pa.date32(), nullable=False),
            pa.field("blocked_share", pa.float64(), nullable=False),
            pa.field("baseline_share", pa.float64(), nullable=False),
            pa.field("baseline_days", pa.int64(), nullable=False),
            pa.field("measurements", pa.int64(), nullable=False),
            # one-sided Fisher's exact test of the day against its baseline (``detect_events``)
            pa.field("p_value", pa.float64(), nullable=False),
        ]
    ),
}

# Onsets of blocking, derived from ``events`` and ``daily`` (``aggregate.detect_onsets``) when
# they are read, never written by an engine: one row per onset, not per flagged day.
ONSET_SCHEMA = pa.schema(
    [
        pa.field("probe_cc", pa.string(), nullable=False),
        pa.field("probe_asn", pa.int64(), nullable=False),
        pa.field("domain", pa.string(), nullable=False),
        pa.field("start", pa.date32(), nullable=False),
        # the last day the blocking held; null when it still held on the last measured day
        # of this country, network and domain ("ongoing")
        pa.field("end", pa.date32()),
        pa.field("days_held", pa.int64(), nullable=False),
        pa.field("measurements", pa.int64(), nullable=False),
        pa.field("peak_share", pa.float64(), nullable=False),
        pa.field("baseline_share", pa.float64(), nullable=False),
        # the onset day's p-value (``detect_events``)
        pa.field("p_value", pa.float64(), nullable=False),
    ]
)

SORT_KEYS: dict[str, list[str]] = {
    "verdicts": ["measurement_uid"],
    "observations": ["measurement_uid", "obs_type", "hostname", "answer", "ip", "port", "url"],
    "daily": ["probe_cc", "probe_asn", "domain", "day"],
    "outcomes": ["probe_cc", "probe_asn", "domain", "day", "outcome"],
    "techniques": ["probe_cc", "probe_asn", "domain", "outcome"],
    "events": ["probe_cc", "probe_asn", "domain", "day"],
    "endpoints": ["measurement_uid", "app", "endpoint"],
    "apps": ["probe_cc", "probe_asn", "app", "endpoint", "day"],
}
