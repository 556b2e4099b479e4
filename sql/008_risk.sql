-- Risk state (engine/risk), written by the batched writer (fixserver/pg/rows.py) from released
-- BalanceChanged, AccountChanged, PositionChanged, RiskSettingsChanged and MarkPriceUpdated
-- events.
--
-- Money: NUMERIC in units of the settlement asset, exactly minor units / 10**decimals (the
-- instrument's settlement_decimals; USDT with 6 decimals: 1_500_000 minor units is 1.5). NUMERIC
-- keeps every digit, so sums are exact (SUM(balance_ledger.amount) = balances.balance) and a
-- reader needs no per-asset scale; the engine's integers come back as amount * 10**decimals.
-- Prices are NUMERIC decimals too (ticks * tick_size, Instrument.ticks_to_price).
--
-- Like orders and executions, no foreign keys: these tables are a projection of the journal.

-- Collateral per account and settlement asset, upserted from AccountChanged (one per command
-- and touched account). last_seq is the row version: an upsert applies only when it is newer,
-- so a batch written again after a restart never moves a balance back.
CREATE TABLE balances (
    account          text NOT NULL,
    asset            text NOT NULL,
    balance          numeric NOT NULL,   -- the ledger's sum, isolated margin included
    isolated_margin  numeric NOT NULL,   -- the part of balance held by isolated positions
    order_margin     numeric NOT NULL,   -- what working orders hold
    last_seq         bigint NOT NULL,    -- the command of the AccountChanged (row version)
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (account, asset)
);

-- The balance ledger: one row per BalanceChanged, so an account's balance is the sum of its
-- rows. (seq, entry) is the n-th BalanceChanged of command seq (0-based, deterministic on
-- replay): inserts are ON CONFLICT DO NOTHING.
CREATE TABLE balance_ledger (
    seq      bigint NOT NULL,
    entry    integer NOT NULL,
    ts       timestamptz NOT NULL,
    account  text NOT NULL,
    asset    text NOT NULL,
    amount   numeric NOT NULL,   -- signed: credit > 0, debit < 0
    balance  numeric NOT NULL,   -- the account's balance after this entry
    cause    text NOT NULL,      -- engine.enums.LedgerCause name: DEPOSIT, FEE, REALISED_PNL...
    symbol   text NOT NULL,      -- the instrument of trade-related causes, '' otherwise
    ref      text NOT NULL,      -- deposit/withdrawal reference or the fill's engine exec id
    PRIMARY KEY (seq, entry)
);
CREATE INDEX idx_balance_ledger_account ON balance_ledger (account, asset, seq);

-- Margined positions (instruments with max_leverage > 0) are upserted from PositionChanged and
-- RiskSettingsChanged, and again when their account's balance changes (a cross position's
-- liquidation price depends on it). For those rows realised_pnl, fees and isolated_margin are
-- in units of `asset`; leverage is the position's. Rows of unmargined instruments keep the
-- PositionBook's meaning (realised_pnl and fees in quote currency, leverage 1) and NULL in the
-- new columns. The row version becomes (last_exec_id, last_seq): a settings or balance change
-- moves only last_seq, and exec ids grow with seqs, so the order is the seq order; rows written
-- before this migration have last_seq 0.
ALTER TABLE positions
    ADD COLUMN last_seq bigint NOT NULL DEFAULT 0,
    ADD COLUMN asset text,                   -- settlement asset; NULL: unmargined
    ADD COLUMN margin_mode text CHECK (margin_mode IN ('CROSS', 'ISOLATED')),
    ADD COLUMN isolated_margin numeric,
    -- RiskReadModel's liquidation price as of this row version (NULL: flat or cannot be
    -- liquidated); with several cross positions in one account it also moves with the others'
    -- marks, which rewrite no row.
    ADD COLUMN liquidation_price numeric;

-- Mark price history, sampled: at most one row per symbol and bucket of MarkHistoryEverySeconds
-- (bucket = the event's ts floored to the period), the bucket's earliest MarkPriceUpdated (the
-- upsert keeps the lowest seq), so replays and restarts give the same rows.
CREATE TABLE mark_prices (
    symbol       text NOT NULL,
    bucket       timestamptz NOT NULL,
    ts           timestamptz NOT NULL,
    index_price  numeric NOT NULL,   -- 0 until an index price was set
    mark_price   numeric NOT NULL,
    seq          bigint NOT NULL,
    PRIMARY KEY (symbol, bucket)
);
