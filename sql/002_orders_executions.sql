-- Orders and executions, written by the batched writer (fixserver.pg.writer) from engine events.
--
-- No foreign keys to accounts or instruments here on purpose: these tables are a projection of
-- the journal, and a row the engine accepted must never be refused (and then retried forever)
-- because reference data was seeded late.

CREATE TABLE orders (
    order_id        bigint PRIMARY KEY,          -- the NewOrder's sequencer seq
    cl_ord_id       text,
    orig_cl_ord_id  text,
    account         text NOT NULL,
    symbol          text NOT NULL,
    side            text CHECK (side IN ('BUY', 'SELL')),
    ord_type        text,
    time_in_force   text,
    price           numeric,                     -- limit price; NULL for market orders
    stop_price      numeric,                     -- NULL if none
    quantity        numeric,
    filled_qty      numeric NOT NULL DEFAULT 0,
    leaves_qty      numeric NOT NULL DEFAULT 0,
    avg_price       numeric,
    status          text NOT NULL CHECK (status IN
                        ('NEW', 'PARTIALLY_FILLED', 'FILLED', 'CANCELED', 'EXPIRED')),
    reason          text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    last_exec_id    bigint NOT NULL              -- row version: updates only move it forward
);

-- The performance guide's partial index: a trader's working orders, newest first.
CREATE INDEX idx_orders_active ON orders (account, created_at DESC)
    WHERE status IN ('NEW', 'PARTIALLY_FILLED');

CREATE TABLE executions (
    exec_id         text PRIMARY KEY,            -- the FIX ExecID (see fixserver/pg/rows.py)
    engine_exec_id  bigint NOT NULL,
    seq             bigint NOT NULL,             -- the command that caused it
    order_id        bigint NOT NULL,
    cl_ord_id       text,
    orig_cl_ord_id  text,
    account         text NOT NULL,
    symbol          text NOT NULL,
    side            text CHECK (side IN ('BUY', 'SELL')),
    exec_type       text NOT NULL,
    ord_status      text NOT NULL,
    ord_type        text,
    price           numeric,
    quantity        numeric,
    last_px         numeric,
    last_qty        numeric,
    cum_qty         numeric NOT NULL DEFAULT 0,
    leaves_qty      numeric NOT NULL DEFAULT 0,
    avg_price       numeric,
    fee             numeric,                     -- quote currency; negative is a rebate
    liquidity       text CHECK (liquidity IN ('MAKER', 'TAKER')),
    reason          text,
    exec_time       timestamptz NOT NULL
);

-- Executions arrive in time order, so a BRIN index on the time is tiny and effective.
CREATE INDEX idx_executions_time_brin ON executions
    USING brin (exec_time) WITH (pages_per_range = 128);
CREATE INDEX idx_executions_order ON executions (order_id);

-- Append-heavy table: vacuum and analyze it early (the performance guide's settings).
ALTER TABLE executions SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.005
);
