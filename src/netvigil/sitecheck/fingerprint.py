"""JA3, JA4 and netvigil's order-insensitive family fingerprint of a parsed ClientHello.

JA3 (Salesforce, BSD-3-Clause) is order-sensitive: since Chrome 110 shuffles its extensions,
one Chrome has thousands of JA3s. JA4 (FoxIO's JA4 TLS-client spec, BSD-3-Clause) sorts the
cipher and extension lists, so it survives the shuffle; both are computed here from the spec
text. The family fingerprint goes one step further for the site-side question "which TLS stack
is this": it also drops what changes between two connections of the same client (SNI, ALPN
values, padding, resumption extensions) and keeps the supported groups and point formats.
"""

from __future__ import annotations

import hashlib

from netvigil.sitecheck.clienthello import (
    EXT_ALPN,
    EXT_PADDING,
    EXT_SERVER_NAME,
    GREASE_VALUES,
    ClientHello,
)

JA4_EMPTY_HASH = "000000000000"
_JA4_VERSIONS = {
    0x0304: "13",
    0x0303: "12",
    0x0302: "11",
    0x0301: "10",
    0x0300: "s3",
    0x0002: "s2",
    0xFEFF: "d1",
    0xFEFD: "d2",
    0xFEFC: "d3",
}
# Extensions a client sends on some connections and not others: resumption (pre_shared_key
# 41, early_data 42), a HelloRetryRequest's cookie (44), padding (21, present only for some
# hello sizes) and SNI (0, absent when connecting to an address).
_PER_CONNECTION_EXTENSIONS = frozenset({EXT_SERVER_NAME, EXT_PADDING, 0x0029, 0x002A, 0x002C})


def _no_grease(values: tuple[int, ...]) -> list[int]:
    return [v for v in values if v not in GREASE_VALUES]


def ja3_string(hello: ClientHello) -> str:
    """``version,ciphers,extensions,groups,point_formats`` in decimal, GREASE removed."""
    fields = [
        str(hello.handshake_version),
        "-".join(str(v) for v in _no_grease(hello.cipher_suites)),
        "-".join(str(v) for v in _no_grease(hello.extensions)),
        "-".join(str(v) for v in _no_grease(hello.supported_groups)),
        "-".join(str(v) for v in hello.ec_point_formats),
    ]
    return ",".join(fields)


def ja3_hash(hello: ClientHello) -> str:
    return hashlib.md5(ja3_string(hello).encode("ascii"), usedforsecurity=False).hexdigest()


def _ja4_alpn(first: bytes) -> str:
    if not first:
        return "00"
    head, tail = first[0], first[-1]
    if chr(head).isascii() and chr(head).isalnum() and chr(tail).isascii() and chr(tail).isalnum():
        return chr(head) + chr(tail)
    # Non-alphanumeric first or last byte: first and last characters of the hex form.
    hexed = first.hex()
    return hexed[0] + hexed[-1]


def _ja4_hash(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def ja4_parts(hello: ClientHello, transport: str = "t") -> tuple[str, str, str]:
    """JA4's a, the raw sorted cipher list and the raw extension_sigalg string (JA4_r parts)."""
    version = _JA4_VERSIONS.get(hello.max_version, "00")
    sni = "d" if EXT_SERVER_NAME in hello.extensions else "i"
    ciphers = _no_grease(hello.cipher_suites)
    extensions = _no_grease(hello.extensions)
    alpn = _ja4_alpn(hello.alpn[0]) if hello.alpn else "00"
    part_a = (
        f"{transport}{version}{sni}{min(len(ciphers), 99):02d}{min(len(extensions), 99):02d}{alpn}"
    )
    cipher_list = ",".join(f"{v:04x}" for v in sorted(ciphers))
    ext_list = ",".join(
        f"{v:04x}" for v in sorted(e for e in extensions if e not in (EXT_SERVER_NAME, EXT_ALPN))
    )
    sigalgs = ",".join(f"{v:04x}" for v in _no_grease(hello.signature_algorithms))
    ext_raw = f"{ext_list}_{sigalgs}" if sigalgs else ext_list
    return part_a, cipher_list, ext_raw


def ja4_from_raw(part_a: str, cipher_list: str, ext_raw: str) -> str:
    """JA4 from the JA4_r parts (the spec's hashing step, also used on JA4_r from logs)."""
    cipher_hash = _ja4_hash(cipher_list) if cipher_list else JA4_EMPTY_HASH
    ext_hash = _ja4_hash(ext_raw) if ext_raw and not ext_raw.startswith("_") else JA4_EMPTY_HASH
    return f"{part_a}_{cipher_hash}_{ext_hash}"


def ja4(hello: ClientHello, transport: str = "t") -> str:
    return ja4_from_raw(*ja4_parts(hello, transport))


def ja4_r(hello: ClientHello, transport: str = "t") -> str:
    return "_".join(ja4_parts(hello, transport))


def family_fingerprint(hello: ClientHello) -> str:
    """``nv1_<g|n><version>_<hash>``: same for every connection of one TLS stack.

    Kept: whether GREASE is used (not which values), the highest version offered, and the
    sorted sets of cipher suites, extensions (less the per-connection ones), supported groups,
    point formats, signature algorithms, compression methods and PSK modes. Order is dropped
    because modern browsers randomise it; ALPN values are dropped because a site's protocol
    choice changes them, not the client.
    """
    parts = [
        ",".join(f"{v:x}" for v in sorted(set(_no_grease(hello.cipher_suites)))),
        ",".join(
            f"{v:x}" for v in sorted(set(_no_grease(hello.extensions)) - _PER_CONNECTION_EXTENSIONS)
        ),
        ",".join(f"{v:x}" for v in sorted(set(_no_grease(hello.supported_groups)))),
        ",".join(f"{v:x}" for v in sorted(set(hello.ec_point_formats))),
        ",".join(f"{v:x}" for v in sorted(set(_no_grease(hello.signature_algorithms)))),
        ",".join(f"{v:x}" for v in sorted(set(hello.compression_methods))),
        ",".join(f"{v:x}" for v in sorted(set(hello.psk_key_exchange_modes))),
    ]
    digest = hashlib.sha256("|".join(parts).encode("ascii")).hexdigest()[:16]
    grease = "g" if hello.grease else "n"
    return f"nv1_{grease}{hello.max_version:04x}_{digest}"
