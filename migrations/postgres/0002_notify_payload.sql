-- The NOTIFY carries the event row itself (JSON), so a replica's listener needs no query per
-- event. Payloads are limited to 8000 bytes: a row too big for that (a long comment or error)
-- is announced by its id alone, and listeners read it from the table.
CREATE OR REPLACE FUNCTION approval_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text := row_to_json(NEW)::text;
BEGIN
    IF octet_length(payload) > 7900 THEN
        payload := NEW.id::text;
    END IF;
    PERFORM pg_notify('approval_events', payload);
    RETURN NEW;
END
$$;
