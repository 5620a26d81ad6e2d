"""The keys in which OONI wrote its conclusions, removed before netvigil judges a measurement
(the way a user compares our verdict with OONI's). One list for every test that does so."""

from __future__ import annotations

# OONI's verdict: what it concluded, never what it observed.
VERDICT_KEYS = frozenset(
    {
        "blocking",
        "accessible",
        "x_status",
        "x_blocking_flags",
        "x_null_null_flags",
        "x_dns_flags",
        "dns_consistency",
        "body_length_match",
        "body_proportion",
        "status_code_match",
        "headers_match",
        "title_match",
        "x_analysis",
        "summary",
    }
)
# In 0.5.x http_experiment_failure and dns_experiment_failure are outputs of the analysis too;
# before 0.5 they are the measured failure of the HTTP and DNS steps (Measurement Kit's and
# probe-cli 0.4's measurers set them), so they stay there.
ANALYSIS_FAILURE_KEYS = frozenset({"http_experiment_failure", "dns_experiment_failure"})
