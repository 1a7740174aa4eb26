-- Who started each batch run: 'cli' (pinpipe batch, python -m pinpipe.batch, spark-submit,
-- the demo), 'up' (pinpipe up --batch-every) or 'airflow' (the DAG). external_id is the
-- orchestrator's id of the run (Airflow's run_id): a retried or cleared DAG run restarts its
-- row instead of adding one. Rows written before this migration count as 'cli'.
ALTER TABLE pinpipe.batch_run ADD COLUMN IF NOT EXISTS origin text NOT NULL DEFAULT 'cli';
ALTER TABLE pinpipe.batch_run ADD COLUMN IF NOT EXISTS external_id text;
CREATE UNIQUE INDEX IF NOT EXISTS batch_run_origin_external_id
    ON pinpipe.batch_run (origin, external_id);

-- A run interrupted on purpose (Ctrl-C, `pinpipe down` while up's batch runs) is 'cancelled',
-- not 'failed': stopping pinpipe must not look like a batch failure (and fire its alert).
ALTER TABLE pinpipe.batch_run DROP CONSTRAINT IF EXISTS batch_run_status_check;
ALTER TABLE pinpipe.batch_run ADD CONSTRAINT batch_run_status_check
    CHECK (status IN ('running', 'success', 'failed', 'cancelled'));
