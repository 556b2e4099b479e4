"""Postgres side of the exchange: schema migrations, reference-data seeding, event-to-row
translation and the deferred-based batched writer. See DESIGN.md "Durability contract"."""
