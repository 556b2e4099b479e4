"""FIX order entry: FIX messages -> engine commands, engine events -> ExecutionReports.

``translate`` (messages to commands or rejects), ``reports`` (events to field lists),
``ownership`` (who owns which order, ClOrdIDs per session), ``controls`` (throttle, kill
switch), ``firms`` (firms, accounts, permissions), ``application`` (the Application the
session glue calls), ``hosting``/``wiring`` (Twisted glue and composition).
"""
