"""The operator's admin API: bearer-token authentication, the table of admin actions, the
HTTP glue and the ``fixserver admin`` client.

- :mod:`fixserver.admin.tokens`: the configured tokens (``AdminToken``, ``AdminTokenFile``)
  and their constant-time check (pure).
- :mod:`fixserver.admin.gate`: whether one HTTP request may reach an action (pure).
- :mod:`fixserver.admin.router`: the route table, parameters and error answers (pure).
- :mod:`fixserver.admin.actions`: the exchange's actions (order entry's pipeline, sessions).
- :mod:`fixserver.admin.resource`: the twisted.web resource (thin glue), logs and metrics.
- :mod:`fixserver.admin.client`: the ``fixserver admin ...`` commands (HTTP client).
- :mod:`fixserver.admin.journal_verify`: ``fixserver admin journal-verify`` (offline).
"""
