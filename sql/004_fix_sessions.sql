-- FIX session state: configured sessions (fixserver.pg.seed) and their sequence numbers,
-- kept current by the server. The message stores stay the source of truth for resends.

CREATE TABLE fix_sessions (
    session_id       text PRIMARY KEY,           -- FIX.4.4:EXCH->CLIENT1[:qualifier]
    begin_string     text NOT NULL,
    sender_comp_id   text NOT NULL,
    target_comp_id   text NOT NULL,
    role             text NOT NULL,
    firm_id          text,
    next_sender_seq  bigint NOT NULL DEFAULT 1,
    next_target_seq  bigint NOT NULL DEFAULT 1,
    creation_time    timestamptz NOT NULL DEFAULT now(),
    state            text NOT NULL DEFAULT 'DISCONNECTED',
    last_logon       timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
