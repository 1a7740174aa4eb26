-- The speed layer's tables: clean rows keyed by natural key, dead letters, processed batches.
-- Clean columns are DATA_SPEC.md section 3; the arrival columns (broker_timestamp,
-- kafka_partition, kafka_offset) decide which record of a key is the latest (last arrival wins).
CREATE SCHEMA IF NOT EXISTS pinpipe;

CREATE TABLE pinpipe.pin (
    ind               integer NOT NULL,
    unique_id         text PRIMARY KEY,
    title             text,
    description       text,
    follower_count    bigint,
    poster_name       text,
    tag_list          text,
    is_image_or_video text,
    image_src         text,
    save_location     text,
    category          text,
    downloaded        integer,
    broker_timestamp  timestamptz,
    kafka_partition   integer NOT NULL,
    kafka_offset      bigint NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE pinpipe.geo (
    ind              integer PRIMARY KEY,
    country          text,
    coordinates      double precision[],
    "timestamp"      timestamptz,
    broker_timestamp timestamptz,
    kafka_partition  integer NOT NULL,
    kafka_offset     bigint NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE pinpipe."user" (
    ind              integer PRIMARY KEY,
    user_name        text,
    age              integer,
    date_joined      timestamptz,
    broker_timestamp timestamptz,
    kafka_partition  integer NOT NULL,
    kafka_offset     bigint NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Records the stream job could not turn into a clean row, with the reason.
CREATE TABLE pinpipe.dead_letter (
    topic            text NOT NULL,
    kafka_partition  integer NOT NULL,
    kafka_offset     bigint NOT NULL,
    broker_timestamp timestamptz,
    value            text,
    reason           text NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);

-- One row per micro-batch written: a replayed batch finds its row and writes nothing.
CREATE TABLE pinpipe.stream_batch (
    query_id     text NOT NULL,
    batch_id     bigint NOT NULL,
    records      integer NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (query_id, batch_id)
);
