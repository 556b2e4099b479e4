-- Status requests (FIX H) for ended orders the server no longer keeps in memory are answered
-- from `orders` (fixserver.pg.order_reader): the FIX session that entered each order (written
-- with its NewOrder's row; NULL for rows written before this migration) and the indexes the
-- lookups by a session's ClOrdID use (the order's current ClOrdID, or the one before its last
-- replace). By OrderID the primary key serves.

ALTER TABLE orders ADD COLUMN session_id text;
CREATE INDEX idx_orders_session_cl_ord_id ON orders (session_id, cl_ord_id);
CREATE INDEX idx_orders_session_orig_cl_ord_id ON orders (session_id, orig_cl_ord_id)
    WHERE orig_cl_ord_id IS NOT NULL;
