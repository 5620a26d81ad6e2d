"""The control helper: OONI's web-connectivity test-helper protocol, server and client.

- ``server``: the HTTP server (``start_helper``, ``ControlHelperServer``) and the testbed role
  ``start_control_helper``;
- ``client``: ``query_control``, the probe's side (works with OONI's helpers too);
- ``measure``: what the helper does for one request, over the ``NetOps`` interface;
- ``netops``: ``NetOps`` bound to ``netvigil.net``; ``policy``: where it may connect;
- ``protocol``: request validation, failure-string mapping, response pieces.

Modules are imported on demand: ``from netvigil.control.client import query_control``.
"""
