-- A read-only role for dashboards: SELECT on every pinpipe table, now and later.
-- It cannot log in; grant it to a login role: CREATE ROLE dash LOGIN PASSWORD '...' IN ROLE pinpipe_readonly;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pinpipe_readonly') THEN
        CREATE ROLE pinpipe_readonly NOLOGIN;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA pinpipe TO pinpipe_readonly;
GRANT SELECT ON ALL TABLES IN SCHEMA pinpipe TO pinpipe_readonly;
ALTER DEFAULT PRIVILEGES IN SCHEMA pinpipe GRANT SELECT ON TABLES TO pinpipe_readonly;
