-- Reference data: instruments, firms and their accounts (loaded by fixserver.pg.seed).
-- Prices and quantities are NUMERIC decimal values; the engine's integer ticks and lots are
-- converted at the edge with each instrument's tick_size and lot_size.

CREATE TABLE instruments (
    symbol          text PRIMARY KEY,
    tick_size       numeric NOT NULL CHECK (tick_size > 0),
    lot_size        numeric NOT NULL CHECK (lot_size > 0),
    min_qty         numeric NOT NULL,
    max_qty         numeric NOT NULL,
    multiplier      integer NOT NULL DEFAULT 1,
    maker_fee_ppm   integer NOT NULL DEFAULT 0,
    taker_fee_ppm   integer NOT NULL DEFAULT 0,
    price_band_ppm  integer NOT NULL DEFAULT 0,
    reference_price numeric NOT NULL DEFAULT 0,
    status          text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE firms (
    firm_id    text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    account_id text PRIMARY KEY,
    firm_id    text NOT NULL REFERENCES firms (firm_id),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_firm_idx ON accounts (firm_id);
