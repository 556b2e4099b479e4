"""Reserved accounts of the risk engine."""

INSURANCE = "~INSURANCE"  # the insurance fund (one per settlement asset); not a FIX account
