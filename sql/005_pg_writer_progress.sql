-- The Postgres writer's durable high-water mark: every released tick whose journal seqs are
-- all below next_seq has its rows committed. Written in the same transaction as each batch
-- (fixserver.pg.batch), so it is exactly as durable as the rows; read at start-up to decide
-- which journaled ticks must be turned into rows again (fixserver.pg.catchup).

CREATE TABLE pg_writer_progress (
    id          smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),  -- one row
    next_seq    bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
