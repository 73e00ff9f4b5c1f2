"""Registries: the OCI distribution protocol, shared by both engines.

* ``reference``: image references as Docker parses them.
* ``manifests``: Docker v2 schema 2 and OCI manifests and indexes, with limits.
* ``credentials``: Docker's ``config.json`` and credential helpers (login/logout).
* ``tls``: certs.d trust and when plain HTTP is allowed.
* ``auth``: the Basic and Bearer-token challenge.
* ``client``: one registry's API (manifests, blobs, uploads), over urllib3.
* ``transfer`` and ``progress``: bounded parallel transfers and their events.
* ``plan``: the pull plan, computed before any layer moves.

The embedded engine (``lamina.core.embedded.pull``) and the Docker backend
(``lamina.core.docker.pull``) build on these; nothing here touches a store.
"""
