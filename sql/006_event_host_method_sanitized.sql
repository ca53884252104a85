-- Events: where a call went (host, HTTP method), and which text was escaped to be storable.
-- `sanitized` maps a field path (`model`, `tool_calls[0].name`, ...) to the original UTF-8 byte
-- length of the value (`bytes`) or of the JSON key (`key_bytes`) whose NUL or lone surrogates
-- were escaped (addon/sanitize.py); NULL when nothing was. Nullable and without defaults, so
-- adding them rewrites no partition and old rows hash as before (addon/lineage.py).

ALTER TABLE events
    ADD COLUMN IF NOT EXISTS host      text,
    ADD COLUMN IF NOT EXISTS method    text,
    ADD COLUMN IF NOT EXISTS sanitized jsonb;
