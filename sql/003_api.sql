-- API read paths (DESIGN.md §7). Newest-first lists page by ("timestamp", id) with a keyset
-- cursor; without this index an unfiltered page sorts every row of every partition.
CREATE INDEX IF NOT EXISTS events_ts_id_idx ON events ("timestamp", id);
