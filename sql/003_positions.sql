-- Positions per account and instrument, from engine.positions.PositionBook after each trade.
-- size is the absolute position and side its direction (the performance guide's shape);
-- size_lots / entry_notional keep the exact integers the decimal columns come from.

CREATE TABLE positions (
    account         text NOT NULL,
    symbol          text NOT NULL,
    side            text NOT NULL CHECK (side IN ('LONG', 'SHORT', 'FLAT')),
    size            numeric NOT NULL,
    entry_price     numeric NOT NULL,
    leverage        numeric NOT NULL DEFAULT 1,  -- owned by risk; the writer never sets it
    size_lots       bigint NOT NULL,             -- signed lots
    entry_notional  numeric NOT NULL,            -- ticks*lots of the open size
    realised_pnl    numeric NOT NULL,            -- quote currency
    fees            numeric NOT NULL,            -- quote currency; negative is net rebates
    last_exec_id    bigint NOT NULL,             -- row version: updates only move it forward
    updated_at      timestamptz NOT NULL,
    -- The performance guide's covering index IS the primary key's index: one B-tree serves
    -- both uniqueness and index-only reads of (side, size, entry_price, leverage).
    CONSTRAINT idx_positions_cover PRIMARY KEY (account, symbol)
        INCLUDE (side, size, entry_price, leverage)
);
