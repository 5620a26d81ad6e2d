"""Terminal output of the testbed commands (tables that read well; --json elsewhere)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from rich.console import Console
from rich.table import Table
from rich.text import Text

from netvigil import textsafe
from netvigil.testbed.plan import Plan
from netvigil.testbed.truth import TruthRow

if TYPE_CHECKING:
    from netvigil.testbed.observe import Observation


def make_console() -> Console:
    """A terminal console that prints literally (no markup); when piped, wide enough that URLs
    are not folded. Profiles, pages and certificates are untrusted: print them with
    ``textsafe.text``."""
    return textsafe.make_console()


def _style(outcome: str) -> str:
    if outcome == "ok":
        return "green"
    if outcome == "down":
        return "yellow"
    return "bold red"


def print_truth(plan: Plan, rows: list[TruthRow], console: Console | None = None) -> None:
    console = console or make_console()
    table = Table(
        title=textsafe.text(f"What the censor of '{plan.profile}' does ({plan.isp_name})"),
        title_justify="left",
    )
    table.add_column("URL", overflow="fold")
    table.add_column("outcome")
    table.add_column("because")
    for row in rows:
        because = row.rule or (f"site is {row.site_kind}" if row.site_kind != "normal" else "")
        if row.detail:
            because += f" ({row.detail})"
        table.add_row(
            textsafe.text(row.url),
            textsafe.text(row.outcome, _style(row.outcome)),
            textsafe.text(because),
        )
    console.print(table)
    counts = Counter(r.outcome for r in rows)
    console.print(textsafe.text("  " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))))


def print_observations(
    plan: Plan, observations: list[Observation], console: Console | None = None
) -> None:
    console = console or make_console()
    table = Table(
        title=textsafe.text(f"Seen from the client on '{plan.profile}'"), title_justify="left"
    )
    table.add_column("URL", overflow="fold")
    table.add_column("censor does")
    table.add_column("client sees")
    table.add_column("evidence", overflow="fold")
    table.add_column("")
    for obs in observations:
        mark = Text("✓", "green") if obs.agrees else Text("✗", "bold red")
        table.add_row(
            textsafe.text(obs.url),
            textsafe.text(obs.expected, _style(obs.expected)),
            textsafe.text(obs.observed),
            textsafe.text(obs.detail),
            mark,
        )
    console.print(table)
    agree = sum(o.agrees for o in observations)
    console.print(Text(f"  {agree}/{len(observations)} URLs behave as the profile says."))


def print_interception_closeup(
    host: str,
    forged: list[x509.Certificate],
    real: list[x509.Certificate],
    console: Console | None = None,
) -> None:
    """Forged leaf next to the real one: what the censor copied and what it changed."""
    console = console or make_console()
    if not forged or not real:
        return
    fake, genuine = forged[0], real[0]
    table = Table(
        title=textsafe.text(f"A closer look: the certificate for {host}"), title_justify="left"
    )
    table.add_column("field")
    table.add_column("presented to the client (forged)", overflow="fold")
    table.add_column("the site's real certificate", overflow="fold")

    def san(cert: x509.Certificate) -> str:
        try:
            ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return "-"
        return ", ".join(ext.value.get_values_for_type(x509.DNSName))

    def exponent(cert: x509.Certificate) -> str:
        key = cert.public_key()
        return (
            f"RSA e={key.public_numbers().e}"
            if isinstance(key, rsa.RSAPublicKey)
            else type(key).__name__
        )

    shift = genuine.not_valid_before_utc - fake.not_valid_before_utc

    def row(field: str, forged_value: str, real_value: str) -> None:
        # every value comes from a certificate the network sent: plain text only
        table.add_row(field, textsafe.text(forged_value), textsafe.text(real_value))

    row("subject", fake.subject.rfc4514_string(), genuine.subject.rfc4514_string())
    row("SAN", san(fake), san(genuine))
    row("issuer", fake.issuer.rfc4514_string(), genuine.issuer.rfc4514_string())
    row("serial", f"{fake.serial_number:x}", f"{genuine.serial_number:x}")
    row("not before", str(fake.not_valid_before_utc), str(genuine.not_valid_before_utc))
    row("key", exponent(fake), exponent(genuine))
    row("extensions", str(len(fake.extensions)), str(len(genuine.extensions)))
    row(
        "chain",
        " → ".join(c.subject.rfc4514_string() for c in forged),
        " → ".join(c.subject.rfc4514_string() for c in real),
    )
    console.print(table)
    same_high = (fake.serial_number >> 33) == (genuine.serial_number >> 33)
    console.print(
        f"  Subject and SAN copied from the real certificate; validity moved {shift} earlier; "
        f"serial {'keeps' if same_high else 'does not keep'} the real serial above its low 33 bits; "
        f"{len(genuine.extensions) - len(fake.extensions)} extension(s) dropped. "
        "That is the signature of Kazakhstan's 2019 interception (Raman et al., IMC 2020)."
    )
