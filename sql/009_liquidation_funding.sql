-- Liquidation, auto-deleveraging, funding and the insurance fund (engine/risk/liquidation.py,
-- engine/risk/funding.py), written by the batched writer (fixserver/pg/liquidation_rows.py)
-- from released FundingPayment, FundingApplied, Liquidated and PositionTransferred events.
--
-- Each row is a fact that never changes: it is inserted once, ON CONFLICT (its key) DO
-- NOTHING, and the key is what a replay of the same journal gives again, so catch-up after an
-- outage and repeated batches never duplicate a row.
-- Units as in 008: money is NUMERIC in units of the settlement asset (minor units /
-- 10**settlement_decimals, exact), prices and quantities NUMERIC decimals (ticks * tick_size,
-- lots * lot_size); a funding rate is the exact fraction rate_e8 / 10**8 (0.0001 is 0.01%).
-- No foreign keys: a projection of the journal.

-- One row per position charged at a funding instant (and a balance_ledger row, cause FUNDING,
-- beside it). A funding tick charges each open position of an instrument once.
CREATE TABLE funding_payments (
    seq      bigint NOT NULL,        -- the command (tick) that applied the funding
    ts       timestamptz NOT NULL,
    account  text NOT NULL,
    symbol   text NOT NULL,
    asset    text NOT NULL,          -- settlement asset
    amount   numeric NOT NULL,       -- received > 0, paid < 0
    rate     numeric NOT NULL,       -- positive: longs pay shorts
    size     numeric NOT NULL,       -- the position, signed (short < 0)
    mark     numeric NOT NULL,       -- the mark price the notional was taken at
    PRIMARY KEY (seq, symbol, account)
);
CREATE INDEX idx_funding_payments_account ON funding_payments (account, seq);

-- One row per instrument and funding instant: the rate applied and the totals. paid - received
-- is the rounding residual, credited to the insurance fund (ledger cause FUNDING, ref
-- 'residual'), so payments sum to zero exactly.
CREATE TABLE funding_rates (
    symbol           text NOT NULL,
    seq              bigint NOT NULL,
    ts               timestamptz NOT NULL,
    asset            text NOT NULL,
    rate             numeric NOT NULL,
    mark             numeric NOT NULL,
    paid             numeric NOT NULL,   -- by the paying side (>= 0)
    received         numeric NOT NULL,   -- by the receiving side (>= 0)
    residual         numeric NOT NULL,   -- paid - received, to the insurance fund
    positions        integer NOT NULL,   -- positions charged
    next_funding_ts  timestamptz NOT NULL,
    PRIMARY KEY (symbol, seq)
);

-- One row per liquidation step. A step is one IOC reduce-only liquidation order of the engine
-- (order_id >= 2^60, cl_ord_id 'LIQ-<n>'; its orders/executions rows are the usual ones):
-- qty closed, filled of it through the book, the rest taken over by the insurance fund or
-- auto-deleveraged, both at the bankruptcy price (see position_transfers).
CREATE TABLE liquidations (
    order_id          bigint PRIMARY KEY,
    seq               bigint NOT NULL,
    ts                timestamptz NOT NULL,
    account           text NOT NULL,     -- the liquidated account
    asset             text NOT NULL,
    symbol            text NOT NULL,     -- the position closed
    side              text NOT NULL CHECK (side IN ('BUY', 'SELL')),  -- closing side
    qty               numeric NOT NULL,
    filled            numeric NOT NULL,  -- through the book
    avg_price         numeric,           -- of the book fills; NULL when the book took none
    bankruptcy_price  numeric NOT NULL,
    taken_over        numeric NOT NULL,  -- by the insurance fund
    deleveraged       numeric NOT NULL,  -- against opposite positions (ADL)
    fee               numeric NOT NULL   -- liquidation fee, credited to the insurance fund
);
CREATE INDEX idx_liquidations_account ON liquidations (account, seq);
CREATE INDEX idx_liquidations_symbol ON liquidations (symbol, seq);

-- Positions moved off the book at the bankruptcy price: TAKEOVER by the insurance fund
-- (to_account '~INSURANCE') or ADL against an opposite position. exec_id numbers it like a
-- trade (the engine's exec id sequence).
CREATE TABLE position_transfers (
    exec_id       bigint PRIMARY KEY,
    seq           bigint NOT NULL,
    ts            timestamptz NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('TAKEOVER', 'ADL')),
    from_account  text NOT NULL,   -- the liquidated account
    to_account    text NOT NULL,   -- '~INSURANCE' or the deleveraged account
    symbol        text NOT NULL,
    side          text NOT NULL CHECK (side IN ('BUY', 'SELL')),  -- from_account's side
    qty           numeric NOT NULL,
    price         numeric NOT NULL  -- the bankruptcy price
);
CREATE INDEX idx_position_transfers_from ON position_transfers (from_account, seq);
CREATE INDEX idx_position_transfers_to ON position_transfers (to_account, seq);

-- The insurance fund is the account '~INSURANCE' in each settlement asset (engine.risk.
-- accounts.INSURANCE): its balance is a balances row, its ledger balance_ledger rows (causes
-- DEPOSIT/WITHDRAWAL by operators, LIQUIDATION fees in, INSURANCE covers out, FUNDING
-- residuals, REALISED_PNL and FEE of positions it took over, which are its positions rows).
-- These views name them; they add no data.
CREATE VIEW insurance_fund AS
    SELECT asset, balance, last_seq, updated_at
    FROM balances WHERE account = '~INSURANCE';

CREATE VIEW insurance_fund_ledger AS
    SELECT seq, entry, ts, asset, amount, balance, cause, symbol, ref
    FROM balance_ledger WHERE account = '~INSURANCE';
