"""netvigil: censorship measurement you can rely on."""

import os as _os

__version__ = "0.1.0"

# A process started under the network guard (the test suite sets NETVIGIL_NETGUARD to its report
# file) installs the guard as soon as it imports netvigil: testbed agents and the CLI included.
if _os.environ.get("NETVIGIL_NETGUARD"):
    from netvigil.netguard import install as _install_netguard

    _install_netguard(_os.environ["NETVIGIL_NETGUARD"])
