-- A broker that starts again with an empty log (memory storage: pinpipe up restarts a dead
-- embedded broker on the same port) numbers its records from offset 0 again, and the stream job
-- reads the new log with the same query. A dead letter of the new log then had the same
-- (topic, partition, offset) as one of the old log, and ON CONFLICT DO NOTHING dropped it. The
-- broker's timestamp tells the two records apart (the new log's are later); a record read twice
-- (a replay, a new checkpoint) has the same one and is still kept once.
ALTER TABLE pinpipe.dead_letter DROP CONSTRAINT dead_letter_pkey;
CREATE UNIQUE INDEX dead_letter_record ON pinpipe.dead_letter
    (topic, kafka_partition, kafka_offset, coalesce(broker_timestamp, '1970-01-01 00:00:00+00'::timestamptz));
