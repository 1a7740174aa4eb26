-- One row per batch run (pinpipe batch, pinpipe up --batch-every, Airflow): the dashboard's
-- /metrics reads it at scrape time (pinpipe_batch_runs_total, ..._last_success_timestamp_seconds).
CREATE TABLE IF NOT EXISTS pinpipe.batch_run (
    run_id      bigserial PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz,
    status      text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'success', 'failed')),
    error       text,
    dates       text,
    host        text,
    pid         integer
);
CREATE INDEX IF NOT EXISTS batch_run_status_finished ON pinpipe.batch_run (status, finished_at);
GRANT SELECT ON pinpipe.batch_run TO pinpipe_readonly;
