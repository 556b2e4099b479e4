-- FIX session state kept current by the running server (fixserver.pg.session_writer): the time
-- of the session's last logout (or lost connection), beside last_logon. NULL: never seen.

ALTER TABLE fix_sessions ADD COLUMN last_logout timestamptz;
